"""The Buffer: samples a worker collected, with its episode statistics, sent to the trainer in one message."""

from __future__ import annotations

from typing import Any

#: Where samples are dropped, as the keys of :attr:`Buffer.dropped_at` (and of the ``samples_dropped/<worker>/<where>``
#: metrics): the worker's buffer beyond ``worker.buffers_maxlen``; the worker's transport queue of unsent buffers
#: beyond ``server.local_buffer_max_samples`` (server unreachable or slow); a buffer the worker could not send (over
#: ``server.max_message_bytes``, or not encodable); the server's queue beyond ``server.queue_bytes`` while no trainer
#: takes it.
DROPPED_IN_BUFFER = "buffer"
DROPPED_UNSENT = "unsent"
DROPPED_UNSENDABLE = "unsendable"
DROPPED_ON_SERVER = "server"


class Buffer:
    """A list of (compressed) samples ``(act, obs, rew, terminated, truncated, info)`` and episode statistics.

    Attributes:
        memory: the samples, oldest first.
        maxlen: the most samples kept; older ones are dropped (and counted in ``dropped``).
        dropped: samples dropped before they reached the trainer, reported with this buffer (the trainer adds them
            to its ``samples_dropped`` metrics).
        dropped_at: the same count by where it happened (see ``DROPPED_*``); its values sum to ``dropped`` at most.
        worker: the name of the worker that sent this buffer (set by its transport endpoint; None offline).
        stat_train_return / stat_test_return: return of the last finished training / test episode (or None).
        stat_train_steps / stat_test_steps: length of the last finished training / test episode (or None).
        stat_train_timeouts: time steps of the last finished training episode that timed out (real-time envs; None
            for the others).
        stat_train_metrics / stat_test_metrics: the environment's own metrics of that episode (``episode_metrics``,
            e.g. TrackMania's ``progress``), name -> float; empty when it has none.
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        self.memory: list[Any] = []
        self.maxlen = maxlen
        self.dropped = 0
        self.dropped_at: dict[str, int] = {}
        self.worker: str | None = None
        self.stat_train_return: float | None = None
        self.stat_test_return: float | None = None
        self.stat_train_steps: int | None = None
        self.stat_test_steps: int | None = None
        self.stat_train_timeouts: int | None = None
        self.stat_train_metrics: dict[str, float] = {}
        self.stat_test_metrics: dict[str, float] = {}

    def append_sample(self, sample: Any) -> None:
        self.memory.append(sample)
        overflow = len(self.memory) - self.maxlen
        if overflow > 0:
            del self.memory[:overflow]
            self.count_dropped(DROPPED_IN_BUFFER, overflow)

    def count_dropped(self, where: str, samples: int, carried: Buffer | None = None) -> None:
        """Report ``samples`` dropped at ``where`` with this buffer, and the drops that ``carried`` (a buffer that
        was itself dropped) was reporting."""
        if samples:
            self.dropped += samples
            self.dropped_at[where] = self.dropped_at.get(where, 0) + samples
        if carried is not None:
            self.dropped += carried.dropped
            for key, value in carried.dropped_at.items():
                self.dropped_at[key] = self.dropped_at.get(key, 0) + value

    def clear(self) -> None:
        self.memory = []

    def __len__(self) -> int:
        return len(self.memory)

    def __iadd__(self, other: Buffer) -> Buffer:
        for sample in other.memory:
            self.append_sample(sample)
        for stat in (
            "stat_train_return", "stat_test_return", "stat_train_steps", "stat_test_steps", "stat_train_timeouts"
        ):
            value = getattr(other, stat)
            if value is not None:
                setattr(self, stat, value)
        for stat in ("stat_train_metrics", "stat_test_metrics"):
            if getattr(other, stat):
                setattr(self, stat, dict(getattr(other, stat)))
        self.count_dropped(DROPPED_IN_BUFFER, 0, carried=other)
        return self

    def stats(self) -> dict[str, float | int | None]:
        return {
            "train_return": self.stat_train_return,
            "test_return": self.stat_test_return,
            "train_steps": self.stat_train_steps,
            "test_steps": self.stat_test_steps,
            "train_timeouts": self.stat_train_timeouts,
        }
