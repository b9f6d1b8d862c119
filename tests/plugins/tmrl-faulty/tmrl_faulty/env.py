"""The faulty environment: observation = position, action = move, reward = -|position|."""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

import gymnasium
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class FaultyEnvSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail: Literal["none", "factory", "step"] = Field("none", description="Where to raise.")
    fail_after: int = Field(0, ge=0, description="Steps (over all episodes) before step() raises.")
    episode_steps: int = Field(30, ge=1, description="Episodes are truncated after this many steps.")
    record: str | None = Field(
        None, description="A file to append JSON lines to: the modules loaded at the first step, the steps at close."
    )


class NeedsKeySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(description="A key with no default.")
    episode_steps: int = Field(30, ge=1, description="Episodes are truncated after this many steps.")


def faulty_spaces(settings: Any = None) -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    return (
        gymnasium.spaces.Box(-10.0, 10.0, shape=(1,), dtype=np.float32),
        gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
    )


class FaultyEnv(gymnasium.Env):
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.observation_space, self.action_space = faulty_spaces()
        self.position = 0.0
        self.steps = 0
        self.total_steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position = float(self.np_random.uniform(-1.0, 1.0))
        self.steps = 0
        return np.array([self.position], dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        s = self.settings
        self.steps += 1
        self.total_steps += 1
        if getattr(s, "fail", "none") == "step" and self.total_steps > s.fail_after:
            raise RuntimeError(f"the faulty env broke at step {self.total_steps}")
        if self.total_steps == 1:
            # what the worker process had loaded when it took its first step (its start-up must not wait for torch)
            names = ("torch", "gymnasium", "tmrl_core.agents", "tmrl_sac.agent")
            loaded = {name: name in sys.modules for name in names}
            self._record({"event": "first_step", "loaded": loaded})
        self.position += 0.1 * float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0))
        obs = np.array([self.position], dtype=np.float32)
        return obs, -abs(self.position), False, self.steps >= s.episode_steps, {}

    def close(self) -> None:
        self._record({"event": "close", "total_steps": self.total_steps})

    def _record(self, line: dict[str, Any]) -> None:
        path = getattr(self.settings, "record", None)
        if path:
            with open(path, "a", encoding="utf-8") as file:
                file.write(json.dumps(line) + "\n")


def make_faulty_env(settings: Any = None) -> FaultyEnv:
    if settings is not None and getattr(settings, "fail", "none") == "factory":
        raise OSError("cannot open /dev/faulty-device: no such device")
    return FaultyEnv(settings)
