"""The built-in memories against the MemoryContract, with each compressor they pair with."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest

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


# -- a lossy pair: observations travel and are kept as float16 -------------------------------------------------------
def _to_float16(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_to_float16(v) for v in value)
    arr = np.asarray(value)
    return arr.astype(np.float16) if arr.dtype == np.float32 else value


def _to_float32(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    arr = np.asarray(value)
    return arr.astype(np.float32) if arr.dtype == np.float16 else value


def float16_compressor(act: Any, obs: Any, rew: Any, terminated: Any, truncated: Any, info: Any) -> tuple:
    return act, _to_float16(obs), rew, terminated, truncated, info


class Float16Memory(GenericTorchMemory):
    """Half the bytes per float observation, at float16's precision."""

    def get_transition(self, item: int) -> tuple[Any, ...]:
        prev_obs, act, rew, new_obs, terminated, truncated, info = super().get_transition(item)
        return _to_float32(prev_obs), act, rew, _to_float32(new_obs), terminated, truncated, info


class TestLossyFloat16Pair(MemoryContract):
    memory_cls = "tests.test_memory_contract:Float16Memory"  # a path, as specs name factories
    tolerance = 1e-3

    def make_env(self) -> gymnasium.Env:
        return _FlatEnv()

    def make_compressor(self, env: gymnasium.Env) -> Any:
        return float16_compressor


def test_the_float16_pair_needs_its_tolerance() -> None:
    from tmrl_core.compression import CrcError, check_transition_crc
    from tmrl_core.testing.memory_contract import rollout

    env = _FlatEnv()
    buffers = rollout(env, 30, compressor=float16_compressor, seed=0)
    memory = Float16Memory(memory_size=1000, batch_size=4, crc_debug=False, seed=0)
    for buffer in buffers:
        memory.append(buffer)
    transitions = [memory.get_transition(i) for i in range(len(memory))]
    with pytest.raises(CrcError, match="obs"):
        for transition in transitions:
            check_transition_crc(*transition)
    for transition in transitions:
        check_transition_crc(*transition, rtol=1e-3, atol=1e-3)
    with pytest.raises(CrcError):
        check_transition_crc(*transitions[0], rtol=1e-6, atol=1e-6)
