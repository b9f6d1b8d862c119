"""``GenericTorchMemory``: the straightforward memory that works for any environment (no compressor)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tmrl_core import codec
from tmrl_core.buffer import Buffer
from tmrl_core.errors import CheckpointError
from tmrl_core.memory.base import TorchMemory


class GenericTorchMemory(TorchMemory):
    """Keeps raw samples in a list and rebuilds each transition from two consecutive samples.

    No decompression: pair it with the ``none`` compressor. Transitions into a reset sample are never sampled (they
    are not transitions), rather than replaced by a neighbour.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples: list[Any] = []
        self.done: list[bool] = []
        self._valid = np.empty(0, dtype=np.int64)

    def append_buffer(self, buffer: Buffer) -> None:
        self.samples.extend(buffer.memory)
        self.done.extend(bool(s[3] or s[4]) for s in buffer.memory)
        overflow = len(self.samples) - (self.memory_size + 1)
        if overflow > 0:
            del self.samples[:overflow]
            del self.done[:overflow]
        done = np.asarray(self.done, dtype=bool)
        # sample k closes a transition iff sample k-1 did not end its episode
        self._valid = np.flatnonzero(~done[:-1]) + 1

    def __len__(self) -> int:
        return len(self._valid)

    def get_transition(self, item: int) -> tuple[Any, ...]:
        k = int(self._valid[item])
        prev, cur = self.samples[k - 1], self.samples[k]
        act, new_obs, rew, terminated, truncated, info = cur
        return prev[1], act, rew, new_obs, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """The samples encoded with the wire codec (one uint8 array: samples must be codec values), the sampler's
        RNG state and the statistics."""
        return {
            "format": "tmrl-generic-memory",
            "version": 1,
            "samples": np.frombuffer(codec.encode(self.samples), dtype=np.uint8).copy(),
            "rng": json.dumps(self.rng.bit_generator.state),
            "total_samples": self.total_samples,
            "stats": {
                name: getattr(self, name)
                for name in ("stat_train_return", "stat_test_return", "stat_train_steps", "stat_test_steps")
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != "tmrl-generic-memory" or state.get("version") != 1:
            raise CheckpointError("not a GenericTorchMemory state", hint="was it written by another memory?")
        self.samples, self.done = [], []
        self.append_buffer(_AsBuffer(codec.decode(np.asarray(state["samples"], dtype=np.uint8).tobytes())))
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.total_samples = int(state["total_samples"])
        for name, value in state["stats"].items():
            setattr(self, name, value)


class _AsBuffer(Buffer):
    def __init__(self, samples: list[Any]) -> None:
        super().__init__(maxlen=max(1, len(samples)))
        self.memory = [tuple(s) for s in samples]
