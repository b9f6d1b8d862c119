"""The built-in environments against the env contract of the testing kit."""

from __future__ import annotations

import threading
import time

from tmrl_core.envs import RcDrone, RcDroneSettings, make_rc_drone
from tmrl_core.testing import EnvContract


class TestPendulum(EnvContract):
    env_name = "pendulum"


class TestGymId(EnvContract):
    env_name = "gym:MountainCarContinuous-v0"


class TestRcDrone(EnvContract):
    env_name = "rc-drone"
    # fast time steps; a busy test machine may be late, which rtgym tolerates with a large timeout factor
    sets = [
        "rc_drone.time_step_duration=0.01",
        "rc_drone.start_obs_capture=0.01",
        "rc_drone.time_step_timeout_factor=20",
        "rc_drone.ep_max_length=10",
    ]
    episode_steps = 15  # rtgym ends the episodes first (ep_max_length)
    crc_episodes = 4


def drone_threads() -> int:
    return sum(thread.name == "tmrl-rc-drone" and thread.is_alive() for thread in threading.enumerate())


def test_the_rc_drone_flies_with_its_delays_and_stops() -> None:
    """Velocity commands and position readings arrive 20-50 ms late, the speed is bounded, the drone stays in its box;
    stop() ends its simulation thread."""
    before = drone_threads()
    drone = RcDrone()
    try:
        assert drone.running and drone_threads() == before + 1
        drone.send_control(2.0, 0.0)
        assert drone.get_observation() == (0.0, 0.0)  # nothing has arrived yet
        time.sleep(1.2)  # at 2 m/s the drone reaches the wall (1 m) within 0.6 s
        assert drone.get_observation() == (1.0, 0.0)
        drone.send_control(-30.0, 40.0)  # clipped to the maximum speed, direction kept: (-1.2, 1.6)
        time.sleep(0.3)
        x, y = drone.get_observation()
        assert x < 1.0 and y > 0.0 and abs(y / (1.0 - x) - 4 / 3) < 0.05, (x, y)
    finally:
        drone.stop()
    assert not drone.running and drone_threads() == before
    time.sleep(0.06)  # the readings already on their way arrive; then nothing moves
    frozen = drone.get_observation()
    time.sleep(0.1)
    assert drone.get_observation() == frozen
    drone.stop()  # twice is harmless


def test_closing_the_rc_drone_env_stops_its_drone() -> None:
    """rtgym's own drone ran forever: every rc-drone env ever built kept a thread busy until the process ended."""
    before = drone_threads()
    env = make_rc_drone(RcDroneSettings(time_step_duration=0.02, start_obs_capture=0.02), seed=0)
    env.reset()
    env.step(env.action_space.sample())
    (drone,) = env.drones
    assert drone.running and drone_threads() == before + 1
    env.close()
    assert not drone.running and drone_threads() == before
