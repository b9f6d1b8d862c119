"""Offline datasets: raw samples in a ``.npz`` file of named arrays (read with ``allow_pickle=False``).

Format ``tmrl-dataset`` version 1, ``N`` samples in order (episodes one after the other):

==================  ===================  ========================================================================
array               shape / dtype        meaning
==================  ===================  ========================================================================
``meta``            uint8                UTF-8 JSON: ``{"format": "tmrl-dataset", "version": 1, "samples": N,
                                         "structure": ...}`` where ``structure`` nests the observation's leaves
                                         (``["leaf", j]``, ``["tuple", [...]]``, ``["list", [...]]``,
                                         ``["dict", [[key, node], ...]]``)
``act``             ``(N, *act_shape)``  the sample's action (for a reset sample: the action applied after reset)
``rew``             ``(N,)`` float32     reward
``terminated``      ``(N,)`` bool
``truncated``       ``(N,)`` bool
``reset``           ``(N,)`` bool        the sample starts an episode (its observation is what reset returned)
``obs.J``           ``(N, *shape_J)``    leaf ``J`` of the full, uncompressed observation
==================  ===================  ========================================================================

A memory created with ``dataset_path=...`` appends the dataset's samples at start (:func:`load_dataset`);
:func:`save_dataset` writes one from a memory, :func:`write_dataset` from raw samples.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tmrl_core.buffer import Buffer
from tmrl_core.compression import is_history_compressed
from tmrl_core.errors import CheckpointError, ConfigError
from tmrl_core.files import atomic_write
from tmrl_core.memory.storage import CHUNK, RingStorage
from tmrl_core.memory.structure import assemble, flatten, flatten_values, leaf_count

DATASET_FORMAT = "tmrl-dataset"
DATASET_VERSION = 1


def _meta_array(meta: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def _write(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], compress: bool) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)

    return atomic_write(path, write)


def write_dataset(
    path: str | os.PathLike[str],
    samples: Sequence[Sequence[Any]],
    resets: Sequence[bool] | None = None,
    *,
    compress: bool = False,
) -> Path:
    """Write raw samples ``(act, obs, rew, terminated, truncated[, info])`` (infos are not kept).

    ``resets`` defaults to: the first sample and every sample after a terminated or truncated one.
    """
    if not samples:
        raise ConfigError("cannot write an empty dataset")
    if is_history_compressed(samples[0][1]):
        raise ConfigError("write_dataset needs raw samples, not compressed ones", hint="use save_dataset(memory, path)")
    structure = flatten(samples[0][1], [])
    columns: list[list[Any]] = []
    for sample in samples:
        leaves: list[Any] = []
        flatten_values(sample[1], leaves)
        if not columns:
            columns = [[] for _ in leaves]
        for column, leaf in zip(columns, leaves, strict=True):
            column.append(leaf)
    if resets is None:
        done = [bool(s[3] or s[4]) for s in samples]
        resets = [True] + done[:-1]
    arrays = {
        "meta": _meta_array(
            {"format": DATASET_FORMAT, "version": DATASET_VERSION, "samples": len(samples), "structure": structure}
        ),
        "act": np.stack([np.asarray(s[0]) for s in samples]),
        "rew": np.asarray([s[2] for s in samples], dtype=np.float32),
        "terminated": np.asarray([bool(s[3]) for s in samples]),
        "truncated": np.asarray([bool(s[4]) for s in samples]),
        "reset": np.asarray(resets, dtype=bool),
    }
    for j, column in enumerate(columns):
        arrays[f"obs.{j}"] = np.stack([np.asarray(x) for x in column])
    return _write(path, arrays, compress)


def save_dataset(memory: Any, path: str | os.PathLike[str], *, compress: bool = False) -> Path:
    """Write the samples a memory holds as a dataset (full observations, histories rebuilt).

    Works for memories with a :class:`~tmrl_core.memory.storage.RingStorage` in ``.storage``
    (:class:`~tmrl_core.memory.RingMemory`) and for memories that keep raw samples in ``.samples``
    (:class:`~tmrl_core.memory.GenericTorchMemory` with the ``none`` compressor).
    """
    storage = getattr(memory, "storage", None)
    if isinstance(storage, RingStorage):
        return _write(path, storage_arrays(storage), compress)
    samples = getattr(memory, "samples", None)
    if samples is None:
        raise ConfigError(f"cannot write a dataset from a {type(memory).__name__}")
    return write_dataset(path, samples, compress=compress)


def storage_arrays(storage: RingStorage) -> dict[str, np.ndarray]:
    """The dataset arrays (see the module docstring) of the samples a ring storage holds."""
    n = storage.stored_samples
    if n == 0:
        raise ConfigError("cannot write a dataset from an empty memory")
    positions = np.arange(storage.tail, storage.head)
    columns: list[list[np.ndarray]] = []
    structure = None
    for lo in range(0, n, CHUNK):
        flat: list[Any] = []
        structure = flatten(storage.observations(positions[lo : lo + CHUNK]), flat)
        if not columns:
            columns = [[] for _ in flat]
        for column, leaf in zip(columns, flat, strict=True):
            column.append(np.ascontiguousarray(leaf))
    slots = positions % storage.capacity
    reset = storage.first[slots].copy()
    reset[0] = True  # the oldest stored sample has no predecessor left
    arrays = {
        "meta": _meta_array(
            {"format": DATASET_FORMAT, "version": DATASET_VERSION, "samples": n, "structure": structure}
        ),
        "act": storage.act[slots],
        "rew": storage.rew[slots],
        "terminated": storage.terminated[slots] > 0,
        "truncated": storage.truncated[slots] > 0,
        "reset": reset,
    }
    for j, column in enumerate(columns):
        arrays[f"obs.{j}"] = np.concatenate(column)
    return arrays


def read_dataset(path: str | os.PathLike[str]) -> tuple[list[tuple[Any, ...]], list[bool]]:
    """``(samples, resets)``: the dataset's raw samples ``(act, obs, rew, terminated, truncated, {})``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError as exc:
        raise ConfigError(f"dataset {str(path)!r} does not exist", hint="check dataset_path") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"dataset {str(path)!r} cannot be read: {exc}") from exc
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("format") != DATASET_FORMAT or meta.get("version") != DATASET_VERSION:
            raise CheckpointError(f"{str(path)!r} is not a {DATASET_FORMAT} version {DATASET_VERSION} file")
        n = int(meta["samples"])
        leaves = [arrays[f"obs.{j}"] for j in range(leaf_count(meta["structure"]))]
        act, rew, reset = arrays["act"], arrays["rew"], arrays["reset"]
        terminated, truncated = arrays["terminated"], arrays["truncated"]
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"dataset {str(path)!r} is incomplete or malformed: {exc}") from exc
    if any(len(a) != n for a in [act, rew, reset, terminated, truncated, *leaves]):
        raise CheckpointError(f"dataset {str(path)!r}: arrays do not all have {n} rows")
    samples = [
        (
            act[i],
            assemble(meta["structure"], [leaf[i] for leaf in leaves], [], False),
            float(rew[i]),
            bool(terminated[i]),
            bool(truncated[i]),
            {},
        )
        for i in range(n)
    ]
    return samples, [bool(r) for r in reset]


