"""rtgym's "time-step timed out" warnings become a count per episode (worker, buffer, wire, metrics), with one
readable warning when the share is high, on the real rtgym dummy RC drone with a time step too short for the policy.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import numpy as np

from tmrl_core.agents import ActorModule
from tmrl_core.buffer import Buffer
from tmrl_core.codec import decode_buffer, encode_buffer
from tmrl_core.envs import RcDroneSettings, make_rc_drone
from tmrl_core.settings import Settings
from tmrl_core.worker import RolloutWorker

#: 5 ms time steps that may stretch by 1% only: a policy that thinks for 12 ms is late at every step.
TIGHT = RcDroneSettings(
    time_step_duration=0.005, start_obs_capture=0.005, time_step_timeout_factor=0.01, ep_max_length=30
)


class SlowActor(ActorModule):
    def __init__(self, observation_space: Any, action_space: Any, delay: float = 0.012) -> None:
        super().__init__(observation_space, action_space)
        self.delay = delay

    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        time.sleep(self.delay)
        return np.zeros(self.action_space.shape, dtype=np.float32)


def drone_worker(delay: float, settings: RcDroneSettings = TIGHT) -> RolloutWorker:
    return RolloutWorker(
        env_cls=partial(make_rc_drone, settings),
        actor_module_cls=partial(SlowActor, delay=delay),
        standalone=True,
        settings=Settings(),
        random_steps=0,
        save_weights=False,
        model_path="/nonexistent/weights.safetensors",
    )


def test_timeouts_are_counted_per_episode_and_warned_once(tmrl_home, caplog, recwarn) -> None:
    w = drone_worker(0.012)
    try:
        with caplog.at_level(logging.INFO, logger="tmrl.worker"):
            _, steps = w.collect_train_episode()
            first = w.last_episode_timeouts
            w.collect_train_episode()
    finally:
        w.close()
    assert steps == 30
    assert first >= 25, first  # every step is late; the first one or two may not be
    assert w.buffer.stat_train_timeouts == w.last_episode_timeouts >= 25
    assert not [m for m in recwarn if "Time-step timed out" in str(m.message)], "a timeout warning got through"
    readable = [r for r in caplog.records if r.levelno == logging.WARNING and "time steps" in r.getMessage()]
    assert len(readable) == 1, [r.getMessage() for r in caplog.records]
    assert "timed out" in readable[0].getMessage() and "time_step_timeouts_train" in readable[0].getMessage()
    per_episode = [r for r in caplog.records if "timed out in this episode" in r.getMessage()]
    assert len(per_episode) == 2


def test_a_policy_in_time_counts_none(tmrl_home) -> None:
    # 20 ms steps that may stretch by 10 more: a loaded machine does not make an instant policy late
    relaxed = RcDroneSettings(
        time_step_duration=0.02, start_obs_capture=0.02, time_step_timeout_factor=10.0, ep_max_length=20
    )
    w = drone_worker(0.0, relaxed)
    try:
        w.collect_train_episode()
    finally:
        w.close()
    assert w.last_episode_timeouts == 0 and w.buffer.stat_train_timeouts == 0


def test_the_count_travels_and_old_buffers_still_decode() -> None:
    buffer = Buffer(maxlen=10)
    buffer.append_sample((np.zeros(2, np.float32), np.ones(3, np.float32), 0.5, False, True, {}))
    buffer.stat_train_steps, buffer.stat_train_timeouts = 1, 1
    assert decode_buffer(encode_buffer(buffer)).stat_train_timeouts == 1
    buffer.stat_train_timeouts = None  # a non-real-time env (or an older worker): the key is not written
    assert decode_buffer(encode_buffer(buffer)).stat_train_timeouts is None
