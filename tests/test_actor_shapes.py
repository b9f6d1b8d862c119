"""TorchActorModule.act_ unbatches a batch of one; the worker refuses any other action shape, naming the actor."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
import torch

from tmrl_core import GenericGymEnv, TorchActorModule
from tmrl_core.errors import ActionShapeError, PluginError


class ShapedActor(TorchActorModule):
    """Returns the mean of the observation batch in whatever shape it is told to."""

    def __init__(self, observation_space: Any, action_space: Any, out_shape: tuple[int, ...] = (1,)) -> None:
        super().__init__(observation_space, action_space)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.out_shape = out_shape

    def act(self, obs: Any, test: bool = False) -> Any:
        assert obs.shape == (1, 3), "act receives a batch of one observation"
        with torch.no_grad():
            return (self.scale * obs.mean()).tanh().expand(self.out_shape).clone()  # a tensor is accepted too


def make_worker(out_shape: tuple[int, ...], **kwargs: Any) -> Any:
    from tmrl_core.worker import RolloutWorker

    return RolloutWorker(
        env_cls=partial(GenericGymEnv, id="Pendulum-v1", to_float32=True),
        actor_module_cls=partial(ShapedActor, out_shape=out_shape),
        standalone=True,
        verbose=False,
        seed=0,
        **kwargs,
    )


@pytest.mark.parametrize("out_shape", [(1,), (1, 1)])
def test_act_returns_one_action_shaped_like_the_space(tmrl_home: Any, out_shape: tuple[int, ...]) -> None:
    worker = make_worker(out_shape)
    try:
        obs, _ = worker.env.reset(seed=0)
        action = worker.actor.act_(obs)
        assert isinstance(action, np.ndarray) and action.shape == (1,)
        assert worker.act(obs).dtype == np.float32
        ret, steps = worker.run_episode(max_samples_per_episode=5)
        assert steps == 5 and np.isfinite(ret)
    finally:
        worker.close()


@pytest.mark.parametrize("out_shape", [(), (2,), (1, 1, 1)])
def test_the_worker_refuses_an_action_of_another_shape_naming_the_actor(
    tmrl_home: Any, out_shape: tuple[int, ...]
) -> None:
    worker = make_worker(out_shape)
    try:
        with pytest.raises(ActionShapeError) as err:
            worker.run_episode(max_samples_per_episode=5)
    finally:
        worker.close()
    assert isinstance(err.value, PluginError)
    assert f"action of shape {out_shape}" in err.value.message and "expects (1,)" in err.value.message
    assert "test_actor_shapes.ShapedActor" in err.value.message
    assert "act() must return one action" in (err.value.hint or "")


def test_the_pipeline_names_the_agent_and_its_plugin(tmrl_home: Any) -> None:
    from tmrl_core.pipeline import build_worker, prepare

    worker = build_worker(prepare("pendulum", "sac"), standalone=True)
    try:
        assert worker.actor_origin == "the actor of agent 'sac' (plugin 'sac')"
        worker.actor.act = lambda obs, test=False: np.zeros((), dtype=np.float32)  # a squeezed action
        with pytest.raises(ActionShapeError, match=r"the actor of agent 'sac' \(plugin 'sac'\) returned"):
            worker.run_episode(max_samples_per_episode=2)
    finally:
        worker.close()
