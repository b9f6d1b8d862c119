"""Converting a ``config.json`` of the original tmrl (upper-case keys, ``"__VERSION__"``) to tmrl-core's layout.

The mapping is data (:data:`TOP_LEVEL`, :data:`DROPPED`, ...), documented in ``docs/settings.md``:

- top-level keys go to the core sections (``RUN_NAME`` -> ``run.name``, ``MAX_EPOCHS`` -> ``training.epochs``, ...);
- ``ALG.*`` go to the section of the chosen algorithm (``ALG.ALGORITHM``: ``"SAC"`` -> ``sac``, ``"REDQSAC"`` ->
  ``redqsac``); ``REDQ_N``/``REDQ_M`` always go to ``redqsac``;
- ``ENV.*`` (flattened: its nested ``RTGYM_CONFIG``, ``REWARD_CONFIG`` and ``interface_kwargs`` too) and
  ``VIRTUAL_GAMEPAD`` go to the ``trackmania`` section;
- keys that have no meaning any more (the localhost ports, the tlspyo header size) are dropped, with a reason.

Inside a plugin's section, an original key finds its field through the plugin's settings model: the model's own
``migrate_original(original: dict) -> dict`` classmethod if it has one, else the field whose description names the
original key in parentheses (``"... (IMG_HIST_LEN)"``), else the field named like the key in lower case. A value the
model refuses is dropped with the reason. A section that no installed plugin owns is not written (the backup keeps
it).
"""

from __future__ import annotations

__all__ = ["Migration", "convert_original", "migrate_file"]

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tmrl_core.errors import ConfigError
from tmrl_core.plugins import PluginManager, get_plugin_manager
from tmrl_core.settings import (
    CONFIG_VERSION,
    CORE_SECTIONS,
    Settings,
    backup_path,
    is_original_config,
    plugin_settings_models,
    validate_model,
    write_config_file,
)


def _device(flag: Any) -> str:
    # The original flag meant "use the GPU"; "auto" uses it when there is one, instead of failing when there is not.
    return "auto" if flag else "cpu"


def _not_empty(value: Any) -> Any:
    return value if value not in ("", None) else _SKIP


_SKIP = object()

#: Original top-level key -> (new dotted key, value converter or None).
TOP_LEVEL: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "RUN_NAME": ("run.name", None),
    "RESET_TRAINING": ("run.reset_training", None),
    "BUFFERS_MAXLEN": ("worker.buffers_maxlen", None),
    "RW_MAX_SAMPLES_PER_EPISODE": ("worker.max_samples_per_episode", None),
    "CUDA_TRAINING": ("training.device", _device),
    "CUDA_INFERENCE": ("worker.device", _device),
    "PASSWORD": ("server.password", None),
    "TLS": ("server.tls", None),
    "TLS_HOSTNAME": ("server.tls_hostname", None),
    "TLS_CREDENTIALS_DIRECTORY": ("server.tls_credentials_directory", _not_empty),
    "NB_WORKERS": ("server.max_workers", None),
    "WANDB_PROJECT": ("wandb.project", None),
    "WANDB_ENTITY": ("wandb.entity", _not_empty),
    "WANDB_KEY": ("wandb.key", _not_empty),
    "PORT": ("server.port", None),
    "BUFFER_SIZE": ("server.max_message_bytes", None),
    "MAX_EPOCHS": ("training.epochs", None),
    "ROUNDS_PER_EPOCH": ("training.rounds_per_epoch", None),
    "TRAINING_STEPS_PER_ROUND": ("training.steps_per_round", None),
    "MAX_TRAINING_STEPS_PER_ENVIRONMENT_STEP": ("training.max_training_steps_per_env_step", None),
    "ENVIRONMENT_STEPS_BEFORE_TRAINING": ("training.start_training", None),
    "UPDATE_MODEL_INTERVAL": ("training.update_model_interval", None),
    "UPDATE_BUFFER_INTERVAL": ("training.update_buffer_interval", None),
    "SAVE_MODEL_EVERY": ("worker.model_history", None),
    "MEMORY_SIZE": ("training.memory_size", None),
    "BATCH_SIZE": ("training.batch_size", None),
}

