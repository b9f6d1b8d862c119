"""``RingMemory`` checkpoints: the stored samples as arrays and plain data (never pickle), validated when read back.

The state (format ``tmrl-ring-memory``, version 1) is a dict::

    {"format": "tmrl-ring-memory", "version": 1,
     "meta": {... JSON-able counters, observation structure, history lengths, RNG state ...},
     "arrays": {"leaf.0": ..., "act": ..., "rew": ..., "terminated": ..., "truncated": ..., "first": ...,
                "hist.0.newest": ..., "hist.0.floor": ..., "hist.0.rows": ..., ...},
     "infos": uint8 array (tmrl_core.codec encoding of the list of info dicts) or None}

``meta`` and ``arrays`` are :meth:`RingStorage.state_dict() <tmrl_core.memory.storage.RingStorage.state_dict>`'s,
with the memory's own counters added (``total_samples``, the episode ``stats``, the sampler's ``rng``). Per-sample
arrays hold the stored samples oldest first (absolute positions ``meta["tail"]`` to ``meta["head"]``);
``hist.C.rows`` holds history ``C``'s rows from ``meta["hist"][C]["first_row"]`` on. The trainer's checkpoint
(:mod:`tmrl_core.checkpoint`) writes it as safetensors.

Reading back, ``meta`` is validated against :class:`RingMemoryMeta` (pydantic) and the arrays against it; anything
that does not fit (wrong shape, negative counters, a bogus structure, positions outside the saved rows) raises
:class:`~tmrl_core.errors.CheckpointError` and leaves the memory as it was. Only public interfaces of the memory are
used (:class:`Persistable`).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from tmrl_core import codec
from tmrl_core.errors import CheckpointError, CodecError, DamagedStateError
from tmrl_core.memory.storage import RingStorage

STATE_FORMAT = "tmrl-ring-memory"
STATE_VERSION = 1
STAT_NAMES = ("stat_train_return", "stat_test_return", "stat_train_steps", "stat_test_steps")


class Persistable(Protocol):
    """What a memory needs to be saved here: its storage, its sampler's RNG and its counters."""

    storage: RingStorage
    rng: np.random.Generator
    total_samples: int
    stat_train_return: float | None
    stat_test_return: float | None
    stat_train_steps: int | None
    stat_test_steps: int | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _HistCounters(_Strict):
    first_row: NonNegativeInt
    head: NonNegativeInt


class _Stats(_Strict):
    stat_train_return: float | None = None
    stat_test_return: float | None = None
    stat_train_steps: NonNegativeInt | None = None
    stat_test_steps: NonNegativeInt | None = None


class RingMemoryMeta(_Strict):
    """The schema of ``meta`` (the structure itself is checked by :func:`~tmrl_core.memory.structure.check_structure`
    when the storage loads it)."""

    ready: bool
    act_buf_len: NonNegativeInt
    head: NonNegativeInt
    tail: NonNegativeInt
    episode_open: bool
    floors: list[NonNegativeInt] = Field(max_length=1024)
    dropped_samples: NonNegativeInt
    total_samples: NonNegativeInt
    stats: _Stats
    rng: str = Field(max_length=4096)
    structure: list[Any] | None = None
    hist_lengths: list[PositiveInt] = Field(default_factory=list, max_length=1024)
    hist: list[_HistCounters] = Field(default_factory=list, max_length=1024)


def ring_state_dict(memory: Persistable) -> dict[str, Any]:
    """See the module docstring."""
    storage_state = memory.storage.state_dict()
    meta = {
        **storage_state["meta"],
        "total_samples": memory.total_samples,
        "stats": {name: getattr(memory, name) for name in STAT_NAMES},
        "rng": json.dumps(memory.rng.bit_generator.state),
    }
    infos = storage_state["infos"]
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "meta": meta,
        "arrays": storage_state["arrays"],
        "infos": None if infos is None else np.frombuffer(codec.encode(infos), dtype=np.uint8).copy(),
    }


def check_state_format(state: Any) -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError("not a RingMemory state", hint="was the checkpoint written by another memory?")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"RingMemory state version {state.get('version')} is not supported")


def load_ring_state(memory: Persistable, state: dict[str, Any]) -> None:
    """Replace the memory's contents with ``state`` (from :func:`ring_state_dict`, possibly another memory_size:
    the newest samples that fit are kept). On any error the memory is left as it was.

    Raises:
        CheckpointError: the state is not a RingMemory state or does not fit this memory (another act_buf_len).
        DamagedStateError: the state does not fit its schema (a file written wrong, or edited).
    """
    check_state_format(state)
    try:
        meta = RingMemoryMeta.model_validate(state.get("meta"))
    except ValidationError as exc:
        raise _damaged(f"its metadata does not fit the schema: {_first_error(exc)}") from None
    if meta.act_buf_len != memory.storage.layout.act_buf_len:
        raise CheckpointError(
            f"the saved memory has act_buf_len={meta.act_buf_len}, this one {memory.storage.layout.act_buf_len}",
            hint="resume with the same environment settings",
        )
    arrays = state.get("arrays")
    if not isinstance(arrays, dict):
        raise _damaged("its arrays are missing")
    infos = None
    if state.get("infos") is not None:
        try:
            infos = codec.decode(np.asarray(state["infos"], dtype=np.uint8).tobytes())
        except (CodecError, ValueError, TypeError) as exc:
            raise _damaged(f"its info dicts do not decode: {exc}") from None
        if not isinstance(infos, list) or not all(i is None or isinstance(i, dict) for i in infos):
            raise _damaged("its info dicts are not a list of dicts")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = json.loads(meta.rng)
    except (ValueError, TypeError, KeyError) as exc:
        raise _damaged(f"its RNG state is not one: {exc}") from None
    storage_meta = meta.model_dump(exclude={"total_samples", "stats", "rng"})
    try:
        memory.storage.load_state_dict({"meta": storage_meta, "arrays": arrays, "infos": infos})
    except KeyError as exc:
        raise _damaged(f"it lacks the array {exc}") from None
    except (ValueError, TypeError, IndexError) as exc:
        raise _damaged(str(exc)) from None
    memory.rng.bit_generator.state = rng.bit_generator.state
    memory.total_samples = meta.total_samples
    for name in STAT_NAMES:
        setattr(memory, name, getattr(meta.stats, name))


def _damaged(detail: str) -> DamagedStateError:
    return DamagedStateError(
        f"replay memory state: {detail}",
        hint="it was left untouched: move it away, or pass --reset to keep it aside and start afresh",
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "meta"
    return f"{where}: {error['msg']}"
