"""The rtgym environments on the simulated game: spaces as documented, stepping, timing, errors, registration."""

from __future__ import annotations

import time

import numpy as np
import pytest
from gymnasium import spaces
from tmrl_trackmania.envs import (
    make_full,
    make_lidar,
    make_lidar_progress,
    spaces_full,
    spaces_lidar,
    spaces_lidar_progress,
)
from tmrl_trackmania.settings import TrackmaniaSettings
from tmrl_trackmania.telemetry import TelemetryError

FAST = {"backend": "simulated", "sleep_time_at_reset": 0.0}


def box(low, high, shape, dtype=np.float32) -> spaces.Box:
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


ACT = box(-1.0, 1.0, (3,))


def test_spaces_are_the_documented_ones():
    s = TrackmaniaSettings(history_length=4, act_buf_len=2, img_width=64, img_height=48)
    obs, act = spaces_full(s)
    assert act == ACT
    assert obs == spaces.Tuple(
        (
            box(0, 1000, (1,)),  # speed, km/h
            box(0, 6, (1,)),  # gear
            box(0, 11000, (1,)),  # rpm
            box(0, 255, (4, 48, 64), np.uint8),  # grayscale history, oldest first
            ACT,
            ACT,  # rtgym's action buffer
        )
    )
    rgb, _ = spaces_full(s.model_copy(update={"grayscale": False}))
    assert rgb[3] == box(0, 255, (4, 48, 64, 3), np.uint8)

    lidar, act = spaces_lidar(s)
    longest = float(np.hypot(128, 256))
    assert act == ACT and len(lidar) == 4
    assert lidar[0] == box(0, 1000, (1,))
    assert lidar[1].shape == (4, 19) and lidar[1].dtype == np.float32 and lidar[1].low.min() == 0
    assert 128 <= lidar[1].high.max() <= longest
    assert lidar[2] == ACT and lidar[3] == ACT

    progress, _ = spaces_lidar_progress(s.model_copy(update={"act_buf_len": 3}))
    assert len(progress) == 6
    assert progress[0] == box(0, 1000, (1,)) and progress[1] == box(0, 1, (1,)) and progress[2] == lidar[1]


@pytest.mark.parametrize(
    "make, spaces_of",
    [(make_lidar, spaces_lidar), (make_full, spaces_full), (make_lidar_progress, spaces_lidar_progress)],
)
def test_env_steps_with_the_simulated_game(tmrl_home, make, spaces_of):
    settings = TrackmaniaSettings(**FAST, ep_max_length=40)
    env = make(settings)
    try:
        assert env.observation_space == spaces_of(settings)[0]
        assert env.action_space == ACT
        obs, info = env.reset()
        t0 = time.perf_counter()
        assert env.observation_space.contains(obs) and isinstance(info, dict)
        history = obs[-3]  # just before the action buffer
        assert all(np.array_equal(history[0], history[k]) for k in range(1, len(history)))  # padded at reset
        total, steps = 0.0, 0
        while True:
            obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0], dtype=np.float32))
            assert env.observation_space.contains(obs)
            total += reward
            steps += 1
            if terminated or truncated:
                break
        assert truncated and not terminated and steps == 40
        assert obs[0][0] > 20.0  # full gas for 2 s: well above 20 km/h
        assert total > 0.5  # it drove forwards along the track
        np.testing.assert_array_equal(obs[-1], [1.0, 0.0, 0.0])  # the action buffer holds the actions sent
        timing = env.tm_interface.timing
        assert timing.steps == 40  # one time step per observation: the reset starts one, the last step none
        # real time: the env paces the steps at 50 ms, never faster (lateness under load is the benchmark's
        # figure: benchmarks/bench_trackmania.py prints the share of timed-out steps with and without load)
        assert time.perf_counter() - t0 >= 39 * settings.time_step_duration
        assert timing.timed_out < timing.steps // 2
        obs, _ = env.reset()  # a second episode starts from the start line
        assert obs[0][0] < 1.0
    finally:
        env.close()


