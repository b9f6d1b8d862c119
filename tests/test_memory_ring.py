"""RingMemory beyond the contract: agreement with GenericTorchMemory, wrap-around, prefetch, histories, formats."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from helpers import image_buffers

from tmrl_core.buffer import Buffer
from tmrl_core.compression import HistoryCompressor
from tmrl_core.memory import GenericTorchMemory, RingMemory
from tmrl_core.plugins import get_component
from tmrl_core.testing.image_env import FrameHistory, SyntheticImageEnv
from tmrl_core.testing.memory_contract import interleave, rollout


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    else:
        assert np.array_equal(np.asarray(a), np.asarray(b)), (a, b)


class NestedObs(gymnasium.ObservationWrapper):
    """(speed, (frame, speed[:1]), {"x": frame row, "flag": bool}): nested tuples and dicts."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        speed, frame = env.observation_space.spaces
        self.observation_space = gymnasium.spaces.Tuple(
            (
                speed,
                gymnasium.spaces.Tuple((frame, gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32))),
                gymnasium.spaces.Dict(
                    {
                        "x": gymnasium.spaces.Box(0, 255, frame.shape[1:], np.uint8),
                        "flag": gymnasium.spaces.MultiBinary(1),
                    }
                ),
            )
        )

    def observation(self, observation: Any) -> Any:
        speed, frame = observation
        return (speed, (frame, speed[:1].copy()), {"x": frame[0].copy(), "flag": np.array([speed[1] % 2 == 0])})


@pytest.fixture(scope="module")
def raw_buffers() -> list[Buffer]:
    """Two workers, raw samples of small frame histories, many short episodes."""
    workers = []
    for seed in (0, 1):
        env = FrameHistory(SyntheticImageEnv(size=8, max_episode_steps=9, terminate_prob=0.15, seed=seed), history=3)
        workers.append(rollout(env, 500, seed=seed))
    return interleave(*workers)


@pytest.mark.parametrize("memory_size", [100_000, 37, 1])
def test_ring_and_generic_memories_give_identical_transitions_and_batches(raw_buffers: list, memory_size: int) -> None:
    ring = RingMemory(memory_size=memory_size, batch_size=64, seed=7)
    generic = GenericTorchMemory(memory_size=memory_size, batch_size=64, seed=7)
    for buffer in raw_buffers:
        ring.append(buffer)
        generic.append(buffer)
        assert len(ring) == len(generic)
    for i in range(len(ring)):
        assert_same(ring.get_transition(i)[:6], generic.get_transition(i)[:6])
        assert (
            ring.get_transition(i)[6] is generic.get_transition(i)[6]
            or ring.get_transition(i)[6] == generic.get_transition(i)[6]
        )
    for _ in range(3):
        assert_same(ring.sample(), generic.sample())


def test_nested_tuple_and_dict_observations() -> None:
    env = NestedObs(FrameHistory(SyntheticImageEnv(size=8, max_episode_steps=7, seed=2), history=2))
    buffers = rollout(env, 200, seed=2)
    ring = RingMemory(memory_size=1000, batch_size=16, crc_debug=True, seed=3)
    generic = GenericTorchMemory(memory_size=1000, batch_size=16, seed=3)
    for buffer in buffers:
        ring.append(buffer)
        generic.append(buffer)
    batch = ring.sample()
    assert isinstance(batch[0][1], tuple) and isinstance(batch[0][2], dict)
    assert batch[0][2]["flag"].dtype == torch.float32  # bools become float32, as collate_transitions does
    assert_same(batch, generic.sample())


def test_terminated_and_truncated_are_kept_apart(raw_buffers: list) -> None:
    memory = RingMemory(memory_size=100_000, seed=0)
    for buffer in raw_buffers:
        memory.append(buffer)
    batch = memory.batch(np.arange(len(memory)))
    samples = [s for b in raw_buffers for s in b.memory]
    assert int(batch[4].sum()) == sum(1 for s in samples if s[3])
    assert int(batch[5].sum()) == sum(1 for s in samples if s[4])
    assert int(batch[4].sum()) > 0 and int(batch[5].sum()) > 0
    assert not torch.any((batch[4] > 0) & (batch[5] > 0))


