"""Loading plugins and resolving (kind, name) to a component spec.

Plugins are found through the ``tmrl`` entry-point group. The core's own built-ins are registered through the same
hooks (:data:`DEFAULT_PLUGINS`). A plugin that fails to import, fails validation, or whose hook raises is recorded in
:attr:`PluginManager.failures` with its error; every other plugin keeps working.

Environment variables:
    ``TMRL_DISABLE_PLUGINS``: comma-separated plugin names (entry-point names) not to load.
    ``TMRL_DISABLE_THIRD_PARTY_PLUGINS``: ``1`` loads only the core and the first-party plugins.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

import pluggy

from tmrl_core import hookspecs
from tmrl_core.errors import DuplicateComponentError, UnknownComponentError
from tmrl_core.specs import SPEC_TYPES, ComponentSpec

ENTRY_POINT_GROUP = "tmrl"
DEFAULT_PLUGINS: tuple[str, ...] = ("tmrl_core.builtins",)
CORE_PLUGIN_NAME = "tmrl-core"
FIRST_PARTY_DISTRIBUTIONS = frozenset({"tmrl-core", "tmrl-sac", "tmrl-redq", "tmrl-tlspyo", "tmrl-trackmania"})
DISABLE_ENV = "TMRL_DISABLE_PLUGINS"
DISABLE_THIRD_PARTY_ENV = "TMRL_DISABLE_THIRD_PARTY_PLUGINS"

#: Which hook registers which kind.
HOOK_NAMES: dict[str, str] = {
    "env": "tmrl_register_envs",
    "agent": "tmrl_register_agents",
    "memory": "tmrl_register_memories",
    "compressor": "tmrl_register_compressors",
    "transport": "tmrl_register_transports",
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


class Registry(Generic[S]):
    """The components of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}

    def add(self, spec: S) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{self.kind} {spec.name!r} is registered twice: by plugin {existing.plugin!r} and by plugin "
                f"{spec.plugin!r}",
                hint=f"uninstall one of them, or disable one with {DISABLE_ENV}={spec.plugin}",
            )
        self._specs[spec.name] = spec

    def get(self, name: str) -> S:
        try:
            return self._specs[name]
        except KeyError:
            pass
        known = sorted(self._specs)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        listing = ", ".join(known) if known else "none (is the plugin that provides it installed?)"
        raise UnknownComponentError(f"unknown {self.kind} {name!r}; known {self.kind}s: {listing}", hint=hint)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[S]:
        return iter(self._specs[name] for name in self.names())

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
        plugins: extra plugin objects (modules or instances with hook implementations), registered by their
            ``__name__`` or class name.
    """

    def __init__(self, *, entry_points: bool = True, plugins: tuple[Any, ...] = ()) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self._registries: dict[str, Registry[Any]] = {}
        self._duplicates: dict[str, list[DuplicateComponentError]] = {}
        self._lock = threading.Lock()
        self._disabled = _env_list(DISABLE_ENV)
        self._third_party_off = _env_flag(DISABLE_THIRD_PARTY_ENV)

        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            self._register(module, CORE_PLUGIN_NAME, "tmrl-core", _version("tmrl-core"), module_name, True)
        if entry_points:
            self._load_entry_points()
        for obj in plugins:
            name = getattr(obj, "__name__", type(obj).__name__)
            self._register(obj, name, "(in-process)", "", name, False)

    # -- discovery -----------------------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "(unknown)"
            version = ep.dist.version if ep.dist is not None else ""
            first_party = _canonical(dist) in FIRST_PARTY_DISTRIBUTIONS
            info = PluginInfo(ep.name, dist, version, ep.value, first_party)
            if ep.name in self.infos:
                # Two distributions using one plugin name: keep the first, report the second.
                self.failures.append(
                    PluginFailure(ep.name, "load", f"plugin name {ep.name!r} is used by {self.infos[ep.name].distribution!r} and {dist!r}")
                )
                continue
            if ep.name in self._disabled or (self._third_party_off and not first_party):
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
            self._register(obj, ep.name, dist, version, ep.value, first_party, info=info)

    def _register(
        self,
        obj: Any,
        name: str,
        dist: str,
        version: str,
        module: str,
        first_party: bool,
        info: PluginInfo | None = None,
    ) -> None:
        info = info or PluginInfo(name, dist, version, module, first_party)
        self.infos[name] = info
        try:
            self._pm.register(obj, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors, bad hook signatures
            info.error = f"{type(exc).__name__}: {exc}"
            self.failures.append(PluginFailure(name, "validate", info.error, traceback.format_exc()))
            return
        # An implementation of a hook that does not exist is almost always a typo: refuse the plugin.
        for hook_name in dir(self._pm.hook):
            if not hook_name.startswith("tmrl_"):
                continue
            hook = getattr(self._pm.hook, hook_name)
            if not hook.has_spec() and any(impl.plugin_name == name for impl in hook.get_hookimpls()):
                self._pm.unregister(name=name)
                info.error = f"implements unknown hook {hook_name!r} (known: {', '.join(sorted(HOOK_NAMES.values()))})"
                self.failures.append(PluginFailure(name, "validate", info.error))
                return

    # -- registries ----------------------------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry[Any]:
        """All components of ``kind`` (``env``, ``agent``, ``memory``, ``compressor``, ``transport``, ``command``)."""
        if kind not in HOOK_NAMES:
            raise UnknownComponentError(f"unknown component kind {kind!r}; known kinds: {', '.join(HOOK_NAMES)}")
        with self._lock:
            if kind not in self._registries:
                self._registries[kind] = self._collect(kind)
            return self._registries[kind]

    def _collect(self, kind: str) -> Registry[Any]:
        registry: Registry[Any] = Registry(kind)
        spec_type = SPEC_TYPES[kind]
        duplicates: list[DuplicateComponentError] = []
        hook = getattr(self._pm.hook, HOOK_NAMES[kind])
        # pluggy calls implementations last-registered first; we want the core first, then plugins by name.
        for impl in reversed(hook.get_hookimpls()):
            plugin = impl.plugin_name

            def register(spec: Any, _plugin: str = plugin) -> None:
                if not isinstance(spec, spec_type):
                    raise TypeError(f"{HOOK_NAMES[kind]} expects {spec_type.__name__} objects, got {type(spec).__name__}")
                object.__setattr__(spec, "plugin", _plugin)
                try:
                    registry.add(spec)
                except DuplicateComponentError as exc:
                    duplicates.append(exc)

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001 - one failing hook must not hide the others
                self.failures.append(
                    PluginFailure(plugin, HOOK_NAMES[kind], f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
                if plugin in self.infos and self.infos[plugin].error is None:
                    self.infos[plugin].error = f"{HOOK_NAMES[kind]}: {type(exc).__name__}: {exc}"
        self._duplicates[kind] = duplicates
        return registry

    def get(self, kind: str, name: str) -> Any:
        """The spec of ``kind`` named ``name``.

        Raises:
            DuplicateComponentError: two plugins registered this name.
            UnknownComponentError: nobody registered it (the message lists the known names and the closest one).
        """
        registry = self.registry(kind)
        for exc in self._duplicates.get(kind, []):
            if f"{kind} {name!r} " in exc.message:
                raise exc
        return registry.get(name)

    def duplicates(self) -> list[DuplicateComponentError]:
        """Every duplicate registration seen so far (all kinds are collected)."""
        for kind in HOOK_NAMES:
            self.registry(kind)
        return [exc for excs in self._duplicates.values() for exc in excs]

    def components_of(self, plugin: str) -> list[ComponentSpec]:
        """Every component registered by ``plugin``, all kinds."""
        return [spec for kind in HOOK_NAMES for spec in self.registry(kind) if spec.plugin == plugin]


def _canonical(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


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


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests, or after installing a plugin in-process)."""
    global _manager
    with _manager_lock:
        _manager = None


def get_component(kind: str, name: str) -> Any:
    """Shortcut for ``get_plugin_manager().get(kind, name)``."""
    return get_plugin_manager().get(kind, name)
