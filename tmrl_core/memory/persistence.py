"""``RingMemory`` checkpoints: the stored samples as arrays and plain data (never pickle).

The state (format ``tmrl-ring-memory``, version 1) is a dict::

    {"format": "tmrl-ring-memory", "version": 1,
     "meta": {... JSON-able counters, observation structure, history lengths, RNG state ...},
     "arrays": {"leaf.0": ..., "act": ..., "rew": ..., "terminated": ..., "truncated": ..., "first": ...,
                "hist.0.newest": ..., "hist.0.floor": ..., "hist.0.rows": ..., ...},
     "infos": uint8 array (tmrl_core.codec encoding of the list of info dicts) or None}

Per-sample arrays hold the stored samples oldest first (absolute positions ``meta["tail"]`` to ``meta["head"]``);
``hist.C.rows`` holds history ``C``'s rows from ``meta["hist"][C]["first_row"]`` on. The trainer's checkpoint
(:mod:`tmrl_core.checkpoint`) writes it as safetensors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from tmrl_core.errors import CheckpointError

if TYPE_CHECKING:
    from tmrl_core.memory.ring import RingMemory


def _rng_state(memory: RingMemory) -> str:
    return json.dumps(memory.rng.bit_generator.state)


def _oldest_row(memory: RingMemory, h: int) -> int:
    hist = memory._hist[h]
    if memory._head == memory._tail:
        return hist.store.head
    s = memory._tail % memory.capacity
    return int(max(hist.newest[s] - (hist.length - 1), hist.floor[s]))


def ring_state_dict(memory: RingMemory) -> dict[str, Any]:
    """See the module docstring."""
    from tmrl_core.memory.ring import STATE_FORMAT, STATE_VERSION

    meta: dict[str, Any] = {
        "ready": memory._ready,
        "act_buf_len": memory.layout.act_buf_len,
        "head": memory._head,
        "tail": memory._tail,
        "episode_open": memory._episode_open,
        "floors": list(memory._floors),
        "dropped_samples": memory.dropped_samples,
        "total_samples": memory.total_samples,
        "stats": {
            name: getattr(memory, name)
            for name in ("stat_train_return", "stat_test_return", "stat_train_steps", "stat_test_steps")
        },
        "rng": _rng_state(memory),
    }
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "meta": meta,
        "arrays": {},
        "infos": None,
    }
    if not memory._ready:
        return state
    meta["structure"] = memory._structure
    meta["hist_lengths"] = list(memory._hist_lengths)
    slots = np.arange(memory._tail, memory._head) % memory.capacity
    arrays: dict[str, np.ndarray] = state["arrays"]
    for j, column in enumerate(memory._leaves):
        arrays[f"leaf.{j}"] = column[slots]
    for name in ("act", "rew", "first"):
        arrays[name] = getattr(memory, f"_{name}")[slots]
    arrays["terminated"] = memory._terminated[slots] > 0
    arrays["truncated"] = memory._truncated[slots] > 0
    meta["hist"] = []
    for h, hist in enumerate(memory._hist):
        first_row = _oldest_row(memory, h)
        meta["hist"].append({"first_row": first_row, "head": hist.store.head})
        arrays[f"hist.{h}.newest"] = hist.newest[slots]
        arrays[f"hist.{h}.floor"] = hist.floor[slots]
        arrays[f"hist.{h}.rows"] = hist.store.export(first_row)
    infos = memory._info[slots]
    if any(info is not None for info in infos):
        from tmrl_core import codec

        state["infos"] = np.frombuffer(codec.encode(list(infos)), dtype=np.uint8).copy()
    return state


def load_ring_state(memory: RingMemory, state: dict[str, Any]) -> None:
    """Replace the memory's contents with ``state`` (from :func:`ring_state_dict`, possibly another memory_size:
    the newest samples that fit are kept)."""
    from tmrl_core.memory.ring import _History, check_state_format

    check_state_format(state)
    meta, arrays = state["meta"], state["arrays"]
    if int(meta["act_buf_len"]) != memory.layout.act_buf_len:
        raise CheckpointError(
            f"the saved memory has act_buf_len={meta['act_buf_len']}, this one {memory.layout.act_buf_len}",
            hint="resume with the same environment settings",
        )
    memory.rng.bit_generator.state = json.loads(meta["rng"])
    memory.total_samples = int(meta["total_samples"])
    memory.dropped_samples = int(meta["dropped_samples"])
    for name, value in meta["stats"].items():
        setattr(memory, name, value)
    memory._episode_open = bool(meta["episode_open"])
    memory._floors = [int(f) for f in meta["floors"]]
    head, tail = int(meta["head"]), int(meta["tail"])
    memory._vhead = memory._vtail = 0
    if not meta["ready"]:
        memory._ready = False
        memory._head = memory._tail = head
        return
    c = memory.capacity
    skip = max(0, (head - tail) - c)
    tail += skip
    memory._structure = meta["structure"]
    memory._hist_lengths = [int(n) for n in meta["hist_lengths"]]
    try:
        keep = slice(skip, None)
        leaves = [np.asarray(arrays[f"leaf.{j}"])[keep] for j in range(_count(arrays, "leaf."))]
        columns = {name: np.asarray(arrays[name])[keep] for name in ("act", "rew", "terminated", "truncated", "first")}
        hists = []
        for h, n in enumerate(memory._hist_lengths):
            hists.append(
                (
                    np.asarray(arrays[f"hist.{h}.newest"])[keep],
                    np.asarray(arrays[f"hist.{h}.floor"])[keep],
                    np.asarray(arrays[f"hist.{h}.rows"]),
                    meta["hist"][h],
                    n,
                )
            )
    except KeyError as exc:
        raise CheckpointError(f"the saved memory lacks the array {exc}") from exc
    n_samples = head - tail
    if any(len(a) != n_samples for a in [*leaves, *columns.values()]):
        raise CheckpointError("the saved memory's arrays do not have one row per stored sample")
    slots = np.arange(tail, head) % c
    memory._leaves = []
    for leaf in leaves:
        column = np.empty((c, *leaf.shape[1:]), dtype=leaf.dtype)
        column[slots] = leaf
        memory._leaves.append(column)
    memory._act = np.empty((c, *columns["act"].shape[1:]), dtype=columns["act"].dtype)
    memory._act[slots] = columns["act"]
    memory._first = np.zeros(c, dtype=bool)
    memory._first[slots] = columns["first"]
    memory._scalars = np.zeros((c, 3), dtype=np.float32)
    memory._rew, memory._terminated, memory._truncated = (memory._scalars[:, j] for j in range(3))
    for name in ("rew", "terminated", "truncated"):
        getattr(memory, f"_{name}")[slots] = columns[name]
    memory._info = np.full(c, None, dtype=object)
    if state.get("infos") is not None:
        from tmrl_core import codec

        infos = codec.decode(np.asarray(state["infos"], dtype=np.uint8).tobytes())
        for slot, info in zip(slots, infos[skip:], strict=True):
            memory._info[slot] = info
    memory._hist = []
    for newest, floor, rows, hmeta, n in hists:
        hist = _History(n, rows.shape[1:], rows.dtype, c)
        first_row, store_head = int(hmeta["first_row"]), int(hmeta["head"])
        if len(rows) != store_head - first_row:
            raise CheckpointError("the saved memory's history rows do not match its counters")
        hist.store.capacity = max(hist.store.capacity, len(rows) + n + 1)
        hist.store.rows = np.empty((hist.store.capacity, *rows.shape[1:]), dtype=rows.dtype)
        hist.store.rows[np.arange(first_row, store_head) % hist.store.capacity] = rows
        hist.store.head = store_head
        hist.newest[slots] = newest
        hist.floor[slots] = floor
        memory._hist.append(hist)
    memory._head, memory._tail = head, tail
    memory._ready = True
    valid = np.arange(tail, head)[~columns["first"]]
    valid = valid[valid > tail]
    memory._valid[: len(valid)] = valid
    memory._vtail, memory._vhead = 0, len(valid)


def _count(arrays: dict[str, Any], prefix: str) -> int:
    n = 0
    while f"{prefix}{n}" in arrays:
        n += 1
    return n