def test_wraparound_is_exact_and_trims_in_constant_time(raw_buffers: list) -> None:
    memory = RingMemory(memory_size=20, crc_debug=True, history_index=1, seed=0)
    samples = []
    for buffer in raw_buffers:
        memory.append(buffer)
        samples.extend(buffer.memory)
        assert memory.stored_samples == min(len(samples), 21)
        newest = samples[-21:]
        first = [True] + [bool(a[3] or a[4]) for a in samples[:-1]]
        assert len(memory) == sum(1 for f in first[-21:][1:] if not f)
        memory.batch(np.arange(len(memory)))  # every stored transition rebuilt exactly (crc_debug)
    assert memory.storage.leaves[0].shape[0] == 21  # the ring never grew
    assert newest[-1][5]["tmrl_crc"]["step"] == memory.get_transition(len(memory) - 1)[6]["tmrl_crc"]["step"]


def test_episodes_longer_than_the_memory_keep_their_histories() -> None:
    buffers = image_buffers(200, seed=4, history=4, size=8, max_episode_steps=60, terminate_prob=0.0)
    memory = RingMemory(memory_size=5, crc_debug=True, history_index=1, seed=0)
    for buffer in buffers:
        for lo in range(0, len(buffer), 7):  # the trainer may get a long episode in pieces as well
            part = Buffer()
            part.memory = buffer.memory[lo : lo + 7]
            memory.append(part)
            if len(memory):
                memory.batch(np.arange(len(memory)))
    assert memory.storage.histories[0].store.capacity == 6 + 4 + 1  # one row per sample: the row store never grew


def test_short_episodes_with_carried_action_buffers_grow_the_action_rows() -> None:
    # 2-step episodes: every reset observation carries its whole action buffer (reset_act_buf=False)
    buffers = image_buffers(120, seed=5, act_buf_len=3, history=2, size=8, max_episode_steps=2)
    assert any(s[1]["act_buf"] is not None and len(s[1]["act_buf"]) == 3 for b in buffers for s in b.memory)
    memory = RingMemory(memory_size=30, crc_debug=True, act_buf_len=3, history_index=1, seed=0)
    for buffer in buffers:
        memory.append(buffer)
        memory.batch(np.arange(len(memory)))
    assert memory.storage.histories[-1].store.capacity > 31 + 3 + 1


def test_samples_of_an_episode_whose_reset_never_arrived_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    buffers = image_buffers(40, seed=6, history=3, size=8, max_episode_steps=10, terminate_prob=0.0)
    broken = Buffer()
    broken.memory = buffers[0].memory[4:]  # a worker buffer that overflowed and lost its episode's start
    memory = RingMemory(memory_size=1000, crc_debug=True, history_index=1, seed=0)
    with caplog.at_level(logging.WARNING):
        memory.append(broken)
    assert memory.dropped_samples == len(broken) and len(memory) == 0
    assert "never received" in caplog.text
    for buffer in buffers[1:]:
        memory.append(buffer)
    assert len(memory) == sum(len(b) - 1 for b in buffers[1:])
    memory.batch(np.arange(len(memory)))


def test_prefetch_gives_the_same_batches_as_no_prefetch(raw_buffers: list) -> None:
    plain = RingMemory(memory_size=300, batch_size=32, seed=11)
    prefetching = RingMemory(memory_size=300, batch_size=32, seed=11, prefetch=True)
    try:
        for i, buffer in enumerate(raw_buffers):
            plain.append(buffer)
            prefetching.append(buffer)  # an append discards the batch being prefetched
            for _ in range(i % 3):
                assert_same(plain.sample(), prefetching.sample())
        state = prefetching.state_dict()  # taken while a batch is being prefetched
        resumed = RingMemory(memory_size=300, batch_size=32, seed=0)
        resumed.load_state_dict(state)
        for _ in range(3):
            expected = plain.sample()
            assert_same(expected, prefetching.sample())
            assert_same(expected, resumed.sample())
    finally:
        prefetching.close()


