"""The queues every transport needs, written once: a bounded queue that drops (and counts) its oldest items, a slot
where the newest value wins, and the snapshot of a buffer that a worker hands to its transport.

None of them locks: each transport already guards its state with one condition variable, and these live under it.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tmrl_core.buffer import Buffer

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """First in, first out, bounded by the total ``weight`` of its items (samples, bytes...).

    :meth:`put` beyond ``limit`` drops the oldest items and returns them, so that the caller logs and counts them
    where it knows who sent them; the newest item is always kept, even alone over the limit (a single large buffer
    must still go through). :attr:`dropped` and :attr:`dropped_weight` count everything dropped so far.

    Args:
        limit: the most total weight kept.
        weight: an item's weight (default ``len``).
    """

    def __init__(self, limit: int, weight: Callable[[T], int] = len) -> None:  # type: ignore[assignment]
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        self.limit = limit
        self._weight = weight
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self.weight = 0
        self.dropped = 0
        self.dropped_weight = 0

    def put(self, item: T) -> list[T]:
        """Append ``item``; returns the oldest items dropped to stay within the limit (usually none)."""
        self._append(item)
        return self._drop_over_limit()

    def add(self, item: T) -> None:
        """Append ``item`` without dropping anything, for a producer that waited while the queue was :attr:`full`
        (it then exceeds the limit by at most this item)."""
        self._append(item)

    def put_back(self, item: T) -> None:
        """Return ``item`` to the front (a send failed): it goes first next time, whatever the limit."""
        size = self._weight(item)
        self._items.appendleft((item, size))
        self.weight += size

    def get(self) -> T:
        """Remove and return the oldest item (IndexError if empty)."""
        item, size = self._items.popleft()
        self.weight -= size
        return item

    def take_all(self) -> list[T]:
        """Remove and return every item, oldest first."""
        items = [item for item, _ in self._items]
        self._items.clear()
        self.weight = 0
        return items

    def extend_front(self, items: list[T]) -> list[T]:
        """Put ``items`` (oldest first) back before everything queued, then drop the oldest beyond the limit;
        returns the dropped ones."""
        for item in reversed(items):
            self.put_back(item)
        return self._drop_over_limit()

    @property
    def full(self) -> bool:
        """Whether the total weight reached the limit (a producer that can wait should)."""
        return self.weight >= self.limit

    def _drop_over_limit(self) -> list[T]:
        """Drop the oldest items while the total weight is over the limit (the newest always stays); returns them."""
        dropped = []
        while self.weight > self.limit and len(self._items) > 1:
            old, size = self._items.popleft()
            self.weight -= size
            self.dropped += 1
            self.dropped_weight += size
            dropped.append(old)
        return dropped

    def _append(self, item: T) -> None:
        size = self._weight(item)
        self._items.append((item, size))
        self.weight += size

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[T]:
        return (item for item, _ in self._items)


class NewestSlot(Generic[T]):
    """One value where the newest wins: :meth:`put` replaces a value not yet taken (counted in :attr:`skipped`), so a
    slow reader skips versions instead of queueing them (weights)."""

    def __init__(self) -> None:
        self._value: T | None = None
        self.skipped = 0

    def put(self, value: T) -> None:
        if self._value is not None:
            self.skipped += 1
        self._value = value

    def put_back(self, value: T) -> None:
        """Return a value whose delivery failed, unless a newer one arrived meanwhile (newer wins)."""
        if self._value is None:
            self._value = value

    def take(self) -> T | None:
        """The value (None if empty), emptying the slot."""
        value, self._value = self._value, None
        return value

    def peek(self) -> T | None:
        return self._value

    def __bool__(self) -> bool:
        return self._value is not None


class ReceivedBuffers:
    """What a trainer endpoint received and the training loop has not taken yet: at most ``max_samples`` samples and
    ``max_bytes`` bytes (encoded size). Nothing is dropped here: the reader waits while it is :attr:`full`, which
    is what pushes back on the senders. The sample bound also caps what one ``receive_samples`` call hands to the
    training loop, so that under a flood the loop keeps training between ingestions."""

    def __init__(self, max_samples: int, max_bytes: int) -> None:
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self._buffers: list[Buffer] = []
        self.samples = 0
        self.bytes = 0

    @property
    def full(self) -> bool:
        return bool(self._buffers) and (self.samples >= self.max_samples or self.bytes >= self.max_bytes)

    def put(self, buffer: Buffer, size: int) -> None:
        self._buffers.append(buffer)
        self.samples += len(buffer)
        self.bytes += size

    def take_all(self) -> list[Buffer]:
        buffers, self._buffers = self._buffers, []
        self.samples = self.bytes = 0
        return buffers


def worker_name(name: str) -> str:
    """``name`` as a buffer carries it (it becomes part of metric names at the trainer): the characters the codec
    refuses replaced, at most 64 of them."""
    return re.sub(r"[^A-Za-z0-9_.:#@-]", "_", name)[:64] or "worker"


class DropReports:
    """What a worker endpoint dropped and has not reported yet, reported with the next buffer it sends.

    A worker's drops reach the trainer's metrics inside a buffer that gets through (its ``dropped`` and
    ``dropped_at``), so that they are counted per worker and per place without a message kind of their own.
    """

    def __init__(self, worker: str) -> None:
        self.worker = worker_name(worker)
        self._pending = Buffer(maxlen=1)

    def lost(self, where: str, buffers: list[Buffer]) -> int:
        """Count ``buffers`` as dropped at ``where`` (their samples, and the drops they were reporting); returns
        their samples."""
        samples = 0
        for old in buffers:
            samples += len(old)
            self._pending.count_dropped(where, len(old), carried=old)
        return samples

    def stamp(self, buffer: Buffer) -> None:
        """Name the sender on ``buffer`` and move the unreported drops onto it."""
        buffer.worker = self.worker
        if self._pending.dropped:
            buffer.count_dropped(where="", samples=0, carried=self._pending)
            self._pending = Buffer(maxlen=1)


def snapshot(buffer: Buffer) -> Buffer:
    """A copy of ``buffer`` that its owner may go on appending to or clearing: the list of samples is copied (the
    samples themselves are not: workers never change a sample once appended), with ``dropped`` and the episode
    statistics."""
    copy = Buffer(maxlen=max(buffer.maxlen, len(buffer), 1))
    copy.memory = list(buffer.memory)
    copy.dropped, copy.dropped_at, copy.worker = buffer.dropped, dict(buffer.dropped_at), buffer.worker
    copy.stat_train_return, copy.stat_test_return = buffer.stat_train_return, buffer.stat_test_return
    copy.stat_train_steps, copy.stat_test_steps = buffer.stat_train_steps, buffer.stat_test_steps
    copy.stat_train_timeouts = buffer.stat_train_timeouts
    copy.stat_train_metrics, copy.stat_test_metrics = dict(buffer.stat_train_metrics), dict(buffer.stat_test_metrics)
    return copy