class SampleAppender(Protocol):
    """A memory that stores raw samples with explicit episode starts (:class:`~tmrl_core.memory.RingMemory`)."""

    total_samples: int

    def append_samples(self, samples: Sequence[Any], resets: Sequence[bool] | None = None) -> None: ...


def load_dataset(path: str | os.PathLike[str], memory: Any) -> int:
    """Append a dataset's samples to ``memory``; returns how many were read.

    A memory with ``append_samples(samples, resets)`` (:class:`SampleAppender`) gets them in one call; any other
    :class:`~tmrl_core.memory.TorchMemory` gets one buffer per episode.
    """
    samples, resets = read_dataset(path)
    if callable(getattr(memory, "append_samples", None)):
        memory.append_samples(samples, resets)
        storage = getattr(memory, "storage", None)
        if isinstance(storage, RingStorage):
            storage.episode_open = False  # a dataset may end mid-episode: the next sample received starts one
        memory.total_samples += len(samples)
        return len(samples)
    for episode in _episodes(samples, resets):
        buffer = Buffer(maxlen=len(episode))
        for sample in episode:
            buffer.append_sample(sample)
        memory.append(buffer)
    return len(samples)


def _episodes(samples: list[Any], resets: Iterable[bool]) -> list[list[Any]]:
    episodes: list[list[Any]] = []
    for sample, reset in zip(samples, resets, strict=True):
        if reset or not episodes:
            episodes.append([])
        episodes[-1].append(sample)
    return episodes