#: Original keys that are dropped, with the reason shown to the user.
DROPPED: dict[str, str] = {
    "__VERSION__": "the new file carries its own format version",
    "LOCALHOST_WORKER": "folded into server.host (127.0.0.1 unless PUBLIC_IP_SERVER is used)",
    "LOCALHOST_TRAINER": "folded into server.host (127.0.0.1 unless PUBLIC_IP_SERVER is used)",
    "LOCAL_PORT_SERVER": "the local transport needs no ports",
    "LOCAL_PORT_TRAINER": "the local transport needs no ports",
    "LOCAL_PORT_WORKER": "the local transport needs no ports",
    "HEADER_SIZE": "the wire format needs no fixed header size",
    "ALG.ALGORITHM": "choose the algorithm on the command line: tmrl run --algo sac (or redqsac)",
    "ENV.RTGYM_INTERFACE": "choose the environment on the command line: tmrl run --env trackmania-full "
    "(or trackmania-lidar)",
}

#: Original keys (dotted) that belong to a plugin section whatever else the file says.
FIXED_PLUGIN_KEYS: dict[str, str] = {
    "VIRTUAL_GAMEPAD": "trackmania",
    "ALG.REDQ_N": "redqsac",
    "ALG.REDQ_M": "redqsac",
}

#: ``ALG.ALGORITHM`` value -> the section of that algorithm's settings.
ALGORITHM_SECTIONS: dict[str, str] = {"SAC": "sac", "REDQSAC": "redqsac", "REDQ-SAC": "redqsac"}

#: The section that receives ``ENV.*``.
ENV_SECTION = "trackmania"


