"""Observation structure: nested observations as flat lists of leaves plus a JSON-able tree (a part of RingMemory).

A structure node is plain JSON data, so that checkpoints and datasets can store it:

- ``["leaf", j]``: leaf ``j`` of the flat list (an array or a scalar);
- ``["tuple", [nodes]]``, ``["list", [nodes]]``, ``["dict", [[key, node], ...]]``: containers, in order;
- ``["hist", c]``: history ``c`` (a stack of the last K rows, rebuilt by the memory);
- ``["actbuf", j]``: action ``j`` of rtgym's action buffer (a row of the last history).

:func:`flatten` learns a structure from one observation; :func:`flatten_values` gives the leaves of the next ones in
the same order without rebuilding it (the hot path); :func:`assemble` rebuilds an observation (or a batch of them)
from leaves and histories. :func:`check_structure` validates a structure read from a file. Nothing here imports numpy
or torch: any array type works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: deeper structures than this are refused when read back (no observation is nested this deep; recursion is bounded)
MAX_DEPTH = 32


def flatten(value: Any, leaves: list[Any]) -> list[Any]:
    """Append ``value``'s leaves to ``leaves`` and return its structure (tuples, lists and dicts are containers)."""
    if isinstance(value, tuple):
        return ["tuple", [flatten(v, leaves) for v in value]]
    if isinstance(value, list):
        return ["list", [flatten(v, leaves) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[k, flatten(v, leaves)] for k, v in value.items()]]
    leaves.append(value)
    return ["leaf", len(leaves) - 1]


def flatten_values(value: Any, leaves: list[Any]) -> None:
    """Append ``value``'s leaves to ``leaves`` in :func:`flatten` order, without building the structure."""
    if isinstance(value, (tuple, list)):
        for v in value:
            flatten_values(v, leaves)
    elif isinstance(value, dict):
        for v in value.values():
            flatten_values(v, leaves)
    else:
        leaves.append(value)


def assemble(node: list[Any], leaves: Sequence[Any], hists: Sequence[Any], batched: bool) -> Any:
    """Rebuild the observation of structure ``node`` from its leaves and history stacks (``batched``: the arrays
    have a leading batch axis, which matters for ``actbuf`` nodes)."""
    kind = node[0]
    if kind == "leaf":
        return leaves[node[1]]
    if kind == "tuple":
        return tuple(assemble(n, leaves, hists, batched) for n in node[1])
    if kind == "list":
        return [assemble(n, leaves, hists, batched) for n in node[1]]
    if kind == "dict":
        return {k: assemble(n, leaves, hists, batched) for k, n in node[1]}
    if kind == "hist":
        return hists[node[1]]
    if kind == "actbuf":
        stack = hists[-1]
        return stack[:, node[1]] if batched else stack[node[1]]
    raise ValueError(f"unknown structure node {kind!r}")


def leaf_count(node: Any) -> int:
    """How many leaves a structure without histories holds (checked with :func:`check_structure`)."""
    return check_structure(node, histories=0)[0]


def check_structure(node: Any, histories: int | None = None, act_buf_len: int | None = None) -> tuple[int, int]:
    """Validate a structure read from a file; return ``(leaves, action buffer entries)``.

    Leaves must be numbered ``0..n-1`` once each in order; ``hist`` nodes must name one of ``histories`` histories
    (when given); ``actbuf`` entries must be ``0..act_buf_len-1`` (when given); nesting is at most :data:`MAX_DEPTH`.

    Raises:
        ValueError: with what is wrong (callers turn it into their own "damaged file" error).
    """
    leaves: list[int] = []
    actbuf: list[int] = []
    _check(node, histories, leaves, actbuf, 0)
    if leaves != list(range(len(leaves))):
        raise ValueError("leaves are not numbered 0..n-1 in order")
    if act_buf_len is not None and actbuf != list(range(act_buf_len)):
        raise ValueError(f"the action buffer entries are {actbuf}, expected 0..{act_buf_len - 1}")
    return len(leaves), len(actbuf)


def _check(node: Any, histories: int | None, leaves: list[int], actbuf: list[int], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    if not isinstance(node, list) or len(node) != 2 or not isinstance(node[0], str):
        raise ValueError(f"a node is not a [kind, value] pair: {_short(node)}")
    kind, value = node
    if kind in ("leaf", "hist", "actbuf"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{kind} node with a bad index: {_short(value)}")
        if kind == "leaf":
            leaves.append(value)
        elif kind == "actbuf":
            actbuf.append(value)
        elif histories is not None and value >= histories:
            raise ValueError(f"history {value} does not exist (there are {histories})")
    elif kind in ("tuple", "list"):
        if not isinstance(value, list):
            raise ValueError(f"{kind} node without a list of children: {_short(value)}")
        for child in value:
            _check(child, histories, leaves, actbuf, depth + 1)
    elif kind == "dict":
        if not isinstance(value, list):
            raise ValueError(f"dict node without a list of items: {_short(value)}")
        for item in value:
            if not isinstance(item, list) or len(item) != 2:
                raise ValueError(f"dict item is not a [key, node] pair: {_short(item)}")
            _check(item[1], histories, leaves, actbuf, depth + 1)
    else:
        raise ValueError(f"unknown node kind {_short(kind)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
