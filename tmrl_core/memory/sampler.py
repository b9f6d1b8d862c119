"""``PrefetchSampler``: batches drawn from a memory, the next one gathered in a background thread (part of RingMemory).

It knows nothing of the storage: ``draw()`` picks what the next batch holds (e.g. transition positions, using ``rng``)
and ``make_batch(drawn)`` gathers it; both are given to :meth:`PrefetchSampler.sample`. With ``prefetch=True`` the next
batch is gathered while the caller trains on the current one, and the batches are the same as without prefetch: when the
memory is about to change, :meth:`PrefetchSampler.drop` forgets the batch in flight and rewinds ``rng`` to before it was
drawn, so the same indices are drawn again from the changed memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

logger = logging.getLogger("tmrl_core.memory.ring")

Drawn = TypeVar("Drawn")
Batch = TypeVar("Batch")


class PrefetchSampler(Generic[Drawn, Batch]):
    """``sample(draw, make_batch)`` returns ``make_batch(draw())``, prefetched one batch ahead when ``prefetch``.

    The functions are given at each call rather than kept: a sampler kept by a memory that held the memory's bound
    methods would make a reference cycle, and a dropped memory's arrays would wait for the garbage collector.
    """

    def __init__(self, rng: np.random.Generator, prefetch: bool = False) -> None:
        self.rng = rng
        self.prefetch = bool(prefetch)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[Batch], dict[str, Any]] | None = None

    def sample(self, draw: Callable[[], Drawn], make_batch: Callable[[Drawn], Batch]) -> Batch:
        """The next batch (``draw`` and ``make_batch`` must be the same at every call until :meth:`drop`)."""
        if not self.prefetch:
            return make_batch(draw())
        if self._pending is None:
            batch = make_batch(draw())
        else:
            future, _ = self._pending
            self._pending = None
            batch = future.result()
        state = self.rng.bit_generator.state
        drawn = draw()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmrl-prefetch")
        self._pending = (self._executor.submit(make_batch, drawn), state)
        return batch

    @property
    def in_flight(self) -> bool:
        """True while a prefetched batch waits to be returned."""
        return self._pending is not None

    def drop(self) -> None:
        """Forget the batch being prefetched (the memory is about to change) and rewind ``rng`` to before it."""
        if self._pending is None:
            return
        future, state = self._pending
        self._pending = None
        try:
            future.result()
        except Exception:  # the batch is discarded anyway; sample() would raise again if it matters
            logger.debug("discarded prefetched batch raised", exc_info=True)
        self.rng.bit_generator.state = state

    def close(self) -> None:
        """Drop the batch in flight and stop the thread."""
        self.drop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
