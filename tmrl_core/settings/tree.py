"""Settings as nested data: key paths, their leaves, and the merge that records where each leaf came from.

Every source (the config file, the environment, the command line) is first read into a nested dict; these helpers
walk and merge such dicts while keeping, for each leaf, the name of its source.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

#: A key path, e.g. ``("training", "batch_size")``.
KeyPath = tuple[str, ...]
#: How secrets are shown.
MASK = "****"


def leaves(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every leaf of a nested dict (an empty dict is a leaf)."""
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from leaves(sub, (*path, str(key)))
    elif path:
        yield path, value


def forget(origins: dict[KeyPath, Any], path: KeyPath) -> None:
    """Drop what is recorded at, above or below ``path`` (it is being replaced)."""
    n = len(path)
    for other in list(origins):
        if other[:n] == path or path[: len(other)] == other:
            del origins[other]


def assign(
    data: dict[str, Any],
    origins: dict[KeyPath, str],
    strings: dict[KeyPath, str],
    path: KeyPath,
    value: Any,
    source: str,
) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    forget(origins, path)
    forget(strings, path)
    node[path[-1]] = copy.deepcopy(value)
    for leaf, _ in leaves(value, path):
        origins[leaf] = source


def walk(data: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow ``loc`` (a pydantic error location) into ``data`` as far as it goes; (walked part, value there)."""
    walked: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        walked.append(part)
    return tuple(walked), node


def jsonable(value: Any, *, reveal_secrets: bool) -> Any:
    if isinstance(value, (SecretStr, SecretBytes)):
        if not reveal_secrets:
            return MASK
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="python"), reveal_secrets=reveal_secrets)
    if isinstance(value, dict):
        return {str(k): jsonable(v, reveal_secrets=reveal_secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, reveal_secrets=reveal_secrets) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def is_secret_name(path: KeyPath) -> bool:
    return bool(path) and bool(_SECRET_NAME.search(path[-1]))


_SECRET_NAME = re.compile(r"(^|_)(password|passwd|secret|token|key|api_key)($|_)", re.IGNORECASE)
