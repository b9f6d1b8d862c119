"""The Buffer: samples a worker collected, with its episode statistics, sent to the trainer in one message."""

from __future__ import annotations

from typing import Any


class Buffer:
    """A list of (compressed) samples ``(act, obs, rew, terminated, truncated, info)`` and episode statistics.

    Attributes:
        memory: the samples, oldest first.
        maxlen: the most samples kept; older ones are dropped (and counted in ``dropped``).
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
            self.dropped += overflow

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
        self.dropped += other.dropped
        return self

    def stats(self) -> dict[str, float | int | None]:
        return {
            "train_return": self.stat_train_return,
            "test_return": self.stat_test_return,
            "train_steps": self.stat_train_steps,
            "test_steps": self.stat_test_steps,
            "train_timeouts": self.stat_train_timeouts,
        }
