"""CRC debug through the real RolloutWorker (standalone) on the rtgym RC drone, with its default compressor."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest

from tmrl_core.agents import ActorModule
from tmrl_core.buffer import Buffer
from tmrl_core.envs import RcDroneSettings, make_rc_drone
from tmrl_core.memory import RingMemory
from tmrl_core.plugins import get_component
from tmrl_core.specs import resolve


class RandomActor(ActorModule):
    def __init__(self, observation_space: Any, action_space: Any) -> None:
        super().__init__(observation_space, action_space)
        self.rng = np.random.default_rng(0)

    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        space = self.action_space
        return self.rng.uniform(space.low, space.high).astype(np.float32)


@pytest.mark.filterwarnings("ignore:Time-step timed out")
def test_worker_samples_rebuild_exactly_with_the_rc_drone_defaults(tmrl_home: Any) -> None:
    from tmrl_core.worker import RolloutWorker

    spec = get_component("env", "rc-drone")
    settings = RcDroneSettings(
        time_step_duration=0.0005, start_obs_capture=0.0005, time_step_timeout_factor=100.0, ep_max_length=15
    )
    options = resolve(spec.component_options)(settings)
    assert options == {"act_buf_len": settings.act_buf_len}
    compressor = get_component("compressor", spec.compressor).load()(**options)
    memory = get_component("memory", spec.memory).load()(
        memory_size=10_000, batch_size=64, crc_debug=True, seed=0, **options
    )
    assert isinstance(memory, RingMemory)
    worker = RolloutWorker(
        env_cls=partial(make_rc_drone, settings, seed=0),
        actor_module_cls=RandomActor,
        sample_compressor=compressor,
        crc_debug=True,
        standalone=True,
        verbose=False,
        max_samples_per_episode=11,  # the worker truncates before rtgym does, sometimes
        seed=0,
    )
    transitions = 0
    try:
        for episode in range(60):
            if episode % 7 == 3:
                worker.run_episode(train=False)  # test episodes are neither compressed nor recorded
            transitions += worker.collect_train_episode()[1]
            buffer, worker.buffer = worker.buffer, Buffer(maxlen=worker.buffer.maxlen)
            memory.append(buffer)
    finally:
        worker.close()
    assert len(memory) == transitions >= 60 * 5
    memory.batch(np.arange(len(memory)))  # crc_debug: every transition checked against the worker's record
    for i in range(0, len(memory), 9):
        memory[i]


@pytest.mark.filterwarnings("ignore:Time-step timed out")
def test_a_test_episode_does_not_leak_its_actions_into_the_next_recorded_reset(tmrl_home: Any) -> None:
    """rtgym with reset_act_buf=False carries actions over resets; a memory that rebuilds the reset observation's
    action buffer from the previous recorded episode (the seed tutorial's) must find exactly those actions there,
    even when an unrecorded test episode (or an interrupted one) ran in between."""
    from tmrl_core.worker import RolloutWorker

    settings = RcDroneSettings(
        time_step_duration=0.0005, start_obs_capture=0.0005, time_step_timeout_factor=100.0, ep_max_length=8
    )
    assert settings.reset_act_buf is False
    n = settings.act_buf_len
    worker = RolloutWorker(
        env_cls=partial(make_rc_drone, settings, seed=0),
        actor_module_cls=RandomActor,
        standalone=True,
        verbose=False,
        seed=0,
    )
    default = np.asarray(worker.env.unwrapped.default_action)
    try:
        for unrecorded in ("test", "test-twice", "none"):
            worker.collect_train_episode()
            recorded_actions = [s[0] for s in worker.buffer.memory[-n:]]  # the episode's last n actions
            worker.buffer = Buffer(maxlen=worker.buffer.maxlen)
            if unrecorded != "none":
                worker.run_episode(train=False)  # deterministic, different actions, not recorded
            if unrecorded == "test-twice":
                worker.run_episode(train=False)
            worker.collect_train_episode()
            reset_obs = worker.buffer.memory[0][1]
            worker.buffer = Buffer(maxlen=worker.buffer.maxlen)
            expected = [*recorded_actions[:-1], default]  # the last one was never applied: the default replaces it
            np.testing.assert_array_equal(np.stack(reset_obs[-n:]), np.stack(expected), err_msg=unrecorded)
    finally:
        worker.close()
