"""``training.random_steps``: the workers' warm-up of uniform random actions (Stable-Baselines3's learning_starts),
on a real gymnasium environment, and its per-env default resolved by the pipeline; the actor built in a thread
during the warm-up (``actor_in_background``, what ``tmrl run``'s worker processes do)."""

from __future__ import annotations

import threading
import traceback
from functools import partial
from typing import Any

import numpy as np
import pytest

from tmrl_core.agents import ActorModule
from tmrl_core.envs import make_pendulum
from tmrl_core.settings import Settings
from tmrl_core.worker import RolloutWorker


class ConstantActor(ActorModule):
    """Always 0.5: any other action in a recorded sample came from the warm-up."""

    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        return np.full(self.action_space.shape, 0.5, dtype=np.float32)


def worker(
    random_steps: int | None, seed: int = 3, actor: Any = ConstantActor, background: bool = False, **settings: Any
) -> RolloutWorker:
    return RolloutWorker(
        env_cls=partial(make_pendulum, None),
        actor_module_cls=actor,
        actor_in_background=background,
        standalone=True,
        settings=Settings(**settings),
        seed=seed,
        random_steps=random_steps,
        save_weights=False,
        model_path="/nonexistent/weights.safetensors",
    )


def recorded_actions(w: RolloutWorker, episodes: int) -> np.ndarray:
    actions = []
    for _ in range(episodes):
        w.collect_train_episode(max_samples_per_episode=100)
        actions += [np.asarray(sample[0]) for sample in w.buffer.memory[1:]]  # the reset sample is not a step
        w.buffer.clear()
    return np.stack(actions)


def test_the_first_random_steps_are_uniform_then_the_policy_acts(tmrl_home) -> None:
    w = worker(150)
    try:
        actions = recorded_actions(w, 2)[:, 0]
    finally:
        w.close()
    warm, policy = actions[:150], actions[150:]
    assert np.all(policy == 0.5) and len(policy) == 50
    assert np.all((warm >= -2.0) & (warm <= 2.0))
    assert np.count_nonzero(warm == 0.5) <= 1
    # uniform over [-2, 2]: both halves of the range, a spread near that of U(-2, 2) (std 1.15)
    assert (warm < 0).sum() > 40 and (warm > 0).sum() > 40 and 0.9 < warm.std() < 1.4
    assert w.random_steps_left == 0


def test_the_warm_up_is_seeded_and_never_used_for_tests(tmrl_home) -> None:
    a, b = worker(60, seed=7), worker(60, seed=7)
    try:
        assert np.array_equal(recorded_actions(a, 1)[:60], recorded_actions(b, 1)[:60])
    finally:
        a.close()
        b.close()
    t = worker(60)
    try:
        t.run_episode(max_samples_per_episode=20, train=False)
        assert t.random_steps_left == 60  # a test episode acts with the policy and spends none of the warm-up
    finally:
        t.close()


def test_the_setting_is_read_when_not_given(tmrl_home) -> None:
    w = worker(None, training={"random_steps": 25})
    try:
        assert w.random_steps_left == 25
    finally:
        w.close()


def test_the_default_comes_from_the_env_or_start_training(tmrl_home, plugin_manager) -> None:
    from tmrl_core import EnvSpec, hookimpl
    from tmrl_core.pipeline import prepare

    class NoRandom:
        @hookimpl
        def tmrl_register_envs(self, register: Any) -> None:
            register(
                EnvSpec(name="calm", factory="tmrl_core.envs:make_pendulum", spaces="tmrl_core.envs:pendulum_spaces",
                        random_steps=0)
            )  # fmt: skip

    plugin_manager(NoRandom(), entry_points=True)
    assert prepare("pendulum", "sac").settings.training.random_steps == 200  # pendulum's start_training
    assert prepare("pendulum", "sac", sets=["training.start_training=50"]).settings.training.random_steps == 50
    assert prepare("pendulum", "sac", sets=["training.random_steps=7"]).settings.training.random_steps == 7
    assert prepare("calm", "sac").settings.training.random_steps == 0


@pytest.mark.parametrize("workers,expected", [(1, 100), (3, 34)])
def test_workers_share_the_warm_up(tmrl_home, workers: int, expected: int) -> None:
    from tmrl_core.pipeline import prepare, warm_up_share

    p = prepare("pendulum", "sac", sets=["training.random_steps=100", f"worker.count={workers}"])
    assert warm_up_share(p.settings) == expected


# -- the actor built during the warm-up ---------------------------------------------------------------------------


class GatedActor:
    """Builds a ConstantActor once ``gate`` is set (or raises ``error`` then): the test decides when the build ends."""

    def __init__(self, error: Exception | None = None) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.error = error

    def __call__(self, **spaces: Any) -> ConstantActor:
        self.started.set()
        assert self.gate.wait(60)
        if self.error is not None:
            raise self.error
        return ConstantActor(**spaces)


def test_the_warm_up_steps_while_the_actor_is_built_and_records_the_same_actions(tmrl_home) -> None:
    gated = GatedActor()
    w = worker(50, seed=11, actor=gated, background=True)
    plain = worker(50, seed=11)
    try:
        w.collect_train_episode(max_samples_per_episode=40)  # 40 warm-up steps while the build waits at its gate
        assert w.env_steps == 40 and not gated.gate.is_set()
        assert gated.started.wait(30)  # started by the first step
        gated.gate.set()
        w.collect_train_episode(max_samples_per_episode=40)  # 10 more, then the policy: waits for the build
        actions = np.stack([np.asarray(sample[0]) for sample in w.buffer.memory])
        w.buffer.clear()
        expected = recorded_actions(plain, 1)[:80]  # its episodes are longer: the actions do not depend on that
    finally:
        w.close()
        plain.close()
    # the buffer held both episodes (reset samples included): the warm-up is seeded as when built at once
    steps = np.concatenate([actions[1:41], actions[42:]])
    assert steps.shape == expected.shape == (80, 1) and np.array_equal(steps, expected)
    assert np.all(steps[50:] == 0.5) and np.count_nonzero(steps[:50] == 0.5) <= 1
    assert w.device == "cpu"


