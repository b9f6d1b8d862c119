"""``RingMemory``: the fast built-in replay memory (preallocated rings, vectorised batches, exact histories).

Storage
-------
Samples live in preallocated ring arrays of ``memory_size + 1`` rows, one array per observation leaf (nested tuples
and dicts are flattened), plus the action, reward, terminated, truncated, a reset flag and the info dict; they are
allocated from the first sample. Samples are addressed by an absolute counter ``k`` (slot ``k % capacity``), so
trimming the oldest samples is moving a counter.

*Histories* (the last K frames of an image history, rtgym's action buffer) are not stored per sample: each history
keeps a row store in which every entry (a frame, an action) is written once, and a sample keeps two integers: the
position of its newest row and the *floor* of its episode (the first row of the episode's stream). The history of a
sample is ``rows[max(newest - (K - 1) + j, floor)]`` for ``j = 0..K-1``: before the reset the history is padded with
the first entry, exactly as environments that repeat their first frame do; when the reset observation's history is
something else (rtgym with ``reset_act_buf=False`` carries the previous episode's actions over, minus the last one
that was never applied) the reset sample brings its whole history and the floor points at its first row. So every
transition is rebuilt exactly, across resets, with one vectorised gather.

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

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from tmrl_core.buffer import Buffer
from tmrl_core.compression import (
    HistoryCompressor,
    HistoryLayout,
    check_transition_crc,
    is_history_compressed,
)
from tmrl_core.errors import CheckpointError, ConfigError
from tmrl_core.memory.base import TorchMemory

logger = logging.getLogger(__name__)

STATE_FORMAT = "tmrl-ring-memory"
STATE_VERSION = 1
#: Samples decoded and written per step of ``append_buffer`` (bounds the temporary memory of huge buffers).
_CHUNK = 4096


# -- observation structure -------------------------------------------------------------------------------------------
# A structure node is JSON-able: ["leaf", i], ["tuple", [nodes]], ["list", [nodes]], ["dict", [[key, node], ...]],
# ["hist", c] (history c) or ["actbuf", j] (action j of the action buffer, a row of the last history).


def _flatten(value: Any, leaves: list[Any]) -> list[Any]:
    if isinstance(value, tuple):
        return ["tuple", [_flatten(v, leaves) for v in value]]
    if isinstance(value, list):
        return ["list", [_flatten(v, leaves) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[k, _flatten(v, leaves)] for k, v in value.items()]]
    leaves.append(value)
    return ["leaf", len(leaves) - 1]


def _flatten_values(value: Any, leaves: list[Any]) -> None:
    """Leaves of ``value`` in :func:`_flatten` order, without building the structure (hot path)."""
    if isinstance(value, (tuple, list)):
        for v in value:
            _flatten_values(v, leaves)
    elif isinstance(value, dict):
        for v in value.values():
            _flatten_values(v, leaves)
    else:
        leaves.append(value)


def _assemble(node: list[Any], leaves: Sequence[Any], hists: Sequence[Any], batched: bool) -> Any:
    kind = node[0]
    if kind == "leaf":
        return leaves[node[1]]
    if kind == "tuple":
        return tuple(_assemble(n, leaves, hists, batched) for n in node[1])
    if kind == "list":
        return [_assemble(n, leaves, hists, batched) for n in node[1]]
    if kind == "dict":
        return {k: _assemble(n, leaves, hists, batched) for k, n in node[1]}
    if kind == "hist":
        return hists[node[1]]
    if kind == "actbuf":
        stack = hists[-1]
        return stack[:, node[1]] if batched else stack[node[1]]
    raise ValueError(f"unknown structure node {kind!r}")


#: dtypes converted in batches (what collate_transitions does): float64 and bool become float32
_BATCH_DTYPES = {torch.float64: torch.float32, torch.bool: torch.float32}


# -- history rows ----------------------------------------------------------------------------------------------------


class _RowStore:
    """Rows of one history, addressed by absolute position ``p`` (slot ``p % capacity``); grows when live rows would
    be overwritten."""

    def __init__(self, row_shape: tuple[int, ...], dtype: np.dtype, capacity: int) -> None:
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.capacity = int(capacity)
        self.rows = np.empty((self.capacity, *self.row_shape), dtype=self.dtype)
        self.head = 0

    def reserve(self, oldest_needed: int, n_new: int) -> None:
        """Make room for ``n_new`` rows while keeping rows from ``oldest_needed`` on."""
        needed = self.head + n_new - oldest_needed
        if needed > self.capacity:
            self._grow(max(needed, int(self.capacity * 1.5) + 1), oldest_needed)

    def _grow(self, capacity: int, oldest: int) -> None:
        rows = np.empty((capacity, *self.row_shape), dtype=self.dtype)
        positions = np.arange(max(oldest, self.head - self.capacity), self.head)
        rows[positions % capacity] = self.rows[positions % self.capacity]
        self.rows, self.capacity = rows, capacity

    def write(self, block: np.ndarray) -> None:
        n = len(block)
        skip = max(0, n - self.capacity)  # rows that the same block would overwrite are never needed
        start = self.head + skip
        for lo, hi, src in _segments(start, n - skip, self.capacity):
            self.rows[lo:hi] = block[skip + src : skip + src + hi - lo]
        self.head += n

    def take(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        # mode="wrap" is the ring's modulo (positions are never negative)
        return self.rows.take(positions, axis=0, out=out, mode="wrap")

    def export(self, first: int) -> np.ndarray:
        return self.rows[np.arange(first, self.head) % self.capacity]


def _segments(start: int, n: int, capacity: int) -> list[tuple[int, int, int]]:
    """Contiguous ``(slot_lo, slot_hi, offset_in_block)`` pieces of ``n`` positions from ``start`` in a ring."""
    pieces = []
    done = 0
    while done < n:
        lo = (start + done) % capacity
        hi = min(capacity, lo + (n - done))
        pieces.append((lo, hi, done))
        done += hi - lo
    return pieces


class _History:
    """One history: its row store and, per sample slot, the newest row and the floor of the episode."""

    def __init__(self, length: int, row_shape: tuple[int, ...], dtype: np.dtype, capacity: int) -> None:
        self.length = length
        self.store = _RowStore(row_shape, dtype, capacity + length + 1)
        self.newest = np.zeros(capacity, dtype=np.int64)
        self.floor = np.zeros(capacity, dtype=np.int64)


# -- the memory ------------------------------------------------------------------------------------------------------


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
        observation_space: Any = None,
        action_space: Any = None,
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
        self.layout = HistoryLayout(act_buf_len, history_index)
        self.capacity = int(memory_size) + 1
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        self.batch_preprocessor = batch_preprocessor
        #: samples thrown away because their history could not be rebuilt (see ``docs/memory.md``)
        self.dropped_samples = 0
        self._raw_compressor = HistoryCompressor(act_buf_len, history_index) if self.layout.active else None
        self._ready = False
        self._head = 0  # absolute position of the next sample
        self._tail = 0  # absolute position of the oldest stored sample
        self._valid = np.zeros(self.capacity, dtype=np.int64)
        self._vhead = 0
        self._vtail = 0
        self._episode_open = False
        self._floors: list[int] = []
        self._prefetch = bool(prefetch)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[tuple[Any, ...]], dict[str, Any]] | None = None
        self._lock = threading.Lock()
        if self.dataset_path:
            from tmrl_core.memory.dataset import load_dataset

            load_dataset(self.dataset_path, self)

    # -- storage -------------------------------------------------------------------------------------------------
    def _init_structure(self, obs: Any) -> None:
        """Learn the observation's structure (and history lengths) from the first sample."""
        if is_history_compressed(obs):
            if not self.layout.active:
                raise ConfigError(
                    "this memory received history-compressed samples but has no act_buf_len/history_index",
                    hint="give the memory the same component options as the compressor",
                )
            kept_leaves: list[Any] = []
            kept_nodes = [_flatten(v, kept_leaves) for v in obs["obs"]]
            lengths = [int(n) for n in obs["hist_len"]]
            hist_idx, _ = self.layout.resolve(len(kept_nodes) + len(lengths) + self.layout.act_buf_len)
            if len(hist_idx) != len(lengths):
                raise ConfigError(
                    f"compressed samples hold {len(lengths)} histories, the memory's history_index names "
                    f"{len(hist_idx)}",
                    hint="give the memory the same component options as the compressor",
                )
            kept_iter = iter(kept_nodes)
            nodes = [
                ["hist", hist_idx.index(i)] if i in hist_idx else next(kept_iter)
                for i in range(len(kept_nodes) + len(lengths))
            ]
        elif self.layout.active:
            hist_idx, kept = self.layout.check(obs)
            leaves: list[Any] = []
            nodes = [None] * (len(obs) - self.layout.act_buf_len)
            for i in kept:
                nodes[i] = _flatten(obs[i], leaves)
            for c, i in enumerate(hist_idx):
                nodes[i] = ["hist", c]
            lengths = [int(np.shape(obs[i])[0]) for i in hist_idx]
        else:
            self._structure = _flatten(obs, [])
            self._hist_lengths: list[int] = []
            return
        nodes.extend(["actbuf", j] for j in range(self.layout.act_buf_len))
        self._structure = ["tuple", nodes]
        self._hist_lengths = lengths + ([self.layout.act_buf_len] if self.layout.act_buf_len else [])

    def _allocate(self, act: Any, leaves: list[Any], hist_rows: list[np.ndarray]) -> None:
        c = self.capacity
        self._leaves = [np.empty((c, *np.shape(x)), dtype=np.asarray(x).dtype) for x in leaves]
        act = np.asarray(act)
        self._act = np.empty((c, *act.shape), dtype=act.dtype)
        # reward, terminated, truncated side by side: batches gather the three at once, already as float32
        self._scalars = np.zeros((c, 3), dtype=np.float32)
        self._rew, self._terminated, self._truncated = (self._scalars[:, j] for j in range(3))
        self._first = np.zeros(c, dtype=bool)
        self._info = np.full(c, None, dtype=object)
        self._hist = [
            _History(n, rows.shape[1:], rows.dtype, c) for n, rows in zip(self._hist_lengths, hist_rows, strict=True)
        ]
        self._floors = [0] * len(self._hist)
        self._ready = True

    def append_buffer(self, buffer: Buffer) -> None:
        self._append_samples(buffer.memory)

    def _append_samples(self, samples: Sequence[Any], resets: Sequence[bool] | None = None) -> None:
        """Store samples; ``resets`` (optional) says which raw samples start an episode (datasets)."""
        self._drop_prefetch()
        chunk = min(_CHUNK, self.capacity)  # a chunk never writes a slot twice
        with self._lock:
            for lo in range(0, len(samples), chunk):
                self._append_chunk(samples[lo : lo + chunk], None if resets is None else resets[lo : lo + chunk])

    def _decode(self, sample: Any, forced_reset: bool | None) -> tuple[Any, ...]:
        """``(act, leaves, hist_rows, is_reset, rew, terminated, truncated, info)`` of one sample."""
        act, obs, rew, terminated, truncated, info = sample
        leaves: list[Any] = []
        if is_history_compressed(obs):
            is_reset = bool(obs["reset"])
            cobs = obs
        else:
            is_reset = (not self._episode_open) if forced_reset is None else bool(forced_reset)
            if self._raw_compressor is None:
                _flatten_values(obs, leaves)
                return act, leaves, [], is_reset, rew, terminated, truncated, info
            cobs = self._raw_compressor.compress_obs(act, obs, is_reset)
        _flatten_values(cobs["obs"], leaves)
        hist_rows = [np.asarray(r) for r in cobs["hist"]]
        if self.layout.act_buf_len > 0:
            if is_reset:
                buf = cobs.get("act_buf")
                if buf is None:
                    raise ConfigError(
                        "a reset sample came without its action buffer",
                        hint="the compressor and the memory must have the same act_buf_len",
                    )
                hist_rows.append(np.asarray(buf))
            else:
                hist_rows.append(np.asarray(act)[None])
        return act, leaves, hist_rows, is_reset, rew, terminated, truncated, info

    def _append_chunk(self, samples: Sequence[Any], resets: Sequence[bool] | None) -> None:
        decoded = []
        for i, sample in enumerate(samples):
            if not self._ready:
                self._init_structure(sample[1])
            d = self._decode(sample, None if resets is None else resets[i])
            if not d[3] and not self._episode_open:
                # a compressed sample whose episode's reset sample never arrived: its history cannot be rebuilt
                self.dropped_samples += 1
                if self.dropped_samples == 1:
                    logger.warning("dropping samples of an episode whose reset sample was never received")
                continue
            if not self._ready:
                self._allocate(d[0], d[1], d[2])
            decoded.append(d)
            self._episode_open = not (bool(d[5]) or bool(d[6]))
        if decoded:
            self._write(decoded)

    def _write(self, decoded: list[tuple[Any, ...]]) -> None:
        m = len(decoded)
        c = self.capacity
        k0 = self._head
        new_head = k0 + m
        new_tail = max(self._tail, new_head - c)
        is_reset = np.fromiter((d[3] for d in decoded), dtype=bool, count=m)

        # history rows: positions of each sample's newest row and its episode's floor
        newest = [np.empty(m, dtype=np.int64) for _ in self._hist]
        floors = [np.empty(m, dtype=np.int64) for _ in self._hist]
        blocks: list[list[np.ndarray]] = [[] for _ in self._hist]
        for h, hist in enumerate(self._hist):
            pos = hist.store.head
            floor = self._floors[h]
            n = hist.length
            for i, d in enumerate(decoded):
                rows = d[2][h]
                r = rows.shape[0]
                if d[3]:
                    if r not in (1, n):
                        raise ConfigError(f"a reset sample brings {r} rows of history {h}, expected 1 or {n}")
                    floor = pos
                elif r != 1:
                    raise ConfigError(f"a sample brings {r} rows of history {h}, expected 1")
                pos += r
                newest[h][i] = pos - 1
                floors[h][i] = floor
                blocks[h].append(rows)
            self._floors[h] = floor

        slots = (k0 + np.arange(m)) % c
        # rows still needed: those of the oldest sample kept (the previous observation of the oldest transition)
        for h, hist in enumerate(self._hist):
            if new_tail >= k0:
                nw, fl = newest[h][new_tail - k0], floors[h][new_tail - k0]
            else:
                s = new_tail % c
                nw, fl = hist.newest[s], hist.floor[s]
            block = np.concatenate(blocks[h]) if len(blocks[h]) > 1 else blocks[h][0]
            hist.store.reserve(max(int(nw) - (hist.length - 1), int(fl)), len(block))
            hist.store.write(block)
            hist.newest[slots] = newest[h]
            hist.floor[slots] = floors[h]

        for j, column in enumerate(self._leaves):
            column[slots] = np.stack([np.asarray(d[1][j]) for d in decoded])
        self._act[slots] = np.stack([np.asarray(d[0]) for d in decoded])
        self._rew[slots] = np.fromiter((float(d[4]) for d in decoded), dtype=np.float32, count=m)
        self._terminated[slots] = np.fromiter((bool(d[5]) for d in decoded), dtype=bool, count=m)
        self._truncated[slots] = np.fromiter((bool(d[6]) for d in decoded), dtype=bool, count=m)
        self._first[slots] = is_reset
        for i, d in enumerate(decoded):
            self._info[slots[i]] = d[7] if d[7] else None

        self._head, self._tail = new_head, new_tail
        self._pop_valid(new_tail)
        new_valid = k0 + np.flatnonzero(~is_reset)
        new_valid = new_valid[new_valid > new_tail]
        for lo, hi, src in _segments(self._vhead, len(new_valid), c):
            self._valid[lo:hi] = new_valid[src : src + hi - lo]
        self._vhead += len(new_valid)

    def _pop_valid(self, tail: int) -> None:
        """Forget valid transitions whose previous sample is gone (``k <= tail``)."""
        lo, hi = self._vtail, self._vhead
        while lo < hi:
            mid = (lo + hi) // 2
            if self._valid[mid % self.capacity] <= tail:
                lo = mid + 1
            else:
                hi = mid
        self._vtail = lo

    def __len__(self) -> int:
        return self._vhead - self._vtail

    @property
    def stored_samples(self) -> int:
        """Samples currently stored (transitions plus reset samples and the oldest one)."""
        return self._head - self._tail

    def nbytes(self) -> int:
        """Bytes held by the storage arrays (rings and history rows; info dicts not counted)."""
        if not self._ready:
            return 0
        arrays = [*self._leaves, self._act, self._scalars, self._first]
        arrays += [self._valid, self._info]
        for hist in self._hist:
            arrays += [hist.store.rows, hist.newest, hist.floor]
        return int(sum(a.nbytes for a in arrays))

    # -- gathering -----------------------------------------------------------------------------------------------
    def _positions(self, indices: np.ndarray, check: bool = True) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if check and indices.size and (indices.min() < 0 or indices.max() >= n):
            raise IndexError(f"transition index out of range(0, {n})")
        return self._valid[(self._vtail + indices) % self.capacity]

    def _gather(
        self, positions: np.ndarray, alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None
    ) -> dict:
        """Numpy arrays of the transitions ending at absolute sample positions ``positions`` (into arrays from
        ``alloc(shape, dtype)`` when given, e.g. pinned memory)."""
        c = self.capacity
        new_slots = positions % c
        prev_slots = new_slots - 1
        prev_slots[prev_slots < 0] += c
        b = len(positions)

        def take(src: np.ndarray, slots: np.ndarray) -> np.ndarray:
            if alloc is None:
                return src.take(slots, axis=0)
            return src.take(slots, axis=0, out=alloc((b, *src.shape[1:]), src.dtype), mode="clip")

        prev_leaves = [take(col, prev_slots) for col in self._leaves]
        new_leaves = [take(col, new_slots) for col in self._leaves]
        windows = []
        for hist in self._hist:
            n = hist.length
            newest = hist.newest[new_slots]
            floor = hist.floor[new_slots]
            rows = np.maximum(newest[:, None] + np.arange(-n, 1)[None, :], floor[:, None])
            out = None if alloc is None else alloc((b, n + 1, *hist.store.row_shape), hist.store.dtype)
            windows.append(hist.store.take(rows, out=out))
        scalars = take(self._scalars, new_slots)
        return {
            "prev": prev_leaves,
            "new": new_leaves,
            "windows": windows,
            "act": take(self._act, new_slots),
            "scalars": scalars,
            "rew": scalars[:, 0],
            "terminated": scalars[:, 1],
            "truncated": scalars[:, 2],
            "slots": new_slots,
        }

    def _hist_views(self, windows: list[np.ndarray], side: int, batched: bool) -> list[Any]:
        views = []
        for hist, w in zip(self._hist, windows, strict=True):
            n = hist.length
            views.append(w[:, side : side + n] if batched else w[side : side + n])
        return views

    def _check_crc(self, g: dict[str, Any]) -> None:
        for i, slot in enumerate(g["slots"]):
            row_prev = [x[i] for x in g["prev"]]
            row_new = [x[i] for x in g["new"]]
            wins = [w[i] for w in g["windows"]]
            prev_obs = _assemble(self._structure, row_prev, self._hist_views(wins, 0, False), False)
            new_obs = _assemble(self._structure, row_new, self._hist_views(wins, 1, False), False)
            info = self._info[slot] or {}
            check_transition_crc(
                prev_obs, g["act"][i], g["rew"][i], new_obs, g["terminated"][i], g["truncated"][i], info
            )

    def get_transition(self, item: int) -> tuple[Any, ...]:
        g = self._gather(self._positions(np.array([item])))
        wins = [w[0] for w in g["windows"]]
        prev_obs = _assemble(self._structure, [x[0] for x in g["prev"]], self._hist_views(wins, 0, False), False)
        new_obs = _assemble(self._structure, [x[0] for x in g["new"]], self._hist_views(wins, 1, False), False)
        info = self._info[g["slots"][0]] or {}
        return (
            prev_obs,
            g["act"][0],
            float(g["rew"][0]),
            new_obs,
            bool(g["terminated"][0]),
            bool(g["truncated"][0]),
            info,
        )

    def _make_batch(self, positions: np.ndarray) -> tuple[Any, ...]:
        # pinned tensors must stay owned by torch's host allocator (it keeps them alive until the copy is done)
        owners: dict[int, torch.Tensor] = {}

        def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            t = torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], pin_memory=True)
            view = t.numpy()
            owners[id(view)] = t
            return view

        g = self._gather(positions, alloc if self.pin_memory else None)
        if self.crc_debug:
            self._check_crc(g)

        def convert(array: np.ndarray, float32: bool = False) -> torch.Tensor:
            t = owners.get(id(array))
            return self._to_device(torch.from_numpy(array) if t is None else t, float32)

        prev = [convert(x) for x in g["prev"]]
        new = [convert(x) for x in g["new"]]
        windows = [convert(w) for w in g["windows"]]
        obs = _assemble(self._structure, prev, self._hist_views(windows, 0, True), True)
        next_obs = _assemble(self._structure, new, self._hist_views(windows, 1, True), True)
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
        return self._make_batch(self._positions(np.asarray(indices, dtype=np.int64)))

    def sample(self) -> tuple[Any, ...]:
        """One batch ``(obs, act, rew, next_obs, terminated, truncated)``, gathered with vectorised indexing."""
        if self.sample_preprocessor is not None:
            return super().sample()
        if len(self) == 0:
            raise IndexError("cannot sample from an empty memory")
        if not self._prefetch:
            return self._make_batch(self._positions(self.sample_indices(), check=False))
        if self._pending is None:
            batch = self._make_batch(self._positions(self.sample_indices(), check=False))
        else:
            future, _ = self._pending
            self._pending = None
            batch = future.result()
        state = self.rng.bit_generator.state
        positions = self._positions(self.sample_indices(), check=False)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmrl-prefetch")
        self._pending = (self._executor.submit(self._make_batch, positions), state)
        return batch

    def _drop_prefetch(self) -> None:
        """Forget the batch being prefetched (the memory is about to change) and rewind the sampler to before it."""
        if self._pending is None:
            return
        future, state = self._pending
        self._pending = None
        try:
            future.result()
        except Exception:  # noqa: BLE001 - the batch is discarded anyway; sample() would raise again if it matters
            logger.debug("discarded prefetched batch raised", exc_info=True)
        self.rng.bit_generator.state = state

    def close(self) -> None:
        """Stop the prefetch thread."""
        self._drop_prefetch()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- datasets and checkpoints -------------------------------------------------------------------------------
    def observations(self, positions: np.ndarray) -> Any:
        """Full observations (batched numpy arrays, histories rebuilt) of the samples at absolute positions."""
        slots = np.asarray(positions, dtype=np.int64) % self.capacity
        leaves = [np.take(col, slots, axis=0) for col in self._leaves]
        stacks = []
        for hist in self._hist:
            n = hist.length
            rows = np.maximum(hist.newest[slots][:, None] + np.arange(1 - n, 1)[None, :], hist.floor[slots][:, None])
            stacks.append(hist.store.take(rows))
        return _assemble(self._structure, leaves, stacks, True)

    def _dataset_arrays(self) -> dict[str, np.ndarray]:
        from tmrl_core.memory.dataset import DATASET_FORMAT, DATASET_VERSION, _meta_array

        n = self.stored_samples
        if n == 0:
            raise ConfigError("cannot write a dataset from an empty memory")
        positions = np.arange(self._tail, self._head)
        columns: list[list[np.ndarray]] = []
        structure = None
        for lo in range(0, n, _CHUNK):
            flat: list[Any] = []
            structure = _flatten(self.observations(positions[lo : lo + _CHUNK]), flat)
            if not columns:
                columns = [[] for _ in flat]
            for column, leaf in zip(columns, flat, strict=True):
                column.append(np.ascontiguousarray(leaf))
        slots = positions % self.capacity
        reset = self._first[slots].copy()
        reset[0] = True  # the oldest stored sample has no predecessor left
        arrays = {
            "meta": _meta_array(
                {"format": DATASET_FORMAT, "version": DATASET_VERSION, "samples": n, "structure": structure}
            ),
            "act": self._act[slots],
            "rew": self._rew[slots],
            "terminated": self._terminated[slots] > 0,
            "truncated": self._truncated[slots] > 0,
            "reset": reset,
        }
        for j, column in enumerate(columns):
            arrays[f"obs.{j}"] = np.concatenate(column)
        return arrays

    def state_dict(self) -> dict[str, Any]:
        """The stored samples as arrays and plain data (see ``docs/memory.md``); the sampler's RNG state included."""
        self._drop_prefetch()
        from tmrl_core.memory.persistence import ring_state_dict

        return ring_state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._drop_prefetch()
        from tmrl_core.memory.persistence import load_ring_state

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


def check_state_format(state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError("not a RingMemory state", hint="was the checkpoint written by another memory?")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"RingMemory state version {state.get('version')} is not supported")
