"""Where each setting came from: the names of the sources, and :func:`settings_provenance` (``tmrl config show``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel, SecretBytes, SecretStr

from tmrl_core.settings.tree import MASK, KeyPath, is_secret_name, jsonable, leaves

if TYPE_CHECKING:
    from tmrl_core.settings.models import Settings

#: Environment variables named ``TMRL_SECTION__KEY`` are settings; the variable's name is its value's source.
ENV_PREFIX = "TMRL_"
ENV_DELIMITER = "__"
#: Sources as :func:`settings_provenance` names them (besides a file path and an environment variable name).
DEFAULT_SOURCE = "default"
SET_SOURCE = "--set"
CLI_SOURCE = "command line"


def source_of(origins: Mapping[KeyPath, str], path: KeyPath) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    for other, source in origins.items():
        if other[: len(path)] == path:
            return source
    return DEFAULT_SOURCE


def _precedence(source: str) -> int:
    if source == CLI_SOURCE:
        return 5
    if source == SET_SOURCE:
        return 4
    if source.startswith(ENV_PREFIX):
        return 3
    if source == DEFAULT_SOURCE:
        return 0
    return 1 if source.startswith("defaults of") or source == "component defaults" else 2  # else: a file


def strongest_source(sources: Iterable[str]) -> str:
    """The source of highest precedence among ``sources``: for an error about several keys, the likeliest culprit
    is the value given last."""
    return max(sources, key=_precedence, default=DEFAULT_SOURCE)


def describe_source(source: str) -> str:
    if source == DEFAULT_SOURCE:
        return "the default"
    if source == SET_SOURCE:
        return "--set"
    if source == CLI_SOURCE:
        return "a command-line option"
    if source.startswith(ENV_PREFIX):
        return f"environment variable {source}"
    return source


@dataclass(frozen=True)
class SettingOrigin:
    """One leaf setting: its dotted key, its effective value, where it came from, and whether it is a secret."""

    key: str
    value: Any
    source: str
    secret: bool = False

    def shown_value(self) -> Any:
        """The value as printed: secrets masked as ``****``, paths as text."""
        if self.secret and self.value is not None:
            return MASK
        return jsonable(self.value, reveal_secrets=False)


def _model_leaves(instance: BaseModel, path: KeyPath) -> Iterator[tuple[KeyPath, Any, bool]]:
    for name, info in type(instance).model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            yield from _model_leaves(value, (*path, name))
            continue
        annotation = info.annotation
        secret = any(t in (SecretStr, SecretBytes) for t in (annotation, *get_args(annotation)))
        yield (*path, name), value, secret
    for name, value in (instance.model_extra or {}).items():
        for leaf, sub in leaves(value, (*path, name)):
            yield leaf, sub, is_secret_name(leaf)


def settings_provenance(
    settings: Settings, *, models: Mapping[str, type[BaseModel]] | None = None
) -> list[SettingOrigin]:
    """Every leaf setting with its effective value and where it came from.

    Core sections are listed in full (defaults included). A plugin section is listed in full when its model is in
    ``models`` (validated with :meth:`Settings.section`, which may raise :class:`ConfigError`), else as it was given.
    """
    entries: list[SettingOrigin] = []
    # The core sections are the fields of Settings that are models (the format version is not listed).
    core = [name for name in type(settings).model_fields if isinstance(getattr(settings, name), BaseModel)]
    for name in core:
        for path, value, secret in _model_leaves(getattr(settings, name), (name,)):
            entries.append(SettingOrigin(".".join(path), value, source_of(settings._origins, path), secret))
    raw = settings.plugin_sections()
    for name in sorted(set(raw) | set(models or {})):
        model = (models or {}).get(name)
        if model is not None:
            validated = settings.section(name, model)
            assert validated is not None
            found: Iterable[tuple[KeyPath, Any, bool]] = _model_leaves(validated, (name,))
        else:
            found = ((path, value, is_secret_name(path)) for path, value in leaves(raw[name], (name,)))
        for path, value, secret in found:
            entries.append(SettingOrigin(".".join(path), value, source_of(settings._origins, path), secret))
    return entries
