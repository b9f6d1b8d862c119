"""``RingMemory``: the fast built-in replay memory, composed of small parts that can be used alone.

Parts
-----
- :class:`~tmrl_core.memory.storage.RingStorage` (``memory.storage``): the samples in preallocated rings, addressed by
  an absolute counter, with :class:`~tmrl_core.memory.rows.History` row stores in which every frame or action of a
  history is written once; its own ``state_dict()`` / ``load_state_dict()``.
- :mod:`tmrl_core.memory.structure`: nested observations as flat leaves plus a JSON-able tree.
- :class:`~tmrl_core.memory.sampler.PrefetchSampler` (``memory.sampler``): draws batches, the next one gathered in a
  background thread with ``prefetch=True``.
- :mod:`tmrl_core.memory.persistence`: the checkpoint format around the storage's state, validated when read back.
- :mod:`tmrl_core.memory.dataset`: offline datasets written from the storage and appended to it.

This module adds what is torch-specific: batches as (pinned, when training on CUDA) tensors.

Histories
---------
A sample keeps, per history, the position of its newest row and the *floor* of its episode (the first row of the
episode's stream). The history of a sample is ``rows[max(newest - (K - 1) + j, floor)]`` for ``j = 0..K-1``: before
the reset the history is padded with the first entry, exactly as environments that repeat their first frame do; when
the reset observation's history is something else (rtgym with ``reset_act_buf=False`` carries the previous episode's
actions over, minus the last one that was never applied) the reset sample brings its whole history and the floor
points at its first row. So every transition is rebuilt exactly, across resets, with one vectorised gather.

Transitions
-----------
Transition ``i`` (``0 <= i < len(memory)``) is the ``i``-th valid transition, oldest first: a sample whose
predecessor is still stored and which is not a reset sample (the same indexing as
:class:`~tmrl_core.memory.GenericTorchMemory`, so the two give the same transitions for the same indices). Indices are
drawn uniformly among valid transitions: nothing is nudged to a neighbour.

Batches
-------
:meth:`RingMemory.sample` draws ``batch_size`` indices with ``self.rng`` and gathers every array with one
``numpy.take`` into (pinned, when training on CUDA) tensors, copied to the device with ``non_blocking=True``. The
history windows of ``obs`` and ``next_obs`` overlap, so they are gathered once as ``K + 1`` rows and returned as two
views: ``obs`` and ``next_obs`` may share storage. With ``prefetch=True`` the next batch is gathered in a background
thread while the agent trains on the current one; batches are the same as without prefetch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tmrl_core.buffer import Buffer
from tmrl_core.compression import check_transition_crc
from tmrl_core.errors import ConfigError
from tmrl_core.memory.base import TorchMemory
from tmrl_core.memory.dataset import load_dataset
from tmrl_core.memory.persistence import (
    STATE_FORMAT,
    STATE_VERSION,
    check_state_format,
    load_ring_state,
    ring_state_dict,
)
from tmrl_core.memory.sampler import PrefetchSampler
from tmrl_core.memory.storage import RingStorage
from tmrl_core.memory.structure import assemble

if TYPE_CHECKING:
    from gymnasium import spaces

__all__ = ["STATE_FORMAT", "STATE_VERSION", "RingMemory", "check_state_format"]

#: dtypes converted in batches (what collate_transitions does): float64 and bool become float32
_BATCH_DTYPES = {torch.float64: torch.float32, torch.bool: torch.float32}


class RingMemory(TorchMemory):
    """The fast built-in memory (see the module docstring). Works with every environment.

    Args (besides :class:`~tmrl_core.memory.TorchMemory`'s):
        act_buf_len: the observation ends with rtgym's action buffer of this many actions (env component option).
        history_index: top-level observation indices of histories to de-duplicate (env component option).
        prefetch: gather the next batch in a background thread while the agent trains.
        pin_memory: gather into pinned host memory (default: when ``device`` is CUDA).
        batch_preprocessor: optional ``f(obs, act, rew, next_obs, terminated, truncated)`` applied to whole batches
            (vectorised data augmentation). ``sample_preprocessor`` still works, per transition, at per-sample speed.

    Samples may arrive raw (the ``none`` compressor) or from :class:`~tmrl_core.compression.HistoryCompressor`; the
    storage is the same.
    """

    def __init__(
        self,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
        device: str | torch.device = "cpu",
        nb_steps: int = 1,
        sample_preprocessor: Callable[..., Any] | None = None,
        memory_size: int = 1_000_000,
        batch_size: int = 256,
        dataset_path: str | None = "",
        crc_debug: bool = False,
        seed: int | None = None,
        act_buf_len: int = 0,
        history_index: int | Sequence[int] | None = None,
        prefetch: bool = False,
        pin_memory: bool | None = None,
        batch_preprocessor: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            device=device,
            nb_steps=nb_steps,
            sample_preprocessor=sample_preprocessor,
            memory_size=memory_size,
            batch_size=batch_size,
            dataset_path=dataset_path,
            crc_debug=crc_debug,
            seed=seed,
            observation_space=observation_space,
            action_space=action_space,
        )
        if memory_size < 1:
            raise ConfigError(f"memory_size must be >= 1, got {memory_size}")
        self.storage = RingStorage(int(memory_size) + 1, act_buf_len, history_index)
        self.layout = self.storage.layout
        self.capacity = self.storage.capacity
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        self.batch_preprocessor = batch_preprocessor
        self.sampler: PrefetchSampler[np.ndarray, tuple[Any, ...]] = PrefetchSampler(self.rng, prefetch)
        # appends never interleave with checkpoint saves or loads (the trainer's network thread appends as it trains)
        self._lock = threading.Lock()
        if self.dataset_path:
            load_dataset(self.dataset_path, self)

    # -- storing ---------------------------------------------------------------------------------------------------
    def append_buffer(self, buffer: Buffer) -> None:
        self.append_samples(buffer.memory)

    def append_samples(self, samples: Sequence[Any], resets: Sequence[bool] | None = None) -> None:
        """Store samples ``(act, obs, rew, terminated, truncated, info)``; ``resets`` (optional, raw samples) says
        which start an episode (datasets). Unlike :meth:`append`, episode statistics and ``total_samples`` are left
        alone."""
        self.sampler.drop()
        with self._lock:
            self.storage.append(samples, resets)

    @property
    def dropped_samples(self) -> int:
        """Samples thrown away because their history could not be rebuilt (see ``docs/memory.md``)."""
        return self.storage.dropped_samples

    def __len__(self) -> int:
        return len(self.storage)

    @property
    def stored_samples(self) -> int:
        """Samples currently stored (transitions plus reset samples and the oldest one)."""
        return self.storage.stored_samples

    def nbytes(self) -> int:
        """Bytes held by the storage arrays (rings and history rows; info dicts not counted)."""
        return self.storage.nbytes()

    # -- batches ---------------------------------------------------------------------------------------------------
    def get_transition(self, item: int) -> tuple[Any, ...]:
        return self.storage.transition(self.storage.gather(self.storage.transition_positions(np.array([item]))), 0)

    def _check_crc(self, gathered: dict[str, Any]) -> None:
        for i in range(len(gathered["slots"])):
            check_transition_crc(*self.storage.transition(gathered, i))

    def _make_batch(self, positions: np.ndarray) -> tuple[Any, ...]:
        # pinned tensors must stay owned by torch's host allocator (it keeps them alive until the copy is done)
        owners: dict[int, torch.Tensor] = {}

        def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            t = torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], pin_memory=True)
            view = t.numpy()
            owners[id(view)] = t
            return view

        storage = self.storage
        g = storage.gather(positions, alloc if self.pin_memory else None)
        if self.crc_debug:
            self._check_crc(g)

        def convert(array: np.ndarray, float32: bool = False) -> torch.Tensor:
            t = owners.get(id(array))
            return self._to_device(torch.from_numpy(array) if t is None else t, float32)

        assert storage.structure is not None
        prev = [convert(x) for x in g["prev"]]
        new = [convert(x) for x in g["new"]]
        windows = [convert(w) for w in g["windows"]]
        obs = assemble(storage.structure, prev, storage.hist_views(windows, 0, True), True)
        next_obs = assemble(storage.structure, new, storage.hist_views(windows, 1, True), True)
        scalars = convert(g["scalars"])
        batch = (obs, convert(g["act"], float32=True), scalars[:, 0], next_obs, scalars[:, 1], scalars[:, 2])
        if self.batch_preprocessor is not None:
            batch = tuple(self.batch_preprocessor(*batch))
        return batch

    def _to_device(self, t: torch.Tensor, float32: bool = False) -> torch.Tensor:
        if self.device.type != "cpu":
            t = t.to(self.device, non_blocking=self.pin_memory)
        target = torch.float32 if float32 else _BATCH_DTYPES.get(t.dtype, t.dtype)
        return t if t.dtype == target else t.to(target)

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[Any, ...]:
        """The batch of transitions ``indices`` (``0 <= i < len(self)``), gathered like :meth:`sample` does (for
        custom samplers, e.g. prioritised replay; ``crc_debug`` checks each of them)."""
        return self._make_batch(self.storage.transition_positions(np.asarray(indices, dtype=np.int64)))

    def sample(self) -> tuple[Any, ...]:
        """One batch ``(obs, act, rew, next_obs, terminated, truncated)``, gathered with vectorised indexing."""
        if self.sample_preprocessor is not None:
            return super().sample()
        if len(self) == 0:
            raise IndexError("cannot sample from an empty memory")
        return self.sampler.sample(self._draw_positions, self._make_batch)

    def _draw_positions(self) -> np.ndarray:
        return self.storage.transition_positions(self.sample_indices(), check=False)

    def close(self) -> None:
        """Stop the prefetch thread."""
        self.sampler.close()

    # -- datasets and checkpoints -------------------------------------------------------------------------------
    def observations(self, positions: np.ndarray) -> Any:
        """Full observations (batched numpy arrays, histories rebuilt) of the samples at absolute positions."""
        return self.storage.observations(positions)

    def state_dict(self) -> dict[str, Any]:
        """The stored samples as arrays and plain data (see :mod:`tmrl_core.memory.persistence`); the sampler's RNG
        state included."""
        self.sampler.drop()
        with self._lock:  # a snapshot of one moment: the network thread may be appending
            return ring_state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.drop()
        with self._lock:
            load_ring_state(self, state)


_TORCH_DTYPES: dict[np.dtype, torch.dtype] = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.uint32): torch.uint32,
    np.dtype(np.uint64): torch.uint64,
}

