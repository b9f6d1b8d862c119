"""The config file: reading it (with its format version), the default content, atomic writing, backups."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tmrl_core.__about__ import __version__
from tmrl_core.errors import ConfigError
from tmrl_core.files import atomic_write_text
from tmrl_core.settings.models import CONFIG_VERSION, CORE_SECTIONS, Settings
from tmrl_core.settings.tree import jsonable


def is_original_config(data: dict[str, Any]) -> bool:
    return "__VERSION__" in data or any(key in ORIGINAL_TOP_LEVEL_KEYS for key in data)


#: Top-level keys of the original tmrl config.json (their presence marks a file to migrate).
ORIGINAL_TOP_LEVEL_KEYS = frozenset(
    {"RUN_NAME", "RESET_TRAINING", "BUFFERS_MAXLEN", "CUDA_TRAINING", "CUDA_INFERENCE", "ALG", "ENV", "MEMORY_SIZE"}
)


def read_config_file(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None if the file does not exist), checked for its format version.

    Raises:
        ConfigError: unreadable file, invalid JSON, a file of the original tmrl (to migrate), or a newer version.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the config file {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            hint="fix it in a text editor (JSON has no comments and no trailing commas), or replace it with "
            "`tmrl config init --force`",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"the config file {path} must hold a JSON object ({{...}}), not {type(data).__name__}",
            hint="replace it with `tmrl config init --force`",
        )
    if is_original_config(data):
        old = data.get("__VERSION__", "unknown")
        raise ConfigError(
            f"the config file {path} was written for the original tmrl (version {old}); tmrl-core uses a new layout",
            hint="run `tmrl config migrate` to convert it (the old file is kept as a backup)",
        )
    version = data.get("version", CONFIG_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"the config file {path} has an invalid version {version!r}: expected a positive integer "
            f"(this tmrl-core writes {CONFIG_VERSION})",
            hint=f'set "version": {CONFIG_VERSION} if the rest of the file is in the current layout',
        )
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"the config file {path} has format version {version}, newer than this tmrl-core ({__version__}) "
            f"supports (up to {CONFIG_VERSION})",
            hint="upgrade tmrl-core (pip install -U tmrl-core), or point TMRL_HOME at another data folder",
        )
    return data


def default_config(*, models: Mapping[str, type[BaseModel]] | None = None) -> dict[str, Any]:
    """The content of a default config file: the version, every core section, and the sections in ``models`` (a
    plugin setting without a default is written as ``null``: see :func:`keys_without_default`)."""
    data: dict[str, Any] = {"version": CONFIG_VERSION}
    defaults = Settings().dump(reveal_secrets=True)
    for name in CORE_SECTIONS:
        data[name] = defaults[name]
    for name, model in sorted((models or {}).items()):
        data[name] = {
            key: None
            if field.is_required()
            else jsonable(field.get_default(call_default_factory=True), reveal_secrets=True)
            for key, field in model.model_fields.items()
        }
    return data


def keys_without_default(models: Mapping[str, type[BaseModel]]) -> list[str]:
    """The dotted keys of the settings in ``models`` that have no default (the user must set them)."""
    return [
        f"{name}.{key}"
        for name, model in sorted(models.items())
        for key, field in model.model_fields.items()
        if field.is_required()
    ]


def write_config_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a crash leaves the old file or the new one, never half)."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def backup_path(path: Path) -> Path:
    """A free name beside ``path`` for its backup: ``config.json.bak``, then ``config.json.bak1``, ..."""
    candidate = path.with_name(path.name + ".bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak{n}")
        n += 1
    return candidate
