"""CRC debug end to end: the real rtgym RC drone and the synthetic image env, through compressor and memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import image_buffers

from tmrl_core.compression import (
    CRC_KEY,
    CrcError,
    CrcRecorder,
    HistoryCompressor,
    action_buffer_compressor,
    check_transition_crc,
    history_compressor,
)
from tmrl_core.envs import RcDroneSettings, make_rc_drone
from tmrl_core.errors import ConfigError, TmrlError
from tmrl_core.memory import RingMemory
from tmrl_core.testing.image_env import make_image_env
from tmrl_core.testing.memory_contract import interleave, rollout

ACT_BUF_LEN = 4


def fast_drone(reset_act_buf: bool, ep_max_length: int, seed: int) -> Any:
    settings = RcDroneSettings(
        time_step_duration=0.0005,
        start_obs_capture=0.0005,
        time_step_timeout_factor=100.0,
        ep_max_length=ep_max_length,
        act_buf_len=ACT_BUF_LEN,
        reset_act_buf=reset_act_buf,
    )
    return make_rc_drone(settings, seed=seed)


def drone_buffers(reset_act_buf: bool, compressor_cls: Any = None, steps: int = 1100) -> list:
    """Two workers: one truncated by rtgym, one truncated by the worker (max_samples_per_episode) first."""
    workers = []
    for seed, ep_max_length, max_samples in ((0, 11, None), (1, 40, 7)):
        env = fast_drone(reset_act_buf, ep_max_length, seed)
        compressor = (compressor_cls or HistoryCompressor)(act_buf_len=ACT_BUF_LEN)
        try:
            workers.append(rollout(env, steps, compressor=compressor, seed=seed, max_samples_per_episode=max_samples))
        finally:
            env.close()
    return interleave(*workers)


@pytest.fixture(scope="module", params=[False, True], ids=["carried-act-buf", "reset-act-buf"])
def rc_drone_buffers(request: pytest.FixtureRequest) -> list:
    return drone_buffers(request.param)


def test_rc_drone_action_buffer_compression_passes_crc_across_many_resets(rc_drone_buffers: list) -> None:
    samples = sum(len(b) for b in rc_drone_buffers)
    resets = sum(1 for b in rc_drone_buffers for s in b.memory if s[1]["reset"])
    assert samples >= 2200 and resets >= 200
    memory = RingMemory(memory_size=10**5, batch_size=256, crc_debug=True, act_buf_len=ACT_BUF_LEN, seed=0)
    for buffer in rc_drone_buffers:
        memory.append(buffer)
    assert len(memory) == samples - resets
    memory.batch(np.arange(len(memory)))  # the vectorised path checks every transition
    since_reset = set()
    for i in range(0, len(memory), 5):
        transition = memory[i]  # get_transition + check_transition_crc
        assert len(transition) == 6
        since_reset.add(memory.get_transition(i)[6][CRC_KEY]["since_reset"])
    assert {1, 2, 3, 4} <= since_reset  # transitions whose action buffers straddle a reset were checked
    for _ in range(3):
        memory.sample()


def test_action_buffer_travels_once(rc_drone_buffers: list) -> None:
    for buffer in rc_drone_buffers[:20]:
        for sample in buffer.memory:
            cobs = sample[1]
            assert len(cobs["obs"]) == 4 and cobs["hist"] == ()
            assert (cobs["act_buf"] is not None) == cobs["reset"]


class ForgetsCarriedActions(HistoryCompressor):
    """A deliberately wrong compressor: it claims the action buffer of every reset observation is padded with the
    default action, forgetting the actions rtgym carries over from the previous episode."""

    def compress_obs(self, act: Any, obs: Any, is_reset: bool) -> dict[str, Any]:
        cobs = super().compress_obs(act, obs, is_reset)
        if cobs["act_buf"] is not None:
            cobs["act_buf"] = cobs["act_buf"][-1:]
        return cobs


def test_a_wrong_compressor_is_caught_with_a_readable_report() -> None:
    buffers = drone_buffers(reset_act_buf=False, compressor_cls=ForgetsCarriedActions, steps=300)
    memory = RingMemory(memory_size=10**5, crc_debug=True, act_buf_len=ACT_BUF_LEN, seed=0)
    for buffer in buffers:
        memory.append(buffer)
    errors = []
    for i in range(len(memory)):
        try:
            memory[i]
        except CrcError as exc:
            errors.append(exc)
    assert errors, "CRC debug did not catch the wrong compressor"
    first = errors[0]
    assert isinstance(first, TmrlError)
    # only observations less than act_buf_len steps after a reset hold carried-over actions
    assert all(e.since_reset < ACT_BUF_LEN for e in errors)
    assert first.component.startswith(("prev_obs[", "new_obs["))
    assert int(first.component.split("[")[1].rstrip("]")) >= 4  # an action-buffer element
    text = str(first)
    assert f"since reset: {first.since_reset}" in text and f"time step: {first.step}" in text
    assert "original:" in text and "rebuilt:" in text and "hint:" in text
    # the vectorised path stops too
    with pytest.raises(CrcError):
        memory.batch(np.arange(len(memory)))


def test_frame_dedup_passes_crc_on_the_realtime_image_env() -> None:
    env = make_image_env(history=4, act_buf_len=2, size=32, max_episode_steps=15, terminate_prob=0.1, seed=3)
    try:
        compressor = history_compressor(act_buf_len=2, history_index=1)
        buffers = rollout(env, 1200, compressor=compressor, seed=3, max_samples_per_episode=12)
    finally:
        env.close()
    frames_sent = sum(s[1]["hist"][0].shape[0] for b in buffers for s in b.memory)
    samples = sum(len(b) for b in buffers)
    assert frames_sent == samples  # the env pads by repeating the first frame: one frame per sample
    memory = RingMemory(memory_size=500, batch_size=64, crc_debug=True, act_buf_len=2, history_index=1, seed=1)
    for buffer in buffers:
        memory.append(buffer)
    memory.batch(np.arange(len(memory)))
    for i in range(0, len(memory), 5):
        memory[i]


def test_a_frame_history_off_by_one_is_caught() -> None:
    class ShiftsFrames(HistoryCompressor):
        def compress_obs(self, act: Any, obs: Any, is_reset: bool) -> dict[str, Any]:
            cobs = super().compress_obs(act, obs, is_reset)
            if not is_reset:  # sends the previous frame instead of the newest one
                cobs["hist"] = (np.asarray(obs[1])[-2:-1].copy(),)
            return cobs

    env = make_image_env(history=3, size=16, max_episode_steps=10, seed=0)
    buffers = rollout(env, 200, compressor=ShiftsFrames(history_index=1), seed=0)
    memory = RingMemory(memory_size=1000, crc_debug=True, history_index=1, seed=0)
    for buffer in buffers:
        memory.append(buffer)
    with pytest.raises(CrcError) as err:
        for i in range(len(memory)):
            memory[i]
    assert err.value.component in ("prev_obs[1]", "new_obs[1]")
    assert "rows that differ along axis 0" in str(err.value)


def test_crc_without_a_worker_record_says_so() -> None:
    obs = (np.zeros(2, np.float32),)
    with pytest.raises(CrcError, match="no CRC record") as err:
        check_transition_crc(obs, np.zeros(1), 0.0, obs, False, False, {})
    assert "crc_debug" in err.value.hint


def test_crc_refuses_a_transition_into_a_reset_sample() -> None:
    recorder = CrcRecorder()
    obs = (np.zeros(2, np.float32),)
    info = recorder(np.zeros(1), obs, 0.0, False, False, {})
    with pytest.raises(CrcError, match="reset sample"):
        check_transition_crc(obs, np.zeros(1), 0.0, obs, False, False, info)


def test_crc_compares_rewards_in_float32_and_flags_done_signals() -> None:
    recorder = CrcRecorder()
    o0, o1 = (np.zeros(2),), (np.ones(2),)
    recorder(np.zeros(1), o0, 0.0, False, False, {})
    info = recorder(np.ones(1), o1, 0.1, True, False, {})
    check_transition_crc(o0, np.ones(1), np.float32(0.1), o1, True, False, info)
    with pytest.raises(CrcError) as err:
        check_transition_crc(o0, np.ones(1), np.float32(0.1), o1, False, False, info)
    assert err.value.component == "terminated"


def test_memory_and_compressor_options_must_agree() -> None:
    buffers = image_buffers(20, seed=0, history=2, size=8, max_episode_steps=5)
    with pytest.raises(ConfigError, match="history_index"):
        RingMemory(memory_size=100).append(buffers[0])
    with pytest.raises(ConfigError, match="act_buf_len"):
        action_buffer_compressor(act_buf_len=0)
