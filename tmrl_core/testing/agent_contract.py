"""``AgentContract``: what every registered training agent must do, as a pytest class that agent authors subclass.

Example (in a plugin's tests)::

    from tmrl_core.testing import AgentContract

    class TestMyAgent(AgentContract):
        agent_name = "td3"                                # the name it is registered under (--algo)
        env_name = "pendulum"                             # optional: the env whose spaces and encoder it gets
        sets = ["td3.hidden_sizes=[32,32]"]               # optional: settings for a fast test (--set syntax)
        learning_threshold = -1000.0                      # optional: the learning smoke test (None: skipped)
        learning_steps = 3000
        plugins = (MyPlugin(),)                           # optional: an agent registered in-process
        entry_points = False                              # optional: ignore the other installed plugins

The checks, each on the agent and actor that ``tmrl run --env ENV --algo AGENT`` would build (the env's encoder, the
agent's settings section):

- the actor's ``act_`` returns one action of the action space's shape and dtype, inside its bounds;
- ``act_(obs, test=True)`` is deterministic;
- ``train(batch)`` returns a dict of finite floats, for ``updates_per_step`` calls and more;
- ``state_dict()`` survives the checkpoint file format, and an agent loaded from it continues exactly as the
  original does (same metrics, same weights after the next calls, same random draws);
- the actor's weights travel in the wire format and load into a fresh actor (what a worker does), which then acts
  as the trainer's actor does;
- optionally, learning: :func:`~tmrl_core.testing.learning.run_learning` on a gymnasium env reaches the author's
  ``learning_threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pytest

if TYPE_CHECKING:
    from gymnasium import spaces

    from tmrl_core.agents import ActorModule, TrainingAgent
    from tmrl_core.pipeline import Pipeline


def sample_observation(space: spaces.Space, rng: np.random.Generator) -> Any:
    """One observation of ``space`` (a Box, or a Tuple of Boxes), drawn within its bounds (finite ones)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Tuple):
        return tuple(sample_observation(s, rng) for s in space.spaces)
    low = np.where(np.isfinite(space.low), space.low, -1.0)
    high = np.where(np.isfinite(space.high), space.high, 1.0)
    return rng.uniform(low, high).astype(space.dtype)


def make_batch(
    observation_space: spaces.Space, action_space: spaces.Box, size: int, seed: int, device: str = "cpu"
) -> tuple:
    """A batch ``(obs, act, rew, next_obs, terminated, truncated)`` as the memory hands it to ``train``."""
    import torch

    rng = np.random.default_rng(seed)

    def stack(items: list[Any]) -> Any:
        if isinstance(items[0], tuple):
            return tuple(stack([it[k] for it in items]) for k in range(len(items[0])))
        return torch.as_tensor(np.stack(items), device=device)

    obs = stack([sample_observation(observation_space, rng) for _ in range(size)])
    next_obs = stack([sample_observation(observation_space, rng) for _ in range(size)])
    act = stack([rng.uniform(action_space.low, action_space.high).astype(action_space.dtype) for _ in range(size)])
    rew = torch.as_tensor(rng.normal(size=size).astype(np.float32), device=device)
    terminated = torch.as_tensor((rng.random(size) < 0.1).astype(np.float32), device=device)
    truncated = torch.zeros(size, device=device)
    return obs, act, rew, next_obs, terminated, truncated


