"""Validating settings data against a model, and turning pydantic's errors into one readable :class:`ConfigError`.

Every message names the dotted key, the bad value (secrets masked), what was expected and where the value came from,
and suggests the closest known key.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from tmrl_core.errors import ConfigError
from tmrl_core.settings.provenance import describe_source, source_of, strongest_source
from tmrl_core.settings.tree import MASK, KeyPath, is_secret_name, walk

M = TypeVar("M", bound=BaseModel)

#: what a factory accepts for its settings section: a validated model, a plain dict of its fields, or None (the
#: defaults); :func:`coerce_section` makes the model of it
SectionValues = BaseModel | Mapping[str, Any] | None


def _field_model(model: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Model``, ``Model | None``), or None."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    for arg in get_args(model):
        found = _field_model(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel] | None, path: KeyPath) -> type[BaseModel] | None:
    for key in path:
        if model is None or key not in model.model_fields:
            return None
        model = _field_model(model.model_fields[key].annotation)
    return model


def _is_secret_field(model: type[BaseModel] | None, path: KeyPath) -> bool:
    parent = _model_at(model, path[:-1])
    if parent is not None and path and path[-1] in parent.model_fields:
        annotation = parent.model_fields[path[-1]].annotation
        return any(t in (SecretStr, SecretBytes) for t in (annotation, *get_args(annotation)))
    return is_secret_name(path)


def _expected(message: str) -> str:
    for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    return message


def config_error(
    errors: list[tuple[dict[str, Any], dict[str, Any]]],
    model: type[BaseModel],
    origins: Mapping[KeyPath, str],
    prefix: KeyPath,
) -> ConfigError:
    """One :class:`ConfigError` for pydantic errors, each given with the data it was raised on."""
    problems: list[str] = []
    hints: list[str] = []
    for err, data in errors:
        loc = tuple(err["loc"])
        walked, value = walk(data, loc)
        if err["type"] == "missing":
            walked = loc[: len(walked) + 1]
        path = tuple(str(part) for part in walked)
        dotted = ".".join((*prefix, *path))
        source = describe_source(source_of(origins, (*prefix, *path)))
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, path[:-1])
            known = sorted(parent.model_fields) if parent is not None else []
            close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.5)
            where = ".".join((*prefix, *path[:-1]))
            problems.append(f"unknown key {dotted} (from {source})")
            if close:
                hints.append(f"did you mean {'.'.join((*prefix, *path[:-1], close[0]))}?")
            elif known:
                hints.append(f"known keys of {where}: {', '.join(known)}")
        elif err["type"] == "missing":
            problems.append(f"missing key {dotted}: it has no default and must be set")
        elif isinstance(value, dict) and err["type"] in ("value_error", "assertion_error"):
            # a model's own check across its keys (e.g. two timings that contradict each other)
            # the keys the check names (e.g. batch_size and memory_size): the culprit is the one given last
            section = _model_at(model, path)
            named = [key for key in (section.model_fields if section else ()) if re.search(rf"\b{key}\b", err["msg"])]
            source = describe_source(strongest_source(source_of(origins, (*prefix, *path, key)) for key in named))
            problems.append(f"invalid settings in {dotted or model.__name__} (from {source}): {_expected(err['msg'])}")
        else:
            shown = MASK if _is_secret_field(model, path) else repr(value)
            problems.append(f"bad value for {dotted}: {shown} (from {source}); expected {_expected(err['msg'])}")
    if len(problems) == 1:
        message = problems[0]
    else:
        message = "invalid settings:\n" + "\n".join(f"  - {p}" for p in problems)
    if not hints:
        hints.append("`tmrl config show` lists every key, its value and where it came from")
    return ConfigError(message, hint="; ".join(dict.fromkeys(hints)))


def validate_model(
    model: type[M],
    data: dict[str, Any],
    origins: Mapping[KeyPath, str],
    strings: Mapping[KeyPath, str],
    *,
    prefix: KeyPath = (),
) -> M:
    """``model.model_validate(data)``, retrying typed-as-text values as plain text, errors as :class:`ConfigError`.

    A value typed as text (``--set run.name=123``) is first read as JSON (123); if the field refuses that, it gets
    the text itself ("123"). If both fail, the error reported is the one about the JSON reading.
    """
    original = copy.deepcopy(data)
    data = copy.deepcopy(data)
    first_errors: dict[KeyPath, dict[str, Any]] = {}
    as_text: set[KeyPath] = set()
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors()
        retry = False
        for err in errors:
            walked, _ = walk(data, tuple(err["loc"]))
            full = (*prefix, *(str(part) for part in walked))
            for path, text in strings.items():
                if path[: len(prefix)] != prefix or path in as_text:
                    continue
                if full[: len(path)] == path or path[: len(full)] == full:
                    node = data
                    for key in path[len(prefix) : -1]:
                        node = node[key]
                    node[path[-1]] = text
                    as_text.add(path)
                    first_errors[path] = err
                    retry = True
        if retry:
            continue
        reported: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for err in errors:
            walked, _ = walk(data, tuple(err["loc"]))
            full = (*prefix, *(str(part) for part in walked))
            retried = next((p for p in as_text if full[: len(p)] == p), None)
            if retried is not None:
                reported.append((first_errors[retried], original))
            else:
                reported.append((err, data))
        raise config_error(reported, model, origins, prefix)


def coerce_section(
    settings: SectionValues, model: type[M], *, section: str | None = None, **overrides: Any
) -> M:
    """``settings`` as an instance of ``model``, with ``overrides`` applied: for factories that accept a validated
    section, a plain dict of its fields, another model's instance or None (the defaults).

    An override of a nested section given as a dict is merged into it (``sim={"track": "oval"}`` changes one key).

    Raises:
        ConfigError: a bad value or an unknown key; the message names the key (prefixed by ``section`` if given).
    """
    if isinstance(settings, model) and not overrides:
        return settings
    if settings is None:
        data: dict[str, Any] = {}
    elif isinstance(settings, BaseModel):
        data = settings.model_dump()
    else:
        data = dict(settings)
    for key, value in overrides.items():
        current = data.get(key)
        if isinstance(value, Mapping) and isinstance(current, (Mapping, BaseModel)):
            base = current.model_dump() if isinstance(current, BaseModel) else dict(current)
            data[key] = {**base, **value}
        else:
            data[key] = value
    return validate_model(model, data, {}, {}, prefix=(section,) if section else ())
