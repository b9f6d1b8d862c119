"""The layered sources and :func:`load_settings`: defaults < config file < ``TMRL_*`` variables < command line.

Each source is read into a :class:`Layer` (a nested dict plus where each leaf came from); the layers are merged in
order and validated once, so that an error can name the source of the bad value.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tmrl_core import paths
from tmrl_core.errors import ConfigError, TmrlError
from tmrl_core.plugins import PluginManager, get_plugin_manager
from tmrl_core.settings.files import read_config_file
from tmrl_core.settings.models import CORE_SECTIONS, Settings
from tmrl_core.settings.provenance import CLI_SOURCE, ENV_DELIMITER, ENV_PREFIX, SET_SOURCE, describe_source, source_of
from tmrl_core.settings.tree import KeyPath, assign, leaves
from tmrl_core.settings.validation import validate_model

#: Environment variables that start with ``TMRL_`` but are not settings. Code that adds one registers it here.
RESERVED_ENV_VARS: set[str] = {
    paths.HOME_ENV,
    "TMRL_DEBUG",
    "TMRL_DISABLE_PLUGINS",
    "TMRL_DISABLE_THIRD_PARTY_PLUGINS",
    "TMRL_ONLY_PLUGINS",
    # switches of the test harness (.ci/run, nox), set around processes that also load settings
    "TMRL_REQUIRE_DISPLAY",
    "TMRL_TEST_WHEELS",
}


class Layer:
    """One source of settings as a nested dict, with where each leaf came from.

    A plain class, not a pydantic-settings source: :func:`load_settings` merges the layers itself so that it knows,
    for each leaf, which layer won (pydantic-settings merges its sources without telling).

    ``strings`` keeps the original text of values that were typed as text (environment variables, ``--set``) and
    parsed as JSON: when the JSON reading does not fit the field (``--set run.name=123``), the text is used instead.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.origins: dict[KeyPath, str] = {}
        self.strings: dict[KeyPath, str] = {}

    def put(self, path: KeyPath, value: Any, source: str, *, text: str | None = None) -> None:
        """Set ``path`` to ``value``; every leaf below it is recorded as coming from ``source``."""
        assign(self.data, self.origins, self.strings, path, value, source)
        if text is not None and not isinstance(value, dict):
            self.strings[path] = text


