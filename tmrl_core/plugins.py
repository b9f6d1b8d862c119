"""Loading plugins and resolving (kind, name) to a component spec.

Plugins are found through the ``tmrl`` entry-point group. The core's own built-ins are registered through the same
hooks (:data:`DEFAULT_PLUGINS`). A plugin that fails to import, fails validation, or whose hook raises is recorded in
:attr:`PluginManager.failures` with its error; every other plugin keeps working. Two plugins registering the same
name are recorded too, and the name fails loudly (naming both plugins) only when someone asks for it.

Environment variables:
    ``TMRL_DISABLE_PLUGINS``: comma-separated plugin names (entry-point names, or distribution names) not to load.
    ``TMRL_DISABLE_THIRD_PARTY_PLUGINS``: ``1`` loads only the core and the first-party plugins.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata as metadata
import inspect
import os
import threading
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, overload

import pluggy

from tmrl_core import hookspecs
from tmrl_core.errors import DuplicateComponentError, PluginError, UnknownComponentError
from tmrl_core.specs import (
    SPEC_TYPES,
    AgentSpec,
    CommandSpec,
    ComponentSpec,
    CompressorSpec,
    EnvSpec,
    LoggerSpec,
    MemorySpec,
    TransportSpec,
)

ENTRY_POINT_GROUP = "tmrl"
DEFAULT_PLUGINS: tuple[str, ...] = ("tmrl_core.builtins",)
CORE_PLUGIN_NAME = "tmrl-core"
FIRST_PARTY_DISTRIBUTIONS = frozenset({"tmrl-core", "tmrl-sac", "tmrl-redq", "tmrl-tlspyo", "tmrl-trackmania"})
#: Which first-party distribution registers a component (kind, name): an unknown name among these says what to
#: install (the core alone has no algorithm). A test checks it against what the plugins register.
FIRST_PARTY_PROVIDERS: dict[tuple[str, str], str] = {
    ("agent", "sac"): "tmrl-sac",
    ("agent", "redqsac"): "tmrl-redq",
    ("transport", "tlspyo"): "tmrl-tlspyo",
    ("env", "trackmania-full"): "tmrl-trackmania",
    ("env", "trackmania-lidar"): "tmrl-trackmania",
    ("env", "trackmania-lidar-progress"): "tmrl-trackmania",
}
DISABLE_ENV = "TMRL_DISABLE_PLUGINS"
DISABLE_THIRD_PARTY_ENV = "TMRL_DISABLE_THIRD_PARTY_PLUGINS"
#: Comma-separated entry-point or distribution names: only these installed plugins load (the core always does); for
#: testing one plugin where others, possibly broken, are installed too.
ONLY_ENV = "TMRL_ONLY_PLUGINS"

#: Which hook registers which kind.
HOOK_NAMES: dict[str, str] = {
    "env": "tmrl_register_envs",
    "agent": "tmrl_register_agents",
    "memory": "tmrl_register_memories",
    "compressor": "tmrl_register_compressors",
    "transport": "tmrl_register_transports",
    "logger": "tmrl_register_loggers",
    "command": "tmrl_register_commands",
}

S = TypeVar("S", bound=ComponentSpec)


@dataclass
class PluginInfo:
    """A plugin as ``tmrl plugins`` shows it."""

    name: str
    distribution: str
    version: str
    module: str
    first_party: bool
    disabled: bool = False
    error: str | None = None


@dataclass
class PluginFailure:
    """A plugin that could not be loaded, or one of whose hooks raised."""

    plugin: str
    stage: str
    error: str
    traceback: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} failed ({self.stage}): {self.error}"


@dataclass
class RefusedComponent:
    """A third-party component not registered: a core or first-party plugin already owns its name."""

    spec: ComponentSpec
    owner: ComponentSpec
    reason: str


class Registry(Generic[S]):
    """The components of one kind, by name.

    :meth:`add` refuses a second registration of a name (raising :class:`DuplicateComponentError` that names both
    plugins) but remembers it, so that :meth:`get` keeps failing loudly for that name while every other name works.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}
        self._conflicts: dict[str, list[S]] = {}

    def add(self, spec: S) -> None:
        """Add ``spec``; a name that is already taken raises :class:`DuplicateComponentError` (and is remembered)."""
        existing = self._specs.get(spec.name)
        if existing is None:
            self._specs[spec.name] = spec
            return
        self._conflicts.setdefault(spec.name, [existing]).append(spec)
        raise self.duplicate_error(spec.name)

    def duplicate_error(self, name: str) -> DuplicateComponentError:
        """The error for ``name``, registered more than once (a name in :meth:`conflicts`), naming every plugin."""
        plugins = [spec.plugin for spec in self._conflicts[name]]
        named = " and by ".join(f"plugin {p!r}" for p in plugins)
        return DuplicateComponentError(
            f"{self.kind} {name!r} is registered more than once: by {named}",
            hint=f"uninstall one of them, or disable one with {DISABLE_ENV}={plugins[-1]}",
        )

    def get(self, name: str) -> S:
        """The spec registered as ``name``.

        Raises:
            DuplicateComponentError: two plugins registered ``name``.
            UnknownComponentError: nobody did; the message lists the known names and suggests the closest one.
        """
        if name in self._conflicts:
            raise self.duplicate_error(name)
        try:
            return self._specs[name]
        except KeyError:
            pass
        known = sorted(self._specs)
        provider = FIRST_PARTY_PROVIDERS.get((self.kind, name))
        if provider is not None:
            # tmrl-core alone has no algorithm: name what to install rather than list what is missing
            raise UnknownComponentError(
                f"{self.kind} {name!r} comes with the plugin {provider}, which is not installed (or is disabled: see "
                f"`tmrl plugins`)",
                hint=f"pip install {provider}",
            )
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "`tmrl plugins` lists what is installed"
        if not known and self.kind == "agent":
            hint = "no algorithm is installed: pip install tmrl-sac (SAC) or tmrl-redq (REDQ-SAC)"
        listing = ", ".join(known) if known else "none (is the plugin that provides it installed?)"
        raise UnknownComponentError(f"unknown {self.kind} {name!r}; known {self.kind}s: {listing}", hint=hint)

    def names(self) -> list[str]:
        """Every registered name, sorted (names registered twice included)."""
        return sorted(self._specs)

    def conflicts(self) -> dict[str, list[S]]:
        """Names registered more than once, with every spec that claimed them (first one first)."""
        return {name: list(specs) for name, specs in self._conflicts.items()}

    def all_specs(self) -> list[S]:
        """Every spec, including the refused second registrations of a duplicated name."""
        specs = list(self._specs.values())
        for extra in self._conflicts.values():
            specs.extend(extra[1:])
        return specs

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[S]:
        return iter([self._specs[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._specs)


def _env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginManager:
    """Discovers plugins, collects their registrations, and answers ``get(kind, name)``.

    Args:
        entry_points: load plugins from the ``tmrl`` entry-point group (False for an isolated manager in tests).
        plugins: extra plugin objects (modules, classes or instances with hook implementations), or ``(name, obj)``
            pairs; an object without a pair is named by its ``__name__`` (or its class name).
        builtins: register the core's built-ins (:data:`DEFAULT_PLUGINS`).
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        plugins: Iterable[Any] = (),
        builtins: bool = True,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        #: third-party components refused because a core or first-party plugin owns their name
        self.refused: list[RefusedComponent] = []
        self._registries: dict[str, Registry[ComponentSpec]] = {}
        self._lock = threading.RLock()
        self._disabled = {_canonical(name) for name in _env_list(DISABLE_ENV)}
        self._third_party_off = _env_flag(DISABLE_THIRD_PARTY_ENV)
        self._only = {_canonical(name) for name in _env_list(ONLY_ENV)} or None

        if builtins:
            for module_name in DEFAULT_PLUGINS:
                module = importlib.import_module(module_name)
                self._register(
                    module, PluginInfo(CORE_PLUGIN_NAME, "tmrl-core", _version("tmrl-core"), module_name, True)
                )
        if entry_points:
            self._load_entry_points()
        for item in plugins:
            if isinstance(item, tuple):
                name, obj = item
            else:
                name, obj = getattr(item, "__name__", type(item).__name__), item
            self.add_plugin(obj, name=name)

    # -- discovery -----------------------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        seen: set[tuple[str, str]] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "(unknown)"
            version = ep.dist.version if ep.dist is not None else ""
            # The same distribution can be visible twice on sys.path (e.g. an editable install plus a build dir).
            if (ep.name, ep.value) in seen:
                continue
            seen.add((ep.name, ep.value))
            first_party = _canonical(dist) in FIRST_PARTY_DISTRIBUTIONS
            info = PluginInfo(ep.name, dist, version, ep.value, first_party)
            if ep.name in self.infos:
                # Two distributions using one plugin name: keep the first, report the second.
                self.failures.append(
                    PluginFailure(
                        ep.name,
                        "load",
                        f"plugin name {ep.name!r} is used by {self.infos[ep.name].distribution!r} and by {dist!r}; "
                        f"only the first is loaded",
                    )
                )
                continue
            if (
                _canonical(ep.name) in self._disabled
                or _canonical(dist) in self._disabled
                or (self._third_party_off and not first_party)
                or (self._only is not None and not {_canonical(ep.name), _canonical(dist)} & self._only)
            ):
                info.disabled = True
                self.infos[ep.name] = info
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
                info.error = f"{type(exc).__name__}: {exc}"
                self.infos[ep.name] = info
                self.failures.append(PluginFailure(ep.name, "import", info.error, traceback.format_exc()))
                continue
            self._register(obj, info)

    def add_plugin(self, obj: object, *, name: str | None = None) -> PluginInfo:
        """Register an in-process plugin (an object with hook implementations) and forget collected registries.

        Returns its :class:`PluginInfo`; a plugin that fails validation is recorded in :attr:`failures`.
        """
        name = str(name or getattr(obj, "__name__", type(obj).__name__))
        if name in self.infos:
            raise PluginError(f"a plugin named {name!r} is already registered", hint="give the plugin another name")
        info = PluginInfo(name, "(in-process)", "", str(getattr(obj, "__module__", None) or name), False)
        with self._lock:
            self._register(obj, info)
            self._registries.clear()
        return info

    def _register(self, obj: object, info: PluginInfo) -> None:
        name = info.name
        self.infos[name] = info
        try:
            self._pm.register(obj, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors, bad hook signatures
            info.error = self._argument_error(obj) or f"{type(exc).__name__}: {exc}"
            self.failures.append(PluginFailure(name, "validate", info.error, traceback.format_exc()))
            return
        # An implementation of a hook that does not exist is almost always a typo: refuse the plugin.
        for hook_name in dir(self._pm.hook):
            if not hook_name.startswith("tmrl_"):
                continue
            hook = getattr(self._pm.hook, hook_name)
            if not hook.has_spec() and any(impl.plugin_name == name for impl in hook.get_hookimpls()):
                self._pm.unregister(name=name)
                close = difflib.get_close_matches(hook_name, list(HOOK_NAMES.values()), n=1)
                info.error = f"implements unknown hook {hook_name!r}" + (
                    f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(HOOK_NAMES.values())})"
                )
                self.failures.append(PluginFailure(name, "validate", info.error))
                return

    def _argument_error(self, obj: Any) -> str | None:
        """The friendly form of pluggy's refusal of a hook implementation whose arguments the hook does not pass."""
        for attr in dir(obj):
            caller = getattr(self._pm.hook, attr, None) if attr.startswith("tmrl_") else None
            function = getattr(obj, attr, None)
            if caller is None or not caller.has_spec() or not callable(function):
                continue
            try:
                params = list(inspect.signature(function).parameters)
            except (TypeError, ValueError):
                continue
            expected = list(caller.spec.argnames)
            unknown = [name for name in params if name not in expected and name != "self"]
            if unknown:
                close = difflib.get_close_matches(unknown[0], expected, n=1)
                return (
                    f"hook {attr!r} takes argument {unknown[0]!r}, which the hook does not pass"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                    + f"; it passes: {', '.join(expected)}"
                )
        return None

    # -- registries ----------------------------------------------------------------------------------------------
    @overload
    def registry(self, kind: Literal["env"]) -> Registry[EnvSpec]: ...
    @overload
    def registry(self, kind: Literal["agent"]) -> Registry[AgentSpec]: ...
    @overload
    def registry(self, kind: Literal["memory"]) -> Registry[MemorySpec]: ...
    @overload
    def registry(self, kind: Literal["compressor"]) -> Registry[CompressorSpec]: ...
    @overload
    def registry(self, kind: Literal["transport"]) -> Registry[TransportSpec]: ...
    @overload
    def registry(self, kind: Literal["logger"]) -> Registry[LoggerSpec]: ...
    @overload
    def registry(self, kind: Literal["command"]) -> Registry[CommandSpec]: ...
    @overload
    def registry(self, kind: str) -> Registry[ComponentSpec]: ...
    def registry(self, kind: str) -> Registry[Any]:
        """All components of ``kind`` (``env``, ``agent``, ``memory``, ``compressor``, ``transport``, ``logger``,
        ``command``)."""
        if kind not in HOOK_NAMES:
            close = difflib.get_close_matches(kind, list(HOOK_NAMES), n=1)
            raise UnknownComponentError(
                f"unknown component kind {kind!r}; known kinds: {', '.join(HOOK_NAMES)}",
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
        with self._lock:
            if kind not in self._registries:
                self._registries[kind] = self._collect(kind)
            return self._registries[kind]

    def _collect(self, kind: str) -> Registry[ComponentSpec]:
        registry: Registry[ComponentSpec] = Registry(kind)
        spec_type = SPEC_TYPES[kind]
        hook_name = HOOK_NAMES[kind]
        hook = getattr(self._pm.hook, hook_name)
        # get_hookimpls() is in registration order: the core first, then entry points by name, then in-process ones.
        # The core and the first-party plugins go first whatever their names, so that they own their names: a third
        # party registering one of them is refused (below), never the other way round.
        impls = sorted(hook.get_hookimpls(), key=lambda impl: not self._trusted(impl.plugin_name))
        for impl in impls:
            plugin = impl.plugin_name
            pending: list[ComponentSpec] = []

            def register(spec: ComponentSpec, _pending: list[ComponentSpec] = pending, _plugin: str = plugin) -> None:
                if not isinstance(spec, spec_type):
                    raise TypeError(f"{hook_name} expects {spec_type.__name__} objects, got {type(spec).__name__}")
                if not isinstance(spec.name, str) or not spec.name.strip():
                    raise ValueError(f"{spec_type.__name__} needs a non-empty name, got {spec.name!r}")
                _pending.append(dataclasses.replace(spec, plugin=_plugin))

            # Implementations may accept a subset of the hook's arguments (as pluggy allows).
            available = {"register": register}
            try:
                impl.function(*[available[arg] for arg in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - one failing hook must not hide the others
                # A hook that raised half-way registers nothing: partial registrations would be confusing.
                error = f"{type(exc).__name__}: {exc}"
                self.failures.append(PluginFailure(plugin, hook_name, error, traceback.format_exc()))
                info = self.infos.get(plugin)
                if info is not None and info.error is None:
                    info.error = f"{hook_name} raised {error}"
                continue
            for spec in pending:
                owner = self._owner(registry, spec.name)
                if owner is not None and self._trusted(owner.plugin) and not self._trusted(plugin):
                    self._refuse(spec, owner)
                    continue
                try:
                    registry.add(spec)
                except DuplicateComponentError:
                    pass  # remembered by the registry; fails when the name is requested
        return registry

    def _trusted(self, plugin: str) -> bool:
        """The core and first-party plugins: their names cannot be taken over by a third party."""
        info = self.infos.get(plugin)
        return info is not None and info.first_party

    @staticmethod
    def _owner(registry: Registry[ComponentSpec], name: str) -> ComponentSpec | None:
        if name not in registry or name in registry.conflicts():
            return None
        return registry.get(name)

    def _refuse(self, spec: ComponentSpec, owner: ComponentSpec) -> None:
        owner_info = self.infos.get(owner.plugin)
        owner_dist = f" ({owner_info.distribution})" if owner_info is not None else ""
        reason = (
            f"{spec.kind} {spec.name!r} of plugin {spec.plugin!r} refused: the name belongs to plugin "
            f"{owner.plugin!r}{owner_dist}, which keeps it; rename the component in plugin {spec.plugin!r}"
        )
        if any(r.reason == reason for r in self.refused):
            return  # collected again (a registry is rebuilt when a plugin is added)
        self.refused.append(RefusedComponent(spec, owner, reason))
        self.failures.append(PluginFailure(spec.plugin, "register", reason))

    @overload
    def get(self, kind: Literal["env"], name: str) -> EnvSpec: ...
    @overload
    def get(self, kind: Literal["agent"], name: str) -> AgentSpec: ...
    @overload
    def get(self, kind: Literal["memory"], name: str) -> MemorySpec: ...
    @overload
    def get(self, kind: Literal["compressor"], name: str) -> CompressorSpec: ...
    @overload
    def get(self, kind: Literal["transport"], name: str) -> TransportSpec: ...
    @overload
    def get(self, kind: Literal["logger"], name: str) -> LoggerSpec: ...
    @overload
    def get(self, kind: Literal["command"], name: str) -> CommandSpec: ...
    @overload
    def get(self, kind: str, name: str) -> ComponentSpec: ...
    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec of ``kind`` named ``name``.

        Raises:
            DuplicateComponentError: two plugins registered this name.
            UnknownComponentError: nobody registered it (the message lists the known names and the closest one).
        """
        return self.registry(kind).get(name)

    def collect_all(self) -> None:
        """Run every registration hook now (so that :attr:`failures` is complete)."""
        for kind in HOOK_NAMES:
            self.registry(kind)

    def duplicates(self) -> list[DuplicateComponentError]:
        """One error per name registered more than once (all kinds are collected)."""
        errors: list[DuplicateComponentError] = []
        for kind in HOOK_NAMES:
            registry = self.registry(kind)
            errors.extend(registry.duplicate_error(name) for name in sorted(registry.conflicts()))
        return errors

    def components_of(self, plugin: str) -> list[ComponentSpec]:
        """Every component registered by ``plugin``, all kinds (refused duplicates and refused names included)."""
        specs = [spec for kind in HOOK_NAMES for spec in self.registry(kind).all_specs() if spec.plugin == plugin]
        return specs + [r.spec for r in self.refused if r.spec.plugin == plugin]

    def settings_sections(self) -> dict[str, list[ComponentSpec]]:
        """Settings section name -> the components (of any kind) that bring a settings model for it."""
        sections: dict[str, list[ComponentSpec]] = {}
        for kind in HOOK_NAMES:
            for spec in self.registry(kind).all_specs():
                if spec.settings is not None:
                    sections.setdefault(spec.section, []).append(spec)
        return sections


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0+unknown"


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (built on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (tests and fixtures); returns the previous one."""
    global _manager
    with _manager_lock:
        previous, _manager = _manager, manager
        return previous


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests, or after installing a plugin in-process)."""
    set_plugin_manager(None)


@overload
def get_component(kind: Literal["env"], name: str) -> EnvSpec: ...
@overload
def get_component(kind: Literal["agent"], name: str) -> AgentSpec: ...
@overload
def get_component(kind: Literal["memory"], name: str) -> MemorySpec: ...
@overload
def get_component(kind: Literal["compressor"], name: str) -> CompressorSpec: ...
@overload
def get_component(kind: Literal["transport"], name: str) -> TransportSpec: ...
@overload
def get_component(kind: Literal["logger"], name: str) -> LoggerSpec: ...
@overload
def get_component(kind: Literal["command"], name: str) -> CommandSpec: ...
@overload
def get_component(kind: str, name: str) -> ComponentSpec: ...
def get_component(kind: str, name: str) -> ComponentSpec:
    """Shortcut for ``get_plugin_manager().get(kind, name)``; a literal ``kind`` gives that kind's spec type."""
    return get_plugin_manager().get(kind, name)
