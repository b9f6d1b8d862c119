"""``EnvContract``: what every registered environment must do, as a pytest class that env authors subclass.

Example (in a plugin's tests)::

    from tmrl_core.testing import EnvContract

    class TestMyEnv(EnvContract):
        env_name = "my-env"                              # the name it is registered under
        sets = ["my_env.time_step_duration=0.01"]        # optional: settings for a fast test (--set syntax)
        episode_steps = 20                               # optional: steps per episode in the checks

The checks: the env is registered and its factory builds a gymnasium env; the spaces the spec describes (without
starting the env) are the env's; ``reset``/``step`` follow gymnasium (observations in the observation space); the
spec's ``realtime`` flag matches the env; and a :class:`~tmrl_core.worker.RolloutWorker` with the env's default
compressor records whole episodes that the env's default memory rebuilds exactly (CRC debug, across resets).
Every test runs in a fresh data folder (the ``tmrl_home`` fixture).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from tmrl_core.agents import ActorModule
from tmrl_core.buffer import Buffer
from tmrl_core.envs import is_realtime
from tmrl_core.worker import RolloutWorker

if TYPE_CHECKING:
    from tmrl_core.pipeline import Pipeline


class RandomActor(ActorModule):
    """Uniformly random actions (seeded), for contract tests that need a policy but no training."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, seed: int = 0) -> None:
        super().__init__(observation_space, action_space)
        self.action_space.seed(seed)

    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        return np.asarray(self.action_space.sample())


def _contains(space: spaces.Space, obs: Any) -> bool:
    if isinstance(space, spaces.Tuple):
        return isinstance(obs, (tuple, list)) and len(obs) == len(space.spaces) and all(
            _contains(s, o) for s, o in zip(space.spaces, obs, strict=True)
        )
    arr = np.asarray(obs)
    return arr.shape == space.shape and arr.dtype == space.dtype


class EnvContract:
    """Subclass with ``env_name`` set (see the module docstring)."""

    #: the registered env name (``gym:<id>`` works too)
    env_name: ClassVar[str] = ""
    #: settings for the test, in ``--set`` syntax (e.g. faster rtgym time steps)
    sets: ClassVar[list[str]] = []
    #: episodes are truncated after this many steps in the checks
    episode_steps: ClassVar[int] = 12
    #: episodes collected for the CRC check
    crc_episodes: ClassVar[int] = 3

    @pytest.fixture
    def pipeline(self, tmrl_home: Path) -> Pipeline:
        return self._prepare()

    def _prepare(self, *extra: str) -> Pipeline:
        from tmrl_core.pipeline import prepare

        if not self.env_name:
            pytest.fail("an EnvContract subclass must set env_name")
        return prepare(self.env_name, None, sets=[*self.sets, *extra])

    @pytest.fixture
    def env(self, pipeline: Pipeline) -> Iterator[gymnasium.Env]:
        env = pipeline.env_factory()()
        yield env
        env.close()

    def test_the_spec_describes_the_env(self, pipeline: Pipeline, env: gymnasium.Env) -> None:
        assert env.observation_space == pipeline.observation_space, "EnvSpec.spaces disagrees with the env"
        assert env.action_space == pipeline.action_space, "EnvSpec.spaces disagrees with the env"
        assert pipeline.env.realtime == is_realtime(env), "EnvSpec.realtime must say whether the env is rtgym's"

    def test_reset_and_step_follow_gymnasium(self, env: gymnasium.Env) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rtgym warns about late time steps on busy machines
            obs, info = env.reset(seed=0)
            assert isinstance(info, dict)
            assert _contains(env.observation_space, obs), f"reset() returned {obs!r}"
            for _ in range(3):
                result = env.step(env.action_space.sample())
                assert len(result) == 5, "step() returns (obs, reward, terminated, truncated, info)"
                obs, rew, terminated, truncated, info = result
                assert _contains(env.observation_space, obs), f"step() returned {obs!r}"
                assert np.isfinite(float(rew)) and isinstance(info, dict)
                if terminated or truncated:
                    break

    def _worker(self, pipeline: Pipeline, crc: bool) -> RolloutWorker:
        return RolloutWorker(
            env_cls=pipeline.env_factory(),
            actor_module_cls=RandomActor,
            sample_compressor=pipeline.compressor(),
            max_samples_per_episode=self.episode_steps,
            crc_debug=crc,
            standalone=True,
            settings=pipeline.settings,
            seed=0,
        )

    def test_a_worker_records_whole_episodes(self, pipeline: Pipeline) -> None:
        worker = self._worker(pipeline, crc=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, steps = worker.collect_train_episode()
            samples = worker.buffer.memory
            assert len(samples) == steps + 1, "a reset sample, then one sample per step"
            assert not (samples[0][3] or samples[0][4]), "the reset sample is neither terminated nor truncated"
            assert samples[-1][3] or samples[-1][4], "the last sample ends the episode"
            assert not any(s[3] or s[4] for s in samples[1:-1])
        finally:
            worker.close()

    def test_the_default_memory_rebuilds_what_the_worker_sent(self, tmrl_home: Path) -> None:
        """CRC debug through the env's default compressor and memory, over several episodes (and resets)."""
        pipeline = self._prepare("worker.crc_debug=true")
        worker = self._worker(pipeline, crc=True)
        buffers: list[Buffer] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(self.crc_episodes):
                    worker.collect_train_episode()
                    buffers.append(worker.buffer)
                    worker.buffer = Buffer(maxlen=worker.buffer.maxlen)
        finally:
            worker.close()
        memory = pipeline.memory_factory()(nb_steps=1, device="cpu")
        for buffer in buffers:
            memory.append(buffer)
        assert len(memory) > 0
        for item in range(len(memory)):  # every transition, each checked against the worker's record
            memory[item]