def test_state_dict_through_a_checkpoint_file_into_a_smaller_memory(raw_buffers: list, tmp_path: Any) -> None:
    from tmrl_core.checkpoint import load_state, save_state

    memory = RingMemory(memory_size=400, batch_size=16, crc_debug=True, history_index=1, seed=2)
    for buffer in raw_buffers:
        memory.append(buffer)
    memory.stat_train_return = 3.5
    path = tmp_path / "memory.safetensors"
    save_state(path, {"memory": memory.state_dict()})
    state = load_state(path)["memory"]

    same = RingMemory(memory_size=400, batch_size=16, crc_debug=True, history_index=1, seed=99)
    same.load_state_dict(state)
    assert same.stat_train_return == 3.5 and same.total_samples == memory.total_samples
    for _ in range(3):
        assert_same(memory.sample(), same.sample())

    smaller = RingMemory(memory_size=50, batch_size=16, crc_debug=True, history_index=1, seed=2)
    smaller.load_state_dict(state)
    assert smaller.stored_samples == 51
    offset = len(memory) - len(smaller)
    for i in range(len(smaller)):
        assert_same(smaller.get_transition(i)[:6], memory.get_transition(offset + i)[:6])
    smaller.batch(np.arange(len(smaller)))  # infos (CRC records) came back through the codec
    # the resumed memory keeps receiving samples where the saved one stopped
    for buffer in raw_buffers[:3]:
        smaller.append(buffer)
    smaller.batch(np.arange(len(smaller)))


def test_empty_memory_state_round_trip() -> None:
    empty = RingMemory(memory_size=10)
    other = RingMemory(memory_size=10)
    other.load_state_dict(empty.state_dict())
    assert len(other) == 0


def test_bytes_per_transition_of_image_histories_is_about_one_frame() -> None:
    buffers = image_buffers(400, seed=8, act_buf_len=2, history=4, size=64, max_episode_steps=50)
    memory = RingMemory(memory_size=300, act_buf_len=2, history_index=1, seed=0)
    for buffer in buffers:
        memory.append(buffer)
    assert memory.stored_samples == 301
    assert memory.nbytes() / memory.memory_size <= 1.1 * 64 * 64


def test_batch_and_sample_preprocessors(raw_buffers: list) -> None:
    def flip(obs: Any, act: Any, rew: Any, next_obs: Any, terminated: Any, truncated: Any) -> Any:
        return obs, act, -rew, next_obs, terminated, truncated

    memory = RingMemory(memory_size=1000, batch_size=8, seed=1, batch_preprocessor=flip)
    reference = RingMemory(memory_size=1000, batch_size=8, seed=1)
    calls = []

    def per_sample(*transition: Any) -> Any:
        calls.append(1)
        return transition

    slow = RingMemory(memory_size=1000, batch_size=8, seed=1, sample_preprocessor=per_sample)
    for buffer in raw_buffers[:10]:
        for m in (memory, reference, slow):
            m.append(buffer)
    assert torch.equal(memory.sample()[2], -reference.sample()[2])
    slow.sample()
    assert len(calls) == 8


def test_default_memory_of_every_builtin_env_is_the_ring_memory(tmrl_home: Any) -> None:
    from tmrl_core.plugins import get_plugin_manager

    envs = get_plugin_manager().registry("env")
    for name in envs.names():
        spec = envs.get(name)
        if spec.plugin == "tmrl-core":
            assert get_component("memory", spec.memory).load() is RingMemory
    assert get_component("env", "rc-drone").compressor == "action-buffer"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_come_from_pinned_memory_and_match_cpu_batches(raw_buffers: list) -> None:
    cuda = RingMemory(memory_size=1000, batch_size=64, seed=4, device="cuda", prefetch=True)
    cpu = RingMemory(memory_size=1000, batch_size=64, seed=4)
    assert cuda.pin_memory
    try:
        for buffer in raw_buffers:
            cuda.append(buffer)
            cpu.append(buffer)
        for _ in range(5):
            batch = cuda.sample()
            assert batch[1].device.type == "cuda"
            assert_same(torch.utils._pytree.tree_map(lambda t: t.cpu(), batch), cpu.sample())
    finally:
        cuda.close()


def test_raw_compressor_state_is_per_worker() -> None:
    compressor = HistoryCompressor(history_index=0)
    frames = np.zeros((3, 2), np.uint8)
    first = compressor(np.zeros(1), (frames,), 0.0, False, False, {})
    second = compressor(np.zeros(1), (frames,), 0.0, False, True, {})
    third = compressor(np.zeros(1), (frames,), 0.0, False, False, {})
    assert [first[1]["reset"], second[1]["reset"], third[1]["reset"]] == [True, False, True]
    compressor.start_episode()
    assert compressor(np.zeros(1), (frames,), 0.0, False, False, {})[1]["reset"]
