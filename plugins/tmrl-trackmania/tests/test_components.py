"""The learning parts registered for the TrackMania environments: the core's memory contract with samples of the
simulated game (every transition rebuilt exactly across resets), and the encoders with both agents' batches."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tmrl_trackmania.envs import make_full, make_lidar_progress, spaces_full, spaces_lidar, spaces_lidar_progress
from tmrl_trackmania.models import ImageHistoryEncoder, LidarHistoryEncoder
from tmrl_trackmania.settings import TrackmaniaSettings

from tmrl_core.memory import RingMemory
from tmrl_core.testing import MemoryContract


def _reward_file() -> Path:
    from tmrl_trackmania.reward import Trajectory
    from tmrl_trackmania.sim.track import build_track

    path = Path(tempfile.mkdtemp(prefix="tmrl-tm-")) / "reward.npz"
    return Trajectory.from_path(build_track("default").positions3d(), 0.1).save(path)


# Short, fast episodes: 100 steps per second, some truncated (ep_max_length), some terminated (no progress).
FAST_EPISODES = {
    "backend": "simulated",
    "sleep_time_at_reset": 0.0,
    "time_step_duration": 0.01,
    "start_obs_capture": 0.008,
    "time_step_timeout_factor": 5.0,
    "ep_max_length": 25,
    "min_steps": 4,
    "failure_countdown": 3,
    "history_length": 3,
    "act_buf_len": 2,
}


class _RingMemoryWithSimulatedEpisodes(MemoryContract):
    """The env's registered memory and compressor; subclasses choose the env and where its histories are."""

    memory_cls = RingMemory
    compressor = "history"
    n_steps = 150
    small_memory_size = 41


class TestRingMemoryWithLidarProgress(_RingMemoryWithSimulatedEpisodes):
    component_options = {"act_buf_len": 2, "history_index": 2}

    def make_env(self) -> Any:
        return make_lidar_progress(**FAST_EPISODES, reward_path=str(_reward_file()))


class TestRingMemoryWithFull(_RingMemoryWithSimulatedEpisodes):
    component_options = {"act_buf_len": 2, "history_index": 3}

    def make_env(self) -> Any:
        return make_full(**FAST_EPISODES, img_width=32, img_height=32, reward_path=str(_reward_file()))


def test_component_options_match_the_contract_classes():
    from tmrl_trackmania.components import full_options, lidar_progress_options

    s = TrackmaniaSettings(**FAST_EPISODES)
    assert full_options(s) == TestRingMemoryWithFull.component_options
    assert lidar_progress_options(s) == TestRingMemoryWithLidarProgress.component_options


@pytest.mark.parametrize("grayscale", [True, False])
def test_image_encoder_reads_uint8_histories(grayscale):
    obs_space, _ = spaces_full(TrackmaniaSettings(grayscale=grayscale))
    encoder = ImageHistoryEncoder(obs_space)
    samples = [obs_space.sample() for _ in range(5)]
    batch = tuple(torch.as_tensor(np.stack([s[i] for s in samples])) for i in range(len(obs_space.spaces)))
    assert batch[3].dtype == torch.uint8
    out = encoder(batch)
    assert out.shape == (5, encoder.out_features) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize("spaces_of", [spaces_lidar, spaces_lidar_progress])
def test_lidar_encoder_scales_raw_readings(spaces_of):
    obs_space, _ = spaces_of(TrackmaniaSettings())
    encoder = LidarHistoryEncoder(obs_space)
    samples = [obs_space.sample() for _ in range(7)]
    batch = tuple(torch.as_tensor(np.stack([s[i] for s in samples])) for i in range(len(obs_space.spaces)))
    scaled = encoder.scaler(list(batch))
    assert scaled.abs().max() <= 1.0 + 1e-5  # km/h, pixel lengths and actions all in [-1, 1]
    assert encoder(batch).shape == (7, encoder.out_features)


@pytest.mark.parametrize("algo", ["sac", "redqsac"])
@pytest.mark.parametrize("env_name", ["trackmania-full", "trackmania-lidar"])
def test_encoders_fit_both_agents(algo, env_name):
    """The registered agents build their actor and critics on the env's encoder and train one step."""
    from tmrl_core import get_plugin_manager
    from tmrl_core.specs import resolve

    manager = get_plugin_manager()
    if algo not in manager.registry("agent"):
        pytest.skip(f"agent {algo!r} is not installed")
    env = manager.get("env", env_name)
    agent_spec = manager.get("agent", algo)
    settings = TrackmaniaSettings(img_width=32, img_height=32)
    obs_space, act_space = resolve(env.spaces)(settings)
    agent_settings_model = agent_spec.load_settings_model()
    agent_settings = agent_settings_model() if agent_settings_model is not None else None
    agent = agent_spec.load()(obs_space, act_space, "cpu", env.encoder, agent_settings)
    b = 8
    samples = [obs_space.sample() for _ in range(b)]
    obs = tuple(torch.as_tensor(np.stack([s[i] for s in samples])) for i in range(len(obs_space.spaces)))
    batch = (
        obs,
        torch.as_tensor(np.stack([act_space.sample() for _ in range(b)])),
        torch.zeros(b),
        obs,
        torch.zeros(b),
        torch.zeros(b),
    )
    metrics = agent.train(batch)
    assert metrics and all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
    action = agent.get_actor().act_(samples[0], test=True)
    assert act_space.contains(np.asarray(action, dtype=np.float32))
