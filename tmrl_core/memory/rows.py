"""History row stores: each frame (or action) of a history written once, histories rebuilt by index arithmetic.

A :class:`RowStore` is a growable ring of rows addressed by an absolute position ``p`` (slot ``p % capacity``). A
:class:`History` pairs one with two integers per sample slot: the position of the sample's newest row and the
*floor* of its episode (the first row of the episode's stream). The history of a sample is
``rows[max(newest - (K - 1) + j, floor)]`` for ``j = 0..K-1``: before the floor it is padded with the first row,
as environments that repeat their first frame do. :meth:`History.windows` gathers it for many samples at once.

Both are parts of :class:`~tmrl_core.memory.RingMemory` and usable alone (numpy only).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ring_segments(start: int, n: int, capacity: int) -> list[tuple[int, int, int]]:
    """Contiguous ``(slot_lo, slot_hi, offset_in_block)`` pieces of ``n`` positions from ``start`` in a ring."""
    pieces = []
    done = 0
    while done < n:
        lo = (start + done) % capacity
        hi = min(capacity, lo + (n - done))
        pieces.append((lo, hi, done))
        done += hi - lo
    return pieces


def ring_read(array: np.ndarray, start: int, n: int) -> np.ndarray:
    """A copy of the ``n`` rows at absolute positions ``start, start + 1, ...`` of a ring (slot ``p % len(array)``),
    oldest first: one or two slice copies (``n <= len(array)``)."""
    pieces = [array[lo:hi] for lo, hi, _ in ring_segments(start, n, len(array))]
    if len(pieces) == 1:
        return pieces[0].copy()
    return np.concatenate(pieces) if pieces else array[:0].copy()


def ring_write(array: np.ndarray, start: int, block: np.ndarray) -> None:
    """Write ``block``'s rows at absolute positions ``start, start + 1, ...`` of a ring
    (``len(block) <= len(array)``)."""
    for lo, hi, src in ring_segments(start, len(block), len(array)):
        array[lo:hi] = block[src : src + hi - lo]


class RowStore:
    """Rows of one shape and dtype at absolute positions; grows when live rows would be overwritten.

    ``head`` is the position of the next row written.
    """

    def __init__(self, row_shape: tuple[int, ...], dtype: Any, capacity: int) -> None:
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
        """Append ``block``'s rows at ``head``."""
        n = len(block)
        skip = max(0, n - self.capacity)  # rows that the same block would overwrite are never needed
        start = self.head + skip
        for lo, hi, src in ring_segments(start, n - skip, self.capacity):
            self.rows[lo:hi] = block[skip + src : skip + src + hi - lo]
        self.head += n

    def take(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The rows at absolute ``positions`` (any shape), into ``out`` when given."""
        # mode="wrap" is the ring's modulo (positions are never negative)
        return self.rows.take(positions, axis=0, out=out, mode="wrap")

    def export(self, first: int) -> np.ndarray:
        """A copy of the rows from position ``first`` to ``head``."""
        return ring_read(self.rows, first, self.head - first)

    def state_dict(self, first: int) -> dict[str, Any]:
        """The rows from ``first`` on, with the counters to put them back."""
        return {"first_row": int(first), "head": int(self.head), "rows": self.export(first)}

    def load_state_dict(self, state: dict[str, Any], spare: int = 0) -> None:
        """Replace the contents with a :meth:`state_dict` (growing to hold it plus ``spare`` rows)."""
        rows = np.asarray(state["rows"])
        first, head = int(state["first_row"]), int(state["head"])
        if first < 0 or len(rows) != head - first:
            raise ValueError(f"{len(rows)} rows for positions {first} to {head}")
        self.row_shape, self.dtype = tuple(rows.shape[1:]), rows.dtype
        self.capacity = max(self.capacity, len(rows) + spare)
        self.rows = np.empty((self.capacity, *self.row_shape), dtype=self.dtype)
        ring_write(self.rows, first, rows)
        self.head = head


class History:
    """One history of ``length`` rows: its :class:`RowStore` and, per sample slot, the newest row and the floor."""

    def __init__(self, length: int, row_shape: tuple[int, ...], dtype: Any, capacity: int) -> None:
        self.length = int(length)
        self.store = RowStore(row_shape, dtype, capacity + self.length + 1)
        self.newest = np.zeros(capacity, dtype=np.int64)
        self.floor = np.zeros(capacity, dtype=np.int64)

    def oldest_row(self, slot: int) -> int:
        """The oldest row the sample in ``slot`` needs."""
        return int(max(self.newest[slot] - (self.length - 1), self.floor[slot]))

    def windows(self, slots: np.ndarray, extra: int = 0, out: np.ndarray | None = None) -> np.ndarray:
        """The histories of the samples in ``slots``, each with ``extra`` older rows first (``extra=1`` gives the
        previous sample's history and this one's in ``length + 1`` rows)."""
        offsets = np.arange(1 - self.length - extra, 1)
        rows = np.maximum(self.newest[slots][:, None] + offsets[None, :], self.floor[slots][:, None])
        return self.store.take(rows, out=out)

    def nbytes(self) -> int:
        return int(self.store.rows.nbytes + self.newest.nbytes + self.floor.nbytes)