def test_a_failed_build_stops_the_warm_up_at_the_next_step_with_its_traceback(tmrl_home) -> None:
    gated = GatedActor(ValueError("no such layer"))
    w = worker(1000, actor=gated, background=True)
    try:
        w.collect_train_episode(max_samples_per_episode=5)
        gated.gate.set()
        w._actor_build.join()  # the build has failed: the very next warm-up step raises it
        with pytest.raises(ValueError, match="no such layer") as raised:
            w.collect_train_episode(max_samples_per_episode=5)
        assert w.env_steps == 5
        frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
        assert "__call__" in frames  # the build's own frames: blame() finds the plugin whose code raised
        with pytest.raises(ValueError):
            _ = w.actor
    finally:
        w.close()  # raised already: not again


def test_close_raises_a_failed_build_that_nothing_waited_for(tmrl_home) -> None:
    gated = GatedActor(RuntimeError("late failure"))
    w = worker(1000, actor=gated, background=True)
    w.collect_train_episode(max_samples_per_episode=5)
    gated.gate.set()
    with pytest.raises(RuntimeError, match="late failure"):
        w.close()


def test_without_a_warm_up_the_actor_is_built_at_once(tmrl_home) -> None:
    def broken(**spaces: Any) -> ConstantActor:
        raise RuntimeError("broken actor")

    with pytest.raises(RuntimeError, match="broken actor"):
        worker(0, actor=broken, background=True)
    w = worker(0, background=True)
    try:
        assert w._actor_build._thread is None and isinstance(w._actor_build.actor, ConstantActor)
    finally:
        w.close()


def test_beside_a_real_time_env_the_actor_is_built_at_once(tmrl_home) -> None:
    """Building in a thread would delay the real-time env's time steps (the build holds the GIL for long stretches)."""
    from tmrl_core.envs import make_rc_drone

    w = RolloutWorker(
        env_cls=make_rc_drone,
        actor_module_cls=ConstantActor,
        actor_in_background=True,
        random_steps=100,
        standalone=True,
        settings=Settings(),
        save_weights=False,
        model_path="/nonexistent/weights.safetensors",
    )
    try:
        assert w.realtime and w._actor_build._thread is None and isinstance(w._actor_build.actor, ConstantActor)
    finally:
        w.close()


def test_an_env_tunes_an_agent_only_when_that_agent_runs(tmrl_home, plugin_manager) -> None:
    """An env's default_settings may hold an agent's section: it applies when that agent runs, loses to the user's
    value, and is ignored for other agents, even one that is not installed."""
    from tmrl_core import EnvSpec, hookimpl
    from tmrl_core.pipeline import prepare

    class Tuned:
        @hookimpl
        def tmrl_register_envs(self, register: Any) -> None:
            register(
                EnvSpec(name="tuned", factory="tmrl_core.envs:make_pendulum", spaces="tmrl_core.envs:pendulum_spaces",
                        default_settings={"training": {"batch_size": 64}, "sac": {"lr_critic": 3e-4},
                                          "redqsac": {"g": 5}, "agent_not_installed": {"lr": 1.0}})
            )  # fmt: skip

    plugin_manager(Tuned(), entry_points=True)
    sac = prepare("tuned", "sac")
    assert sac.settings.training.batch_size == 64
    assert sac.agent_settings.lr_critic == 3e-4 and sac.agent_settings.lr_actor == 1e-3
    assert "tuned" in sac.settings.origin("sac.lr_critic")
    assert prepare("tuned", "sac", sets=["sac.lr_critic=0.01"]).agent_settings.lr_critic == 0.01
    redq = prepare("tuned", "redqsac")
    assert redq.agent_settings.g == 5 and redq.agent_settings.lr_critic == 1e-3  # sac's section is not redqsac's
    assert prepare("pendulum", "sac").agent_settings.lr_critic == 1e-3  # other envs keep the agent's defaults


def test_a_misspelt_section_in_an_env_s_defaults_blames_its_plugin(tmrl_home, plugin_manager) -> None:
    """A section that no agent owns but that nearly spells a known one is the plugin's typo: refused, naming it."""
    from tmrl_core import EnvSpec, hookimpl
    from tmrl_core.errors import ConfigError
    from tmrl_core.pipeline import prepare

    class Typo:
        @hookimpl
        def tmrl_register_envs(self, register: Any) -> None:
            register(
                EnvSpec(name="typo", factory="tmrl_core.envs:make_pendulum", spaces="tmrl_core.envs:pendulum_spaces",
                        default_settings={"trainng": {"batch_size": 64}})
            )  # fmt: skip
            register(
                EnvSpec(name="redq-typo", factory="tmrl_core.envs:make_pendulum",
                        spaces="tmrl_core.envs:pendulum_spaces", default_settings={"redqsca": {"g": 5}})
            )  # fmt: skip

    plugin_manager(("typo-plugin", Typo()), entry_points=True)
    with pytest.raises(ConfigError) as err:
        prepare("typo", "sac")
    assert "'trainng'" in err.value.message and "typo-plugin" in err.value.message
    assert "did you mean training?" in (err.value.hint or "")
    with pytest.raises(ConfigError) as err:
        prepare("redq-typo", "sac")  # an agent's section misspelt: redqsac is first-party, even where not installed
    assert "did you mean redqsac?" in (err.value.hint or "")