def _tensors_equal(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return bool(a == b)


class AgentContract:
    """Subclass with ``agent_name`` set (see the module docstring)."""

    #: the registered agent name (``--algo``)
    agent_name: ClassVar[str] = ""
    #: the env whose spaces and encoder the agent is built with
    env_name: ClassVar[str] = "pendulum"
    #: settings for the test, in ``--set`` syntax (e.g. small networks)
    sets: ClassVar[list[str]] = []
    #: transitions per batch in the checks
    batch_size: ClassVar[int] = 16
    #: training steps (each ``updates_per_step`` train calls) before the state round trip
    warmup_steps: ClassVar[int] = 2
    #: the learning smoke test: a gymnasium id, the mean deterministic return the run must reach at one of its
    #: evaluations (None: skipped), and the run's length
    learning_env: ClassVar[str] = "Pendulum-v1"
    learning_threshold: ClassVar[float | None] = None
    learning_steps: ClassVar[int] = 3000
    learning_start_steps: ClassVar[int] = 500
    learning_batch_size: ClassVar[int] = 128
    learning_eval_interval: ClassVar[int] = 500
    learning_seed: ClassVar[int] = 0
    #: in-process plugins to register for the test (an agent not installed as a distribution, e.g. while writing it)
    plugins: ClassVar[tuple[Any, ...]] = ()
    #: load the installed plugins (entry points); False isolates the test from them (built-ins and ``plugins`` only)
    entry_points: ClassVar[bool] = True

    # -- building ----------------------------------------------------------------------------------------------------
    @pytest.fixture
    def pipeline(self, tmrl_home: Path, request: pytest.FixtureRequest) -> Pipeline:
        from tmrl_core.pipeline import prepare

        if not self.agent_name:
            pytest.fail("an AgentContract subclass must set agent_name")
        if self.plugins or not self.entry_points:
            request.getfixturevalue("plugin_manager")(*self.plugins, entry_points=self.entry_points)
        return prepare(self.env_name, self.agent_name, sets=list(self.sets))

    def make_agent(self, pipeline: Pipeline) -> TrainingAgent:
        return pipeline.agent_factory()(
            observation_space=pipeline.observation_space, action_space=pipeline.action_space, device="cpu"
        )

    def make_actor(self, pipeline: Pipeline) -> ActorModule:
        return pipeline.actor_factory()(
            observation_space=pipeline.observation_space, action_space=pipeline.action_space
        )

    @pytest.fixture
    def agent(self, pipeline: Pipeline) -> Iterator[TrainingAgent]:
        import torch

        torch.manual_seed(0)
        yield self.make_agent(pipeline)

    def batch(self, pipeline: Pipeline, seed: int) -> tuple:
        return make_batch(pipeline.observation_space, pipeline.action_space, self.batch_size, seed)

    def train_steps(self, agent: TrainingAgent, pipeline: Pipeline, steps: int, seed: int) -> list[dict[str, float]]:
        calls = steps * int(getattr(agent, "updates_per_step", 1))
        return [agent.train(self.batch(pipeline, seed + k)) for k in range(calls)]

    def observations(self, pipeline: Pipeline, n: int = 5) -> list[Any]:
        rng = np.random.default_rng(1)
        return [sample_observation(pipeline.observation_space, rng) for _ in range(n)]

    # -- the actor -----------------------------------------------------------------------------------------------------
    def test_actions_fit_the_action_space(self, pipeline: Pipeline, agent: TrainingAgent) -> None:
        space = pipeline.action_space
        for actor in (agent.get_actor(), self.make_actor(pipeline)):
            for obs in self.observations(pipeline):
                for test in (False, True):
                    action = actor.act_(obs, test=test)
                    assert isinstance(action, np.ndarray), f"act_ returned {type(action).__name__}, not an array"
                    assert action.shape == space.shape, f"action shape {action.shape}, the space's {space.shape}"
                    assert action.dtype == space.dtype, f"action dtype {action.dtype}, the space's {space.dtype}"
                    assert np.all(np.isfinite(action)), f"non-finite action {action}"
                    assert space.contains(action), f"action {action} outside {space}"

    def test_test_mode_is_deterministic(self, pipeline: Pipeline, agent: TrainingAgent) -> None:
        for actor in (agent.get_actor(), self.make_actor(pipeline)):  # the trainer's and a worker's
            for obs in self.observations(pipeline):
                first, second = actor.act_(obs, test=True), actor.act_(obs, test=True)
                assert np.array_equal(first, second), f"{type(actor).__name__}: test=True must not sample"

    # -- training ------------------------------------------------------------------------------------------------------
    def test_train_returns_finite_float_metrics(self, pipeline: Pipeline, agent: TrainingAgent) -> None:
        assert int(getattr(agent, "updates_per_step", 1)) >= 1, "updates_per_step must be a positive integer"
        all_metrics = self.train_steps(agent, pipeline, self.warmup_steps, seed=10)
        assert all_metrics, "no train call was made"
        for metrics in all_metrics:
            assert isinstance(metrics, dict), f"train returned {type(metrics).__name__}, not a dict"
            for key, value in metrics.items():
                assert isinstance(key, str), f"metric name {key!r} is not a str"
                assert isinstance(value, float) and math.isfinite(value), f"metric {key}={value!r}: not a finite float"

    def test_state_dict_round_trip_resumes_identically(
        self, pipeline: Pipeline, agent: TrainingAgent, tmp_path: Path
    ) -> None:
        import torch

        from tmrl_core.checkpoint import load_state, save_state

        self.train_steps(agent, pipeline, self.warmup_steps, seed=20)
        save_state(tmp_path / "agent.safetensors", {"agent": agent.state_dict()}, fsync=False)
        torch.manual_seed(123)  # the fresh agent's initial weights differ from the trained ones
        resumed = self.make_agent(pipeline)
        resumed.load_state_dict(load_state(tmp_path / "agent.safetensors")["agent"])
        assert _tensors_equal(resumed.get_actor().state_dict(), agent.get_actor().state_dict())
        next_metrics = []
        for which in (agent, resumed):
            torch.manual_seed(7)
            next_metrics.append(self.train_steps(which, pipeline, 2, seed=30))
        assert next_metrics[1] == next_metrics[0], "the resumed agent trains differently"
        assert _tensors_equal(resumed.state_dict(), agent.state_dict()), "the resumed agent's state differs"

    def test_weights_load_into_a_fresh_actor(self, pipeline: Pipeline, agent: TrainingAgent) -> None:
        from tmrl_core import codec

        self.train_steps(agent, pipeline, 1, seed=40)
        weights = codec.decode_weights(codec.encode_weights(agent.get_actor().state_dict()))
        worker_actor = self.make_actor(pipeline)
        worker_actor.load_state_dict(weights)
        for obs in self.observations(pipeline):
            assert np.array_equal(worker_actor.act_(obs, test=True), agent.get_actor().act_(obs, test=True))

    # -- learning ------------------------------------------------------------------------------------------------------
    @pytest.mark.slow
    def test_learns(self, pipeline: Pipeline) -> None:
        if self.learning_threshold is None:
            pytest.skip("no learning_threshold set for this agent")
        import gymnasium

        from tmrl_core.testing.learning import run_learning, seed_everything

        seed_everything(self.learning_seed)
        env = gymnasium.make(self.learning_env)
        agent = pipeline.agent_factory()(
            observation_space=env.observation_space, action_space=env.action_space, device="cpu"
        )
        result = run_learning(
            lambda: gymnasium.make(self.learning_env),
            agent,
            env_steps=self.learning_steps,
            start_steps=self.learning_start_steps,
            updates_per_step=float(getattr(agent, "updates_per_step", 1)),
            batch_size=self.learning_batch_size,
            eval_interval=self.learning_eval_interval,
            eval_episodes=3,
            threshold=self.learning_threshold,
            # the check is "reaches it within learning_steps": the steps after the first evaluation that does would
            # prove nothing more (on a shared 2-core machine they were most of the suite's learning time)
            stop_at_threshold=True,
            seed=self.learning_seed,
        )
        assert result.best_return >= self.learning_threshold, result.evaluations