@dataclass
class Migration:
    """The result of converting an original config: the new data and what happened to every original key."""

    data: dict[str, Any]
    #: (original dotted key, new dotted key) for every value carried over.
    moved: list[tuple[str, str]] = field(default_factory=list)
    #: (original dotted key, reason) for every value not carried over.
    dropped: list[tuple[str, str]] = field(default_factory=list)
    #: Problems found when validating the converted values against the installed plugins' models.
    warnings: list[str] = field(default_factory=list)


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def _flatten(value: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, sub in value.items():
        dotted = f"{prefix}.{key}"
        if isinstance(sub, Mapping) and sub:
            items.extend(_flatten(sub, dotted))
        else:
            items.append((dotted, sub))
    return items


def _field_for(model: type[BaseModel] | None, original: str) -> str | None:
    """The field of ``model`` that replaces the original key ``original`` (its last dotted part)."""
    key = original.rsplit(".", 1)[-1]
    if model is None:
        return key.lower()
    for name, info in model.model_fields.items():
        for group in re.findall(r"\(([^()]*)\)", info.description or ""):
            if key in re.split(r"[\s,/;]+", group):
                return name
    return key.lower() if key.lower() in model.model_fields else None


def convert_original(
    old: Mapping[str, Any],
    *,
    plugin_sections: set[str] | None = None,
    models: Mapping[str, type[BaseModel]] | None = None,
) -> Migration:
    """Convert the original config ``old`` to the new layout.

    Args:
        old: the parsed original ``config.json``.
        plugin_sections: sections that installed plugins own; values for other plugin sections are dropped (with a
            reason). ``None`` keeps every section.
        models: the settings models of plugin sections, to find each value's field and check it (see the module's
            docstring); a section without a model gets the original keys in lower case.
    """
    models = models or {}
    migration = Migration(data={"version": CONFIG_VERSION})
    # section -> [(original dotted key, value)] of the values that go to plugin sections
    for_plugins: dict[str, list[tuple[str, Any]]] = {}

    algorithm = (
        str((old.get("ALG") or {}).get("ALGORITHM", "SAC")).upper() if isinstance(old.get("ALG"), Mapping) else "SAC"
    )
    alg_section = ALGORITHM_SECTIONS.get(algorithm, algorithm.lower())

    for key, value in old.items():
        if key in DROPPED:
            migration.dropped.append((key, DROPPED[key]))
        elif key in FIXED_PLUGIN_KEYS:
            for_plugins.setdefault(FIXED_PLUGIN_KEYS[key], []).append((key, value))
        elif key in TOP_LEVEL:
            target, convert = TOP_LEVEL[key]
            new = convert(value) if convert is not None else value
            if new is _SKIP:
                migration.dropped.append((key, "empty: the default applies"))
            else:
                _put(migration.data, target, new)
                migration.moved.append((key, target))
        elif key == "PUBLIC_IP_SERVER":
            local = old.get("LOCALHOST_WORKER", True) and old.get("LOCALHOST_TRAINER", True)
            if value and not local:
                _put(migration.data, "server.host", value)
                migration.moved.append((key, "server.host"))
            else:
                migration.dropped.append((key, "the server is on localhost (server.host = 127.0.0.1)"))
        elif key in ("ALG", "ENV") and isinstance(value, Mapping):
            for source, sub in _flatten(value, key):
                if source in DROPPED:
                    migration.dropped.append((source, DROPPED[source]))
                    continue
                section = FIXED_PLUGIN_KEYS.get(source) or (alg_section if key == "ALG" else ENV_SECTION)
                for_plugins.setdefault(section, []).append((source, sub))
        else:
            migration.dropped.append((key, "unknown to tmrl-core"))

    for section, items in for_plugins.items():
        if plugin_sections is not None and section not in plugin_sections:
            reason = f"no installed plugin owns the section {section!r} (install it, then migrate the backup)"
            migration.dropped.extend((source, reason) for source, _ in items)
            continue
        model = models.get(section)
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        custom = getattr(model, "migrate_original", None)
        if callable(custom):
            values = dict(custom(dict(old)))
            origin = {name: f"({model.__name__}.migrate_original)" for name in values}
        else:
            for source, value in items:
                name = _field_for(model, source)
                if name is None:
                    migration.dropped.append((source, f"{section} has no matching setting"))
                    continue
                values[name] = value
                origin[name] = source
        if model is not None:
            # Drop what the model refuses, so that the written file loads.
            while values:
                try:
                    validate_model(
                        model,
                        values,
                        {(section, n): f"the original {o}" for n, o in origin.items()},
                        {},
                        prefix=(section,),
                    )
                    break
                except ConfigError as exc:
                    bad = [
                        name
                        for name in values
                        if re.search(rf"\b{re.escape(section)}\.{re.escape(name)}\b", exc.message)
                    ]
                    if not bad:
                        migration.warnings.append(exc.message)
                        break
                    for name in bad:
                        migration.dropped.append((origin[name], f"refused by {section}: {exc.message}"))
                        del values[name]
        for name, value in values.items():
            _put(migration.data, f"{section}.{name}", value)
            migration.moved.append((origin[name], f"{section}.{name}"))
    return migration


def migrate_file(
    source: Path,
    target: Path,
    *,
    manager: PluginManager | None = None,
    dry_run: bool = False,
) -> tuple[Migration, Path | None]:
    """Convert the original config in ``source`` and write it to ``target``, backing up what ``target`` held.

    Returns the migration and the backup's path (None if nothing was backed up, or ``dry_run``).

    Raises:
        ConfigError: ``source`` is missing, is not JSON, or is not an original config; or the converted values do
            not fit the core sections.
    """
    try:
        old = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"there is no config file to migrate at {source}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            hint="fix it in a text editor first (the original tmrl did not accept comments either)",
        ) from exc
    if not isinstance(old, dict) or not is_original_config(old):
        version = old.get("version") if isinstance(old, dict) else None
        raise ConfigError(
            f"{source} is not a config file of the original tmrl"
            + (f" (it is already in tmrl-core's layout, version {version})" if version else ""),
            hint="nothing to migrate; `tmrl config show` shows the effective settings",
        )
    if manager is None:
        manager = get_plugin_manager()
    models, _ = plugin_settings_models(manager)
    migration = convert_original(old, plugin_sections=set(manager.settings_sections()), models=models)
    # The core sections must validate, or the new file would not load.
    core = {key: value for key, value in migration.data.items() if key in CORE_SECTIONS}
    validate_model(Settings, core, {}, {})

    if dry_run:
        return migration, None
    backup = None
    if target.exists():
        backup = backup_path(target)
        backup.write_bytes(target.read_bytes())
    write_config_file(target, migration.data)
    return migration, backup
