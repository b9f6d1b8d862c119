"""A short, honest learning check of the whole pipeline (worker -> server -> trainer -> weights -> worker): SAC must
learn a task whose answer is in the observation, through the real transport, in a few hundred updates. A broken
link anywhere (samples, memory, weights, actor loading, the ratio) leaves the policy where it started.

Pendulum's learning curve, against Stable-Baselines3, is in ``benchmarks/bench_pendulum_learning.py``.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from helpers import train_with_local_server


class Reach(gymnasium.Env):
    """Every step shows a target in [-1, 1]; the reward is -(action - target)^2; 20 steps per episode."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.target = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return self.target.copy(), {}

    def step(self, action):
        reward = -float((np.clip(action, -1, 1)[0] - self.target[0]) ** 2)
        self.t += 1
        self.target = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return self.target.copy(), reward, False, self.t >= 20, {}


@pytest.mark.slow
def test_sac_learns_through_the_whole_pipeline(tmrl_home: Path, one_torch_thread) -> None:
    from tmrl_core.pipeline import build_trainer, evaluate_policy, prepare

    gymnasium.register(id="TmrlReach-v0", entry_point=Reach)
    sets = [
        "run.name=reach",
        "run.seed=0",
        "sac.hidden_sizes=[32,32]",
        "training.batch_size=64",
        "training.max_env_steps=1200",
        "training.start_training=200",
        "training.steps_per_round=100",
        "training.max_training_steps_per_env_step=1",
        "training.update_model_interval=40",
        "worker.max_env_steps_per_model=40",
        "worker.test_episode_interval=0",
    ]
    p = prepare("gym:TmrlReach-v0", "sac", sets=sets)
    trainer = build_trainer(p)
    untrained = trainer.training.agent.get_actor()
    from tmrl_core.checkpoint import save_weights

    save_weights(tmrl_home / "untrained.safetensors", untrained.state_dict())
    before = float(np.mean(evaluate_policy(p, episodes=5, model_path=tmrl_home / "untrained.safetensors")))

    history, _ = train_with_local_server(p, trainer)
    assert history[-1]["env_steps"] >= 1200 and history[-1]["training_steps"] >= 800
    after = float(np.mean(evaluate_policy(p, episodes=5)))
    # random actions score about -13 per episode, a constant action about -6.7, the answer 0
    assert after > -2.0, (before, after)
    assert after > before + 2.0, (before, after)
