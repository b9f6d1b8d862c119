"""The built-in memories against the MemoryContract, with each compressor they pair with."""

from __future__ import annotations

from typing import Any

import gymnasium

from tmrl_core.memory import GenericTorchMemory, RingMemory
from tmrl_core.testing import MemoryContract
from tmrl_core.testing.image_env import SyntheticImageEnv, make_image_env


class _FlatEnv(gymnasium.ObservationWrapper):
    """Flat Box observations (the speed vector of the synthetic env)."""

    def __init__(self) -> None:
        super().__init__(SyntheticImageEnv(size=8, max_episode_steps=17, seed=5))
        self.observation_space = self.env.observation_space.spaces[0]

    def observation(self, observation: Any) -> Any:
        return observation[0]


class TestGenericMemory(MemoryContract):
    memory_cls = GenericTorchMemory


class TestRingMemoryRawTuples(MemoryContract):
    """Raw samples, nested-free tuple observations with a frame history stored as plain arrays."""

    memory_cls = RingMemory


class TestRingMemoryFlat(MemoryContract):
    memory_cls = RingMemory

    def make_env(self) -> gymnasium.Env:
        return _FlatEnv()


class TestRingMemoryFrameHistory(MemoryContract):
    """Frames de-duplicated by the history compressor."""

    memory_cls = RingMemory
    compressor = "history"
    component_options = {"history_index": 1}


class TestRingMemoryFrameHistoryRawSamples(MemoryContract):
    """The same memory options with uncompressed samples: the memory de-duplicates on arrival."""

    memory_cls = RingMemory
    component_options = {"history_index": 1}


class TestRingMemoryRealtimeImages(MemoryContract):
    """rtgym image env: frame history + action buffer of 2, carried over resets (reset_act_buf=False)."""

    memory_cls = RingMemory
    compressor = "history"
    component_options = {"history_index": 1, "act_buf_len": 2}
    n_steps = 300

    def make_env(self) -> gymnasium.Env:
        return make_image_env(history=4, act_buf_len=2, size=16, max_episode_steps=19, seed=7)