def test_driving_into_a_wall_and_stalling_ends_the_episode(tmrl_home):
    env = make_lidar(**FAST, min_steps=5, failure_countdown=5)
    try:
        env.reset()
        steps = 0
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(np.array([0.0, 0.0, 0.0], dtype=np.float32))
            steps += 1
        assert terminated and steps == 11  # 5 free steps, then 5 without progress, the 11th ends it
        assert env.episode_metrics["finished"] == 0.0 and env.episode_metrics["progress"] < 0.01
    finally:
        env.close()


def test_a_finished_lap_is_an_episode_metric_apart_from_the_return(tmrl_home):
    """The simulator's autopilot drives a whole lap through the env: the last step gives the finish bonus and ends the
    episode, and the episode's metrics say it finished (``finished_train`` / ``finished_test`` in the run's metrics),
    whatever ``end_of_track`` is; the next episode starts unfinished."""
    scale = 8.0
    env = make_lidar(
        **FAST, end_of_track=5.0, time_step_duration=0.05 / scale, start_obs_capture=0.04 / scale,
        ep_max_length=5000, sim={"autopilot": True, "time_scale": scale},
    )
    try:
        env.reset()
        rewards, terminated, truncated = [], False, False
        while not (terminated or truncated):
            _, reward, terminated, truncated, _ = env.step(np.zeros(3, dtype=np.float32))
            rewards.append(reward)
        metrics = env.episode_metrics
        assert terminated and metrics["finished"] == 1.0, (len(rewards), metrics)
        assert metrics["progress"] > 0.95
        assert rewards[-1] >= 5.0 and max(rewards[:-1]) < 5.0  # the bonus comes once, with the finish
        env.reset()
        env.step(np.zeros(3, dtype=np.float32))
        assert env.episode_metrics["finished"] == 0.0
    finally:
        env.close()


def test_timing_log_and_lost_game_error(tmrl_home):
    log = tmrl_home / "timing.jsonl"
    env = make_lidar(**FAST, timing_log=str(log), telemetry_timeout=0.5)
    try:
        env.reset()
        for _ in range(5):
            env.step(np.zeros(3, dtype=np.float32))
        env.tm_interface.link.sim.stop()  # the game goes away mid-episode
        time.sleep(0.6)
        with pytest.raises(TelemetryError):
            for _ in range(30):
                env.step(np.zeros(3, dtype=np.float32))
    finally:
        env.close()
    import json

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries and entries[-1]["env"] == "lidar"
    assert sum(e["steps"] for e in entries) == entries[-1]["total_steps"] >= 6


def test_environments_are_registered_with_their_parts():
    from tmrl_core import get_plugin_manager

    manager = get_plugin_manager()
    for name, spaces_of, index in [
        ("trackmania-full", spaces_full, 3),
        ("trackmania-lidar", spaces_lidar, 1),
        ("trackmania-lidar-progress", spaces_lidar_progress, 2),
    ]:
        spec = manager.get("env", name)
        assert spec.realtime and spec.section == "trackmania"
        assert spec.load_settings_model() is TrackmaniaSettings
        assert spec.load() is not None
        settings = TrackmaniaSettings()
        assert spec.__class__.__name__ == "EnvSpec"
        from tmrl_core.specs import resolve

        assert resolve(spec.spaces)(settings) == spaces_of(settings)
        options = resolve(spec.component_options)(settings)
        assert options == {"act_buf_len": settings.act_buf_len, "history_index": index}
        encoder = resolve(spec.encoder)(spaces_of(settings)[0])
        assert encoder.out_features > 0


def test_timed_out_steps_are_counted_like_rtgym_warns_them(tmrl_home):
    """A policy that is late on purpose: the env's count equals rtgym's warnings, one per late step."""
    import warnings

    env = make_lidar(**FAST, time_step_duration=0.04, start_obs_capture=0.03, time_step_timeout_factor=0.5)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            env.reset()
            for step in range(24):
                if step % 4 == 3:
                    time.sleep(0.1)  # later than the end of the time step plus its 20 ms of elasticity
                env.step(np.zeros(3, dtype=np.float32))
            env.stop()
        warned = sum("Time-step timed out" in str(w.message) for w in caught)
        timing = env.tm_interface.timing
        assert timing.timed_out == warned
        assert warned >= 6  # the six late steps (a loaded machine may add some)
        assert timing.steps == 25
    finally:
        env.close()
