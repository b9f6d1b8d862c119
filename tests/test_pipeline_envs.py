"""The built-in environments against the env contract of the testing kit."""

from __future__ import annotations

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
