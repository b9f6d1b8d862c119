"""A synthetic image-history environment for tests and benchmarks of memories and compressors.

Observations are ``(speed, frames)``: a float32 vector and the last ``history`` uint8 frames (oldest first), padded
after a reset by repeating the first frame, as the TrackMania environment does. Every frame is different (it
stamps the episode and the step in its first pixels), so a frame rebuilt from the wrong place never passes a CRC
check by accident.

- :class:`SyntheticImageEnv`: one frame per observation (``(speed, frame)``);
- :class:`FrameHistory`: the wrapper that turns the frame into a history;
- :func:`make_image_env`: either of those composed, or, with ``act_buf_len > 0``, the same observations as an rtgym
  real-time environment (rtgym appends its action buffer, with its own reset semantics).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from rtgym import DEFAULT_CONFIG_DICT, RealTimeGymInterface

from tmrl_core.envs import GenericGymEnv

SPEED_DIM = 3
ACT_DIM = 3


class _FrameSource:
    """Cheap, distinct frames: a rolled texture plus the episode and step stamped in the first row."""

    def __init__(self, size: int, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size
        self.texture = self.rng.integers(0, 256, size=(size, 2 * size), dtype=np.uint8)
        self.episode = -1
        self.step = 0
        self.position = 0.0

    def reset(self) -> None:
        self.episode += 1
        self.step = 0
        self.position = float(self.rng.uniform(0, self.size))

    def advance(self, action: np.ndarray) -> None:
        self.step += 1
        self.position = (self.position + 1.0 + float(np.asarray(action).reshape(-1)[0])) % self.size

    def frame(self) -> np.ndarray:
        start = int(self.position)
        frame = self.texture[:, start : start + self.size].copy()
        frame[0, :8] = np.frombuffer(np.array([self.episode, self.step], dtype="<u4").tobytes(), dtype=np.uint8)
        return frame

    def speed(self) -> np.ndarray:
        return np.array([self.position, self.step, self.episode], dtype=np.float32)


class SyntheticImageEnv(gymnasium.Env):
    """Observations ``(speed (3,), frame (size, size) uint8)``, actions in ``[-1, 1]^3``.

    Episodes terminate at random (probability ``terminate_prob`` per step) and are truncated after
    ``max_episode_steps``; the reward is the first action component (anything deterministic would do).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self, size: int = 64, max_episode_steps: int = 50, terminate_prob: float = 0.05, seed: int | None = None
    ) -> None:
        self.source = _FrameSource(size, seed)
        self.max_episode_steps = max_episode_steps
        self.terminate_prob = terminate_prob
        self.observation_space = spaces.Tuple(
            (
                spaces.Box(-np.inf, np.inf, shape=(SPEED_DIM,), dtype=np.float32),
                spaces.Box(0, 255, shape=(size, size), dtype=np.uint8),
            )
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(ACT_DIM,), dtype=np.float32)

    def _obs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.source.speed(), self.source.frame()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.source.reset()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.source.advance(action)
        terminated = bool(self.source.rng.random() < self.terminate_prob)
        truncated = not terminated and self.source.step >= self.max_episode_steps
        return self._obs(), float(np.asarray(action).reshape(-1)[0]), terminated, truncated, {}


class FrameHistory(gymnasium.Wrapper):
    """Replaces the frame (observation element ``index``) with the last ``history`` frames, oldest first; after a
    reset the history is the first frame repeated ``history`` times."""

    def __init__(self, env: gymnasium.Env, history: int = 4, index: int = 1) -> None:
        super().__init__(env)
        self.history = history
        self.index = index
        self.frames: deque[np.ndarray] = deque(maxlen=history)
        frame_space = env.observation_space.spaces[index]
        stacked = spaces.Box(0, 255, shape=(history, *frame_space.shape), dtype=frame_space.dtype)
        parts = list(env.observation_space.spaces)
        parts[index] = stacked
        self.observation_space = spaces.Tuple(parts)

    def _stacked(self, obs: tuple[Any, ...]) -> tuple[Any, ...]:
        parts = list(obs)
        parts[self.index] = np.stack(self.frames)
        return tuple(parts)

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.history):
            self.frames.append(obs[self.index])
        return self._stacked(obs), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, rew, terminated, truncated, info = self.env.step(action)
        self.frames.append(obs[self.index])
        return self._stacked(obs), rew, terminated, truncated, info


class ImageHistoryInterface(RealTimeGymInterface):
    """The same observations for rtgym (which appends its action buffer): the history lives in the interface, as
    in the TrackMania interface."""

    def __init__(
        self, size: int = 64, history: int = 4, max_episode_steps: int = 50, terminate_prob: float = 0.05, seed=None
    ) -> None:
        self.env = FrameHistory(SyntheticImageEnv(size, max_episode_steps, terminate_prob, seed), history)
        self._last_action = np.zeros(ACT_DIM, dtype=np.float32)

    def get_observation_space(self) -> spaces.Tuple:
        return self.env.observation_space

    def get_action_space(self) -> spaces.Box:
        return self.env.action_space

    def get_default_action(self) -> np.ndarray:
        return np.zeros(ACT_DIM, dtype=np.float32)

    def send_control(self, control: Any) -> None:
        if control is not None:
            self._last_action = np.asarray(control, dtype=np.float32)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[list, dict]:
        obs, info = self.env.reset(seed=seed)
        return list(obs), info

    def get_obs_rew_terminated_info(self) -> tuple[list, float, bool, dict]:
        # rtgym truncates on its own ep_max_length; the synthetic env's own truncation is not forwarded
        obs, rew, terminated, _, info = self.env.step(self._last_action)
        return list(obs), rew, terminated, info


def image_env_config(
    act_buf_len: int = 2,
    history: int = 4,
    size: int = 64,
    max_episode_steps: int = 50,
    terminate_prob: float = 0.05,
    reset_act_buf: bool = False,
    time_step_duration: float = 0.0005,
    seed: int | None = None,
) -> dict[str, Any]:
    """rtgym configuration of the real-time synthetic image environment (fast timing by default)."""
    config = dict(DEFAULT_CONFIG_DICT)
    config.update(
        interface=ImageHistoryInterface,
        interface_kwargs={
            "size": size,
            "history": history,
            "max_episode_steps": max_episode_steps,
            "terminate_prob": terminate_prob,
            "seed": seed,
        },
        time_step_duration=time_step_duration,
        start_obs_capture=time_step_duration,
        time_step_timeout_factor=100.0,
        ep_max_length=max_episode_steps,
        act_buf_len=act_buf_len,
        reset_act_buf=reset_act_buf,
    )
    return config


def make_image_env(
    history: int = 4,
    act_buf_len: int = 0,
    size: int = 64,
    max_episode_steps: int = 50,
    terminate_prob: float = 0.05,
    seed: int | None = None,
    **rtgym_options: Any,
) -> gymnasium.Env:
    """``(speed, frames)`` observations; with ``act_buf_len > 0`` an rtgym env whose observations end with the
    action buffer (``rtgym_options`` go to :func:`image_env_config`)."""
    if act_buf_len <= 0:
        return FrameHistory(SyntheticImageEnv(size, max_episode_steps, terminate_prob, seed), history)

    config = image_env_config(act_buf_len, history, size, max_episode_steps, terminate_prob, seed=seed, **rtgym_options)
    return GenericGymEnv(id="real-time-gym-ts-v1", gym_kwargs={"config": config})