def parse_text(text: str) -> Any:
    """A value typed as text: JSON when it parses (numbers, true/false, null, lists, objects), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def file_layer(path: Path) -> Layer:
    layer = Layer()
    data = read_config_file(path)
    for key, value in (data or {}).items():
        if key == "version":
            continue
        layer.put((key,), value, str(path))
    return layer


_ENV_PART = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


def env_layer(environ: Mapping[str, str]) -> Layer:
    layer = Layer()
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV_VARS:
            continue
        text = environ[name]
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_DELIMITER))
        if not all(_ENV_PART.fullmatch(part) for part in path):
            raise ConfigError(
                f"environment variable {name}: cannot tell which setting it names",
                hint="use TMRL_SECTION__KEY=value with two underscores between the parts, "
                "e.g. TMRL_TRAINING__BATCH_SIZE=64",
            )
        if path == ("version",):
            raise ConfigError(
                f"environment variable {name}: the config format version cannot be set",
                hint=f"unset {name}",
            )
        if len(path) == 1:
            value = parse_text(text)
            if not isinstance(value, dict):
                raise ConfigError(
                    f"environment variable {name}={text!r}: a whole section must be a JSON object",
                    hint=f"set one key with {name}__KEY=value, or write {name}='{{\"key\": value}}'",
                )
            layer.put(path, value, name)
        else:
            layer.put(path, parse_text(text), name, text=text)
    return layer


def _split_dotted(key: str, *, what: str) -> KeyPath:
    path = tuple(part.strip() for part in key.split("."))
    if len(path) < 2 or not all(path):
        raise ConfigError(
            f"{what}: {key!r} is not a setting name of the form section.key",
            hint="e.g. --set training.batch_size=64 (`tmrl config show` lists every key)",
        )
    if path[0] == "version":
        raise ConfigError(f"{what}: the config format version cannot be set")
    return path


def cli_layer(overrides: Mapping[str, Any] | None, sets: Iterable[str]) -> Layer:
    layer = Layer()
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--set {item!r}: expected section.key=value",
                hint="e.g. --set training.batch_size=64 (values are read as JSON when they parse, else as text)",
            )
        path = _split_dotted(key, what=f"--set {item!r}")
        value = parse_text(text)
        layer.put(path, value, SET_SOURCE, text=text)
    # Explicit options are more specific than the generic --set, so they are applied last.
    for path, value in leaves(dict(overrides or {})):
        if value is None or value == {}:
            continue  # an option (or a whole group of options) that was not given
        full: KeyPath = tuple(part for key in path for part in key.split("."))
        layer.put(full, value, CLI_SOURCE)
    return layer


def _check_sections(data: dict[str, Any], origins: Mapping[KeyPath, str], plugin_sections: Iterable[str]) -> None:
    plugin_sections = set(plugin_sections)
    known = [*CORE_SECTIONS, *sorted(plugin_sections - set(CORE_SECTIONS))]
    for key, value in data.items():
        source = describe_source(source_of(origins, (key,)))
        if key in CORE_SECTIONS or key in plugin_sections:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"bad value for {key}: {value!r} (from {source}); expected an object of keys and values",
                    hint=f"set one key at a time, e.g. --set {key}.KEY=VALUE",
                )
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else (
                "a plugin's section is accepted when the plugin that owns it is installed and enabled (`tmrl plugins`)"
            )
        )
        raise ConfigError(
            f"unknown settings section {key} (from {source}); known sections: {', '.join(known)}",
            hint=hint,
        )


def _refuse_scalar_parent(data: dict[str, Any], origins: Mapping[KeyPath, str], path: KeyPath) -> None:
    """A section (or nested object) that an earlier source set to a plain value is an error, even when a later
    source sets one of its keys: merging would otherwise replace the bad value silently (``{"training": 5}`` in the
    config file, then ``--env-steps``)."""
    node: Any = data
    for depth, key in enumerate(path[:-1], start=1):
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
        if not isinstance(node, dict):
            where = path[:depth]
            dotted = ".".join(where)
            raise ConfigError(
                f"bad value for {dotted}: {node!r} (from {describe_source(source_of(origins, where))}); "
                "expected an object of keys and values",
                hint=f"set one key at a time, e.g. --set {dotted}.KEY=VALUE",
            )


def _known_plugin_sections(manager: PluginManager | None) -> set[str]:
    if manager is None:
        manager = get_plugin_manager()
    return set(manager.settings_sections())


def settings_or_load(settings: Settings | None = None) -> Settings:
    """``settings``, or the effective settings (config file, ``TMRL_*`` variables) when it is None."""
    return settings if settings is not None else load_settings()


def load_settings(
    *,
    overrides: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    manager: PluginManager | None = None,
    read_file: bool = True,
    defaults: Mapping[str, Any] | None = None,
    defaults_source: str = "component defaults",
) -> Settings:
    """The effective settings: defaults < config file < ``TMRL_*`` environment variables < command line.

    Args:
        overrides: values from typed command-line options, as a nested dict (``{"training": {"epochs": 5}}``);
            ``None`` values mean "option not given" and are skipped. They win over ``sets``.
        sets: ``"section.key=value"`` items of ``--set``; the value is read as JSON when it parses, else as text.
        config_path: the config file (default: ``<data folder>/config/config.json``; a missing file is fine).
        environ: the environment (default: ``os.environ``); ``TMRL_HOME``, ``TMRL_DEBUG`` and the plugin switches
            are not settings.
        manager: the plugin manager whose components' sections are accepted (default: the process-wide one).
        read_file: False ignores the config file.
        defaults: values that replace the built-in defaults but lose to every other source, as a nested dict (e.g.
            an environment's ``EnvSpec.default_settings``); shown as coming from ``defaults_source``.

    Raises:
        ConfigError: a bad value, an unknown key or section, or an unreadable, old or newer config file. The message
            names the key, the value, what was expected and where the value came from.
    """
    path = Path(config_path) if config_path is not None else paths.config_file()
    base = Layer()
    for leaf, value in leaves(dict(defaults or {})):
        base.put(leaf, value, defaults_source)
    layers = [
        base,
        file_layer(path) if read_file else Layer(),
        env_layer(os.environ if environ is None else environ),
        cli_layer(overrides, sets),
    ]
    data: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    strings: dict[KeyPath, str] = {}
    for layer in layers:
        for leaf, value in leaves(layer.data):
            _refuse_scalar_parent(data, origins, leaf)
            assign(data, origins, strings, leaf, value, layer.origins[leaf])
        strings.update(layer.strings)

    extra = {key: value for key, value in data.items() if key not in CORE_SECTIONS}
    _check_sections(data, origins, _known_plugin_sections(manager) if extra else ())
    settings = validate_model(Settings, data, origins, strings)
    settings._origins = origins
    settings._strings = strings
    return settings


def plugin_settings_models(
    manager: PluginManager | None = None, *, sections: Iterable[str] | None = None
) -> tuple[dict[str, type[BaseModel]], list[str]]:
    """The settings model of every plugin section (or of ``sections``) whose model imports, and a message for each
    one that does not.

    This imports the plugins' settings modules (which may import heavy code, even torch); listing plugins does not.
    """
    if manager is None:
        manager = get_plugin_manager()
    wanted = None if sections is None else set(sections)
    models: dict[str, type[BaseModel]] = {}
    problems: list[str] = []
    for section, specs in sorted(manager.settings_sections().items()):
        if wanted is not None and section not in wanted:
            continue
        for spec in specs:
            try:
                model = spec.load_settings_model()
            except Exception as exc:  # noqa: BLE001 - one plugin's broken model must not hide the others
                error = exc.message if isinstance(exc, TmrlError) else f"{type(exc).__name__}: {exc}"
                problems.append(f"section {section} ({spec.kind} {spec.name!r} of plugin {spec.plugin!r}): {error}")
                continue
            if isinstance(model, type) and issubclass(model, BaseModel):
                models.setdefault(section, model)
                break
            problems.append(
                f"section {section} ({spec.kind} {spec.name!r} of plugin {spec.plugin!r}): "
                f"{model!r} is not a pydantic model"
            )
    return models, problems
