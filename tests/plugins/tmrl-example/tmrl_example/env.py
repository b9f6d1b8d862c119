"""The example environment: a point on a line that the agent moves towards a target.

Imported only when the environment is built (see the factory string in plugin.py).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ExampleEnvSettings(BaseModel):
    """The ``example_env`` settings section (``TMRL_EXAMPLE_ENV__TARGET=0.2``, ``--set example_env.target=0.2``)."""

    model_config = ConfigDict(extra="forbid")

    target: float = Field(0.5, ge=-1.0, le=1.0, description="Where the point should go, in [-1, 1].")
    max_steps: int = Field(50, ge=1, description="Episodes are truncated after this many steps.")
    step_size: float = Field(0.1, gt=0.0, description="How far an action of 1 moves the point.")


class ExampleEnv(gymnasium.Env):
    """Observation: the signed distance to the target. Action: a move in [-1, 1]. Reward: minus the distance."""

    def __init__(self, settings: ExampleEnvSettings | None = None) -> None:
        self.settings = settings or ExampleEnvSettings()
        self.observation_space = gymnasium.spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._position = 0.0
        self._steps = 0

    def _observation(self) -> np.ndarray:
        return np.array([self.settings.target - self._position], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._position = float(self.np_random.uniform(-1.0, 1.0))
        self._steps = 0
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        self._position = float(np.clip(self._position + move * self.settings.step_size, -1.0, 1.0))
        self._steps += 1
        distance = abs(self.settings.target - self._position)
        terminated = distance < 0.01
        truncated = self._steps >= self.settings.max_steps
        return self._observation(), -distance, terminated, truncated, {}


def make_env(settings: ExampleEnvSettings | None = None, **kwargs: Any) -> ExampleEnv:
    """The factory named by the EnvSpec: ``factory(settings, **kwargs) -> gymnasium.Env``."""
    return ExampleEnv(settings)
