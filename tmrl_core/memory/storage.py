"""``RingStorage``: the samples of a replay memory in preallocated rings (a part of RingMemory, numpy only).

Samples live in ring arrays of ``capacity`` rows, one array per observation leaf (see
:mod:`tmrl_core.memory.structure`), plus the action, reward, terminated, truncated, a reset flag and the info dict;
they are allocated from the first sample. Samples are addressed by an absolute counter ``k`` (slot ``k % capacity``),
so trimming the oldest samples is moving a counter. Histories (the last K frames, rtgym's action buffer) are kept in
:class:`~tmrl_core.memory.rows.History` row stores, one entry written once; a reset sample that brings its whole
history (rtgym with ``reset_act_buf=False``) sets its episode's floor at its first row.

*Transition* ``i`` (``0 <= i < len(storage)``) is the ``i``-th valid transition, oldest first: a sample whose
predecessor is still stored and which is not a reset sample; :meth:`RingStorage.transition_positions` maps
transition indices to absolute positions, :meth:`RingStorage.gather` gathers the arrays of transitions with one
``take`` per array, :meth:`RingStorage.observations` rebuilds full observations.

:meth:`RingStorage.state_dict` / :meth:`RingStorage.load_state_dict` hold exactly the stored samples (arrays and plain
data; see :mod:`tmrl_core.memory.persistence` for the checkpoint format around them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tmrl_core.compression import HistoryCompressor, HistoryLayout, is_history_compressed
from tmrl_core.errors import ConfigError
from tmrl_core.memory.rows import History, ring_read, ring_segments, ring_write
from tmrl_core.memory.structure import assemble, check_structure, flatten, flatten_values

logger = logging.getLogger("tmrl_core.memory.ring")

#: Samples decoded and written per step of ``append`` (bounds the temporary memory of huge buffers).
CHUNK = 4096

#: ``alloc(shape, dtype) -> array``: where :meth:`RingStorage.gather` writes (e.g. pinned memory)
Allocator = Callable[[tuple[int, ...], np.dtype], np.ndarray]


class RingStorage:
    """Preallocated rings for ``capacity`` samples (``capacity - 1`` transitions; see the module docstring).

    Args:
        capacity: samples kept (the memory's ``memory_size + 1``).
        act_buf_len: observations end with rtgym's action buffer of this many actions.
        history_index: top-level observation indices of histories to store once per entry.
    """

    def __init__(self, capacity: int, act_buf_len: int = 0, history_index: int | Sequence[int] | None = None) -> None:
        if capacity < 2:
            raise ConfigError(f"a ring storage needs a capacity >= 2, got {capacity}")
        self.capacity = int(capacity)
        self.layout = HistoryLayout(act_buf_len, history_index)
        # raw samples are compressed on arrival, so that raw and compressed samples are stored alike
        self._compressor = HistoryCompressor(act_buf_len, history_index) if self.layout.active else None
        #: samples thrown away because their history could not be rebuilt (see ``docs/memory.md``)
        self.dropped_samples = 0
        #: True between a sample that is not the end of an episode and the next one
        self.episode_open = False
        #: the observation structure (learnt from the first sample), and the length of each history
        self.structure: list[Any] | None = None
        self.hist_lengths: list[int] = []
        self.leaves: list[np.ndarray] = []
        self.histories: list[History] = []
        self._floors: list[int] = []
        self._head = 0  # absolute position of the next sample
        self._tail = 0  # absolute position of the oldest stored sample
        self._valid = np.zeros(self.capacity, dtype=np.int64)  # ring of the positions of valid transitions
        self._vhead = 0
        self._vtail = 0

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the first sample has been stored (arrays allocated, structure known)."""
        return self.structure is not None

    @property
    def head(self) -> int:
        """Absolute position of the next sample."""
        return self._head

    @property
    def tail(self) -> int:
        """Absolute position of the oldest stored sample."""
        return self._tail

    def __len__(self) -> int:
        return self._vhead - self._vtail

    @property
    def stored_samples(self) -> int:
        """Samples currently stored (transitions plus reset samples and the oldest one)."""
        return self._head - self._tail

    def nbytes(self) -> int:
        """Bytes held by the arrays (rings and history rows; info dicts not counted)."""
        if not self.ready:
            return 0
        arrays = [*self.leaves, self.act, self.scalars, self.first, self._valid, self.info]
        return int(sum(a.nbytes for a in arrays) + sum(h.nbytes() for h in self.histories))

    def transition_positions(self, indices: np.ndarray, check: bool = True) -> np.ndarray:
        """Absolute positions of the samples that end transitions ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if check and indices.size and (indices.min() < 0 or indices.max() >= n):
            raise IndexError(f"transition index out of range(0, {n})")
        return self._valid[(self._vtail + indices) % self.capacity]

    def gather(self, positions: np.ndarray, alloc: Allocator | None = None) -> dict[str, Any]:
        """Numpy arrays of the transitions ending at absolute ``positions`` (into arrays from ``alloc`` when given).

        Keys: ``prev`` and ``new`` (the leaves of the previous and the new observation), ``windows`` (per history,
        ``K + 1`` rows: the previous observation's history is ``[:, :K]``, the new one's ``[:, 1:]``; see
        :meth:`hist_views`), ``act``, ``scalars`` (reward, terminated, truncated as float32 columns) and their views
        ``rew``, ``terminated``, ``truncated``, and ``slots``.
        """
        c = self.capacity
        new_slots = positions % c
        prev_slots = new_slots - 1
        prev_slots[prev_slots < 0] += c
        b = len(positions)

        def take(src: np.ndarray, slots: np.ndarray) -> np.ndarray:
            if alloc is None:
                return src.take(slots, axis=0)
            return src.take(slots, axis=0, out=alloc((b, *src.shape[1:]), src.dtype), mode="clip")

        windows = []
        for hist in self.histories:
            out = None if alloc is None else alloc((b, hist.length + 1, *hist.store.row_shape), hist.store.dtype)
            windows.append(hist.windows(new_slots, extra=1, out=out))
        scalars = take(self.scalars, new_slots)
        return {
            "prev": [take(col, prev_slots) for col in self.leaves],
            "new": [take(col, new_slots) for col in self.leaves],
            "windows": windows,
            "act": take(self.act, new_slots),
            "scalars": scalars,
            "rew": scalars[:, 0],
            "terminated": scalars[:, 1],
            "truncated": scalars[:, 2],
            "slots": new_slots,
        }

    def hist_views(self, windows: Sequence[Any], side: int, batched: bool) -> list[Any]:
        """The histories of the previous (``side=0``) or new (``side=1``) observation in :meth:`gather`'s windows."""
        views = []
        for hist, w in zip(self.histories, windows, strict=True):
            n = hist.length
            views.append(w[:, side : side + n] if batched else w[side : side + n])
        return views

    def transition(self, gathered: dict[str, Any], i: int) -> tuple[Any, ...]:
        """Transition ``i`` of :meth:`gather`'s result as numpy data ``(obs, act, rew, next_obs, terminated,
        truncated, info)``."""
        assert self.structure is not None
        wins = [w[i] for w in gathered["windows"]]
        prev_obs = assemble(self.structure, [x[i] for x in gathered["prev"]], self.hist_views(wins, 0, False), False)
        new_obs = assemble(self.structure, [x[i] for x in gathered["new"]], self.hist_views(wins, 1, False), False)
        return (
            prev_obs,
            gathered["act"][i],
            float(gathered["rew"][i]),
            new_obs,
            bool(gathered["terminated"][i]),
            bool(gathered["truncated"][i]),
            self.info[gathered["slots"][i]] or {},
        )

    def observations(self, positions: np.ndarray) -> Any:
        """Full observations (batched numpy arrays, histories rebuilt) of the samples at absolute ``positions``."""
        assert self.structure is not None
        slots = np.asarray(positions, dtype=np.int64) % self.capacity
        leaves = [np.take(col, slots, axis=0) for col in self.leaves]
        return assemble(self.structure, leaves, [h.windows(slots) for h in self.histories], True)

    # -- writing ---------------------------------------------------------------------------------------------------
    def append(self, samples: Sequence[Any], resets: Sequence[bool] | None = None) -> None:
        """Store samples ``(act, obs, rew, terminated, truncated, info)``, raw or history-compressed; ``resets``
        (optional, raw samples) says which start an episode (datasets); by default a raw sample starts one when
        the previous one ended an episode."""
        chunk = min(CHUNK, self.capacity)  # a chunk never writes a slot twice
        for lo in range(0, len(samples), chunk):
            self._append_chunk(samples[lo : lo + chunk], None if resets is None else resets[lo : lo + chunk])

    def _learn_structure(self, obs: Any) -> None:
        """Learn the observation's structure (and history lengths) from the first sample."""
        layout = self.layout
        if is_history_compressed(obs):
            if not layout.active:
                raise ConfigError(
                    "this memory received history-compressed samples but has no act_buf_len/history_index",
                    hint="give the memory the same component options as the compressor",
                )
            kept_leaves: list[Any] = []
            kept_nodes = [flatten(v, kept_leaves) for v in obs["obs"]]
            lengths = [int(n) for n in obs["hist_len"]]
            hist_idx, _ = layout.resolve(len(kept_nodes) + len(lengths) + layout.act_buf_len)
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
        elif layout.active:
            hist_idx, kept = layout.check(obs)
            leaves: list[Any] = []
            nodes = [None] * (len(obs) - layout.act_buf_len)
            for i in kept:
                nodes[i] = flatten(obs[i], leaves)
            for c, i in enumerate(hist_idx):
                nodes[i] = ["hist", c]
            lengths = [int(np.shape(obs[i])[0]) for i in hist_idx]
        else:
            self._pending_structure: tuple[list[Any], list[int]] = (flatten(obs, []), [])
            return
        nodes.extend(["actbuf", j] for j in range(layout.act_buf_len))
        self._pending_structure = (["tuple", nodes], lengths + ([layout.act_buf_len] if layout.act_buf_len else []))

    def _allocate(self, act: Any, leaves: list[Any], hist_rows: list[np.ndarray]) -> None:
        c = self.capacity
        self.structure, self.hist_lengths = self._pending_structure
        self.leaves = [np.empty((c, *np.shape(x)), dtype=np.asarray(x).dtype) for x in leaves]
        act = np.asarray(act)
        self.act = np.empty((c, *act.shape), dtype=act.dtype)
        self._set_scalars(np.zeros((c, 3), dtype=np.float32))
        self.first = np.zeros(c, dtype=bool)
        self.info = np.full(c, None, dtype=object)
        self.histories = [
            History(n, rows.shape[1:], rows.dtype, c) for n, rows in zip(self.hist_lengths, hist_rows, strict=True)
        ]
        self._floors = [0] * len(self.histories)

    def _set_scalars(self, scalars: np.ndarray) -> None:
        # reward, terminated, truncated side by side: batches gather the three at once, already as float32
        self.scalars = scalars
        self.rew, self.terminated, self.truncated = (scalars[:, j] for j in range(3))

    def _decode(self, sample: Any, forced_reset: bool | None) -> tuple[Any, ...]:
        """``(act, leaves, hist_rows, is_reset, rew, terminated, truncated, info)`` of one sample."""
        act, obs, rew, terminated, truncated, info = sample
        leaves: list[Any] = []
        if is_history_compressed(obs):
            is_reset = bool(obs["reset"])
            cobs = obs
        else:
            is_reset = (not self.episode_open) if forced_reset is None else bool(forced_reset)
            if self._compressor is None:
                flatten_values(obs, leaves)
                return act, leaves, [], is_reset, rew, terminated, truncated, info
            cobs = self._compressor.compress_obs(act, obs, is_reset)
        flatten_values(cobs["obs"], leaves)
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
            if not self.ready:
                self._learn_structure(sample[1])
            d = self._decode(sample, None if resets is None else resets[i])
            if not d[3] and not self.episode_open:
                # a compressed sample whose episode's reset sample never arrived: its history cannot be rebuilt
                self.dropped_samples += 1
                if self.dropped_samples == 1:
                    logger.warning("dropping samples of an episode whose reset sample was never received")
                continue
            if not self.ready:
                self._allocate(d[0], d[1], d[2])
            decoded.append(d)
            self.episode_open = not (bool(d[5]) or bool(d[6]))
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
        newest = [np.empty(m, dtype=np.int64) for _ in self.histories]
        floors = [np.empty(m, dtype=np.int64) for _ in self.histories]
        blocks: list[list[np.ndarray]] = [[] for _ in self.histories]
        for h, hist in enumerate(self.histories):
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
        for h, hist in enumerate(self.histories):
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

        for j, column in enumerate(self.leaves):
            column[slots] = np.stack([np.asarray(d[1][j]) for d in decoded])
        self.act[slots] = np.stack([np.asarray(d[0]) for d in decoded])
        self.rew[slots] = np.fromiter((float(d[4]) for d in decoded), dtype=np.float32, count=m)
        self.terminated[slots] = np.fromiter((bool(d[5]) for d in decoded), dtype=bool, count=m)
        self.truncated[slots] = np.fromiter((bool(d[6]) for d in decoded), dtype=bool, count=m)
        self.first[slots] = is_reset
        for i, d in enumerate(decoded):
            self.info[slots[i]] = d[7] if d[7] else None

        self._head, self._tail = new_head, new_tail
        self._pop_valid(new_tail)
        new_valid = k0 + np.flatnonzero(~is_reset)
        new_valid = new_valid[new_valid > new_tail]
        for lo, hi, src in ring_segments(self._vhead, len(new_valid), c):
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

    # -- state ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The stored samples, oldest first, as ``{"meta": plain data, "arrays": {name: array}, "infos": list}``.

        ``meta``: ``ready``, ``act_buf_len``, ``head``, ``tail``, ``episode_open``, ``floors``, ``dropped_samples``
        and, once ready, ``structure``, ``hist_lengths`` and per history ``{"first_row", "head"}``. ``arrays``:
        ``leaf.J``, ``act``, ``rew``, ``terminated``, ``truncated``, ``first``, ``hist.C.newest``, ``hist.C.floor``
        (one row per stored sample) and ``hist.C.rows`` (history ``C``'s rows from ``first_row`` to ``head``).
        ``infos``: the info dict (or None) of each stored sample, or None when there is none.
        """
        meta: dict[str, Any] = {
            "ready": self.ready,
            "act_buf_len": self.layout.act_buf_len,
            "head": self._head,
            "tail": self._tail,
            "episode_open": self.episode_open,
            "floors": list(self._floors),
            "dropped_samples": self.dropped_samples,
        }
        state: dict[str, Any] = {"meta": meta, "arrays": {}, "infos": None}
        if not self.ready:
            return state
        meta["structure"] = self.structure
        meta["hist_lengths"] = list(self.hist_lengths)
        tail, n = self._tail, self._head - self._tail
        arrays: dict[str, np.ndarray] = state["arrays"]
        for j, column in enumerate(self.leaves):
            arrays[f"leaf.{j}"] = ring_read(column, tail, n)
        arrays["act"] = ring_read(self.act, tail, n)
        arrays["rew"] = ring_read(self.rew, tail, n)
        arrays["first"] = ring_read(self.first, tail, n)
        arrays["terminated"] = ring_read(self.terminated, tail, n) > 0
        arrays["truncated"] = ring_read(self.truncated, tail, n) > 0
        meta["hist"] = []
        tail_slot = self._tail % self.capacity
        for h, hist in enumerate(self.histories):
            first_row = hist.store.head if self._head == self._tail else hist.oldest_row(tail_slot)
            rows = hist.store.state_dict(first_row)
            meta["hist"].append({"first_row": rows["first_row"], "head": rows["head"]})
            arrays[f"hist.{h}.newest"] = ring_read(hist.newest, tail, n)
            arrays[f"hist.{h}.floor"] = ring_read(hist.floor, tail, n)
            arrays[f"hist.{h}.rows"] = rows["rows"]
        infos = ring_read(self.info, tail, n)
        if any(info is not None for info in infos):
            state["infos"] = list(infos)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with a :meth:`state_dict` (possibly of another capacity: the newest samples that fit
        are kept).

        Raises:
            ValueError, KeyError: the state does not fit this storage or is inconsistent (nothing is changed then).
        """
        meta, arrays = state["meta"], state["arrays"]
        if int(meta["act_buf_len"]) != self.layout.act_buf_len:
            raise ValueError(
                f"the saved memory has act_buf_len={meta['act_buf_len']}, this one {self.layout.act_buf_len}"
            )
        head, tail = int(meta["head"]), int(meta["tail"])
        if not 0 <= tail <= head:
            raise ValueError(f"bad sample counters: tail {tail}, head {head}")
        floors = [int(f) for f in meta["floors"]]
        dropped = int(meta["dropped_samples"])
        if dropped < 0:
            raise ValueError(f"negative dropped_samples {dropped}")
        if not meta["ready"]:
            self.structure, self.hist_lengths, self.leaves, self.histories = None, [], [], []
            self._head = self._tail = head
            self._vhead = self._vtail = 0
            self.episode_open, self.dropped_samples, self._floors = bool(meta["episode_open"]), dropped, floors
            return
        c = self.capacity
        skip = max(0, (head - tail) - c)
        tail += skip
        keep = slice(skip, None)
        structure = meta["structure"]
        hist_lengths = [int(n) for n in meta["hist_lengths"]]
        leaves = [np.asarray(arrays[f"leaf.{j}"])[keep] for j in range(_count(arrays, "leaf."))]
        columns = {name: np.asarray(arrays[name])[keep] for name in ("act", "rew", "terminated", "truncated", "first")}
        n_samples = head - tail
        if any(len(a) != n_samples for a in [*leaves, *columns.values()]):
            raise ValueError("the saved memory's arrays do not have one row per stored sample")
        if len(floors) != len(hist_lengths) or len(meta["hist"]) != len(hist_lengths):
            raise ValueError("the saved memory's history counters do not match its histories")
        if any(n < 1 for n in hist_lengths):
            raise ValueError(f"history lengths must be >= 1, got {hist_lengths}")
        n_leaves, n_actbuf = check_structure(structure, histories=len(hist_lengths))
        if n_leaves != len(leaves) or n_actbuf != self.layout.act_buf_len:
            raise ValueError(
                f"the saved structure has {n_leaves} leaves and {n_actbuf} action buffer entries, "
                f"the arrays {len(leaves)} and the memory {self.layout.act_buf_len}"
            )
        histories = []
        for h, n in enumerate(hist_lengths):
            hist = History(n, (), np.uint8, c)
            hmeta = meta["hist"][h]
            hist.store.load_state_dict(
                {"first_row": hmeta["first_row"], "head": hmeta["head"], "rows": arrays[f"hist.{h}.rows"]},
                spare=n + 1,
            )
            newest = np.asarray(arrays[f"hist.{h}.newest"], dtype=np.int64)[keep]
            floor = np.asarray(arrays[f"hist.{h}.floor"], dtype=np.int64)[keep]
            if len(newest) != n_samples or len(floor) != n_samples:
                raise ValueError("the saved memory's history positions do not have one row per stored sample")
            # every row a stored sample's history reads must be among the saved rows
            first_row, store_head = int(hmeta["first_row"]), hist.store.head
            oldest = np.maximum(newest - (n - 1), floor)
            if n_samples and (oldest.min() < first_row or newest.max() >= store_head or (floor > newest).any()):
                raise ValueError(f"the saved positions of history {h} point outside its saved rows")
            histories.append((hist, newest, floor))
        infos = state.get("infos")
        if infos is not None and len(infos) != n_samples + skip:
            raise ValueError("the saved memory's info dicts do not have one entry per stored sample")

        # everything read and checked: replace the contents
        self.structure, self.hist_lengths = structure, hist_lengths
        self.leaves = []
        for leaf in leaves:
            column = np.empty((c, *leaf.shape[1:]), dtype=leaf.dtype)
            ring_write(column, tail, leaf)
            self.leaves.append(column)
        self.act = np.empty((c, *columns["act"].shape[1:]), dtype=columns["act"].dtype)
        ring_write(self.act, tail, columns["act"])
        self.first = np.zeros(c, dtype=bool)
        ring_write(self.first, tail, columns["first"])
        self._set_scalars(np.zeros((c, 3), dtype=np.float32))
        for name in ("rew", "terminated", "truncated"):
            ring_write(getattr(self, name), tail, columns[name])
        self.info = np.full(c, None, dtype=object)
        if infos is not None:
            saved_infos = np.empty(n_samples, dtype=object)
            saved_infos[:] = [info if info else None for info in infos[skip:]]
            ring_write(self.info, tail, saved_infos)
        self.histories = []
        for hist, newest, floor in histories:
            ring_write(hist.newest, tail, newest)
            ring_write(hist.floor, tail, floor)
            self.histories.append(hist)
        self._floors = floors
        self.episode_open = bool(meta["episode_open"])
        self.dropped_samples = int(meta["dropped_samples"])
        self._head, self._tail = head, tail
        valid = np.arange(tail, head)[~columns["first"].astype(bool)]
        valid = valid[valid > tail]
        self._valid[: len(valid)] = valid
        self._vtail, self._vhead = 0, len(valid)


def _count(arrays: dict[str, Any], prefix: str) -> int:
    n = 0
    while f"{prefix}{n}" in arrays:
        n += 1
    return n
