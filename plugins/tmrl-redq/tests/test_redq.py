"""tmrl-redq: the batched ensemble against separate critics, the random target subset, the actor's mean-of-N loss,
the G ratio, checkpoints, and a learning check."""

from __future__ import annotations

import copy
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tmrl_redq.agent import RedqSacAgent, RedqSettings
from tmrl_sac import SacActor, SacSettings
from torch import nn

from tmrl_core.errors import ConfigError
from tmrl_core.nn import FlattenEncoder, mlp
from tmrl_core.testing import AgentContract, ensemble_member

B = 16
BOX_OBS = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
TUPLE_OBS = spaces.Tuple(
    (
        spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
        spaces.Box(-0.5, 0.5, shape=(2,), dtype=np.float32),
        spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32),
    )
)
ACT = spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32)
SMALL = {"hidden_sizes": (32, 32), "n": 5, "m": 2, "g": 3}


def obs_batch(space: spaces.Space, n: int = B) -> Any:
    if isinstance(space, spaces.Tuple):
        return tuple(obs_batch(s, n) for s in space.spaces)
    return torch.as_tensor(np.stack([space.sample() for _ in range(n)]))


def make_batch(obs_space: spaces.Space, n: int = B, seed: int = 0) -> tuple[Any, ...]:
    obs_space.seed(seed)
    ACT.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    act = torch.as_tensor(np.stack([ACT.sample() for _ in range(n)]))
    return (
        obs_batch(obs_space, n),
        act,
        torch.randn(n, generator=gen),
        obs_batch(obs_space, n),
        torch.zeros(n),
        torch.zeros(n),
    )


def test_settings_paper_names_defaults_and_validation() -> None:
    settings = RedqSettings()
    assert (settings.n, settings.m, settings.g) == (10, 2, 20)
    assert set(SacSettings.model_fields) < set(RedqSettings.model_fields)
    for name, field in RedqSettings.model_fields.items():
        assert field.description, f"RedqSettings.{name} has no description"
    with pytest.raises(ConfigError, match="cannot exceed"):
        RedqSacAgent(BOX_OBS, ACT, "cpu", settings={"n": 3, "m": 4})
    with pytest.raises(ConfigError):
        RedqSacAgent(BOX_OBS, ACT, "cpu", settings={"redq_n": 3})
    with pytest.raises(ConfigError, match="utd_ratio is not a REDQ setting.*write g instead"):
        RedqSacAgent(BOX_OBS, ACT, "cpu", settings={"utd_ratio": 5})


@pytest.mark.parametrize("obs_space", [BOX_OBS, TUPLE_OBS], ids=["box", "tuple"])
def test_train_shapes_metrics_and_actor_class(obs_space: spaces.Space) -> None:
    agent = RedqSacAgent(obs_space, ACT, "cpu", settings=SMALL)
    assert agent.critic(obs_batch(obs_space), torch.zeros(B, 2)).shape == (5, B)
    assert type(agent.get_actor()) is SacActor
    metrics = {}
    for _ in range(3):
        metrics = agent.train(make_batch(obs_space))
    assert {"loss_critic", "loss_actor", "entropy_coef", "q_std_ensemble"} <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert agent.updates_per_step == 3 and not hasattr(agent, "utd_ratio")


# -- the batched ensemble --------------------------------------------------------------------------------------------
def _separate_critics(agent: RedqSacAgent) -> list[nn.Sequential]:
    return [ensemble_member(agent.critic.q, i) for i in range(agent.critic.n)]


def test_batched_ensemble_equals_separate_critics_values_and_gradients() -> None:
    """N separate critic MLPs holding the same weights give the same Q values, the same weight gradients for the
    critic loss, and the same action gradients for the actor loss."""
    torch.manual_seed(0)
    agent = RedqSacAgent(TUPLE_OBS, ACT, "cpu", settings={**SMALL, "n": 10})
    separate = _separate_critics(agent)
    o, a, _, _, _, _ = make_batch(TUPLE_OBS)
    y = torch.randn(B)
    features = FlattenEncoder(TUPLE_OBS)(o)

    q = agent.critic(o, a)
    q_sep = torch.stack([critic(torch.cat([features, a], -1)).squeeze(-1) for critic in separate])
    torch.testing.assert_close(q, q_sep)

    (q - y).pow(2).mean(dim=1).sum().backward()
    sum(((qi - y) ** 2).mean() for qi in q_sep).backward()
    for i, critic in enumerate(separate):
        linears = [m for m in critic if isinstance(m, nn.Linear)]
        for layer, linear in zip(agent.critic.q.layers, linears, strict=True):
            torch.testing.assert_close(layer.weight.grad[i], linear.weight.grad.T)
            torch.testing.assert_close(layer.bias.grad[i, 0], linear.bias.grad)

    # the actor's path: gradient w.r.t. the action through the mean of N critics, none into the critics' weights
    agent.critic.zero_grad(set_to_none=True)
    pi = torch.rand(B, 2, requires_grad=True)
    pi_sep = pi.detach().clone().requires_grad_(True)
    agent.critic(o, pi, detach_params=True).mean(dim=0).sum().backward()
    torch.stack([c(torch.cat([features, pi_sep], -1)).squeeze(-1) for c in separate]).mean(dim=0).sum().backward()
    torch.testing.assert_close(pi.grad, pi_sep.grad)
    assert all(p.grad is None for p in agent.critic.parameters())


class ParamEncoder(nn.Module):
    """An env-supplied encoder with parameters."""

    def __init__(self, observation_space: spaces.Space) -> None:
        super().__init__()
        self.flat = FlattenEncoder(observation_space)
        self.linear = nn.Linear(self.flat.out_features, 8)
        self.out_features = 8

    def forward(self, obs: Any) -> torch.Tensor:
        return torch.tanh(self.linear(self.flat(obs)))


def test_per_critic_encoders_equal_separate_encoder_critic_pairs() -> None:
    torch.manual_seed(1)
    agent = RedqSacAgent(
        TUPLE_OBS, ACT, "cpu", encoder=ParamEncoder, settings={**SMALL, "critic_encoder": "per_critic"}
    )
    o, a, _, _, _, _ = make_batch(TUPLE_OBS)
    n = agent.critic.n
    encoders = []
    for i in range(n):
        enc = ParamEncoder(TUPLE_OBS)
        with torch.no_grad():
            enc.linear.weight.copy_(agent.critic.encoder.get_parameter("stacked__linear__weight")[i])
            enc.linear.bias.copy_(agent.critic.encoder.get_parameter("stacked__linear__bias")[i])
        encoders.append(enc)
    heads = _separate_critics(agent)
    q = agent.critic(o, a)
    q_sep = torch.stack([heads[i](torch.cat([encoders[i](o), a], -1)).squeeze(-1) for i in range(n)])
    torch.testing.assert_close(q, q_sep)
    q.sum().backward()
    q_sep.sum().backward()
    stacked_grad = agent.critic.encoder.get_parameter("stacked__linear__weight").grad
    for i in range(n):
        torch.testing.assert_close(stacked_grad[i], encoders[i].linear.weight.grad)


def test_shared_encoder_is_computed_once_for_all_heads() -> None:
    agent = RedqSacAgent(TUPLE_OBS, ACT, "cpu", encoder=ParamEncoder, settings=SMALL)
    assert isinstance(agent.critic.encoder, ParamEncoder)
    calls = []
    agent.critic.encoder.register_forward_hook(lambda *_: calls.append(1))
    agent.critic(obs_batch(TUPLE_OBS), torch.zeros(B, 2))
    assert len(calls) == 1


@pytest.mark.parametrize("mode", ["shared", "per_critic"])
def test_evaluating_a_subset_equals_selecting_from_the_full_ensemble(mode: str) -> None:
    torch.manual_seed(2)
    agent = RedqSacAgent(TUPLE_OBS, ACT, "cpu", encoder=ParamEncoder, settings={**SMALL, "critic_encoder": mode})
    o, a, _, _, _, _ = make_batch(TUPLE_OBS)
    subset = torch.tensor([4, 0, 2])
    torch.testing.assert_close(agent.critic_target(o, a, members=subset), agent.critic_target(o, a)[subset])


# -- the target -----------------------------------------------------------------------------------------------------
def _constant_critics(critic: nn.Module, values: list[float]) -> None:
    """Make critic i output values[i] whatever its input."""
    with torch.no_grad():
        last = critic.q.layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor(values).view(-1, 1, 1))


def test_target_uses_exactly_m_distinct_random_critics() -> None:
    n, m = 10, 2
    agent = RedqSacAgent(BOX_OBS, ACT, "cpu", settings={**SMALL, "n": n, "m": m})
    _constant_critics(agent.critic_target, [float(i) for i in range(n)])
    o2 = obs_batch(BOX_OBS)
    a2 = torch.zeros(B, 2)
    torch.manual_seed(0)
    minima, seen = Counter(), set()
    draws = 600
    for _ in range(draws):
        rng = torch.get_rng_state()
        chosen = agent.target_subset().tolist()
        torch.set_rng_state(rng)  # target_q draws the same subset
        q_targ = agent.target_q(o2, a2)
        assert len(chosen) == m and len(set(chosen)) == m and all(0 <= i < n for i in chosen)
        assert torch.equal(q_targ, torch.full((B,), float(min(chosen))))
        minima[min(chosen)] += 1
        seen.add(frozenset(chosen))
    # every pair is drawn, and the minimum follows sampling without replacement: P(min = k) = (n-1-k) / C(n, 2)
    assert len(seen) == math.comb(n, m)
    assert minima[n - 1] == 0
    for k in range(n - 1):
        expected = (n - 1 - k) / math.comb(n, 2)
        assert abs(minima[k] / draws - expected) < 0.06


def test_train_target_is_the_min_over_the_subset() -> None:
    """With constant target critics and a fixed alpha, the backup equals r + gamma * (min of the drawn subset -
    alpha * logp): recomputed from the same random stream."""
    settings = {**SMALL, "n": 6, "m": 3, "learn_entropy_coef": False, "alpha": 0.1, "gamma": 0.9}
    torch.manual_seed(0)
    agent = RedqSacAgent(BOX_OBS, ACT, "cpu", settings=settings)
    _constant_critics(agent.critic_target, [3.0, -1.0, 2.0, 0.5, 4.0, 1.5])
    o, a, r, o2, d, t = make_batch(BOX_OBS)
    twin = copy.deepcopy(agent)
    torch.manual_seed(5)
    metrics = agent.train((o, a, r, o2, d, t))
    torch.manual_seed(5)
    with torch.no_grad():
        _, logp_a2 = twin.actor(o2)
        subset = torch.randperm(6)[:3]
    values = torch.tensor([3.0, -1.0, 2.0, 0.5, 4.0, 1.5])
    expected_y = r + 0.9 * (values[subset].min() - 0.1 * logp_a2)
    assert metrics["backup_mean"] == pytest.approx(expected_y.mean().item(), rel=1e-5)


# -- the actor ------------------------------------------------------------------------------------------------------
def test_actor_is_trained_against_the_mean_of_all_n_critics() -> None:
    n = 5
    settings = {**SMALL, "n": n, "g": 1, "learn_entropy_coef": False, "alpha": 0.3, "optimizer_critic": "sgd"}
    settings["lr_critic"] = 1e-30  # the critics (made constant below) stay as they are through the critic step
    agent = RedqSacAgent(BOX_OBS, ACT, "cpu", settings=settings)
    values = [1.0, -2.0, 7.0, 0.5, 3.0]
    _constant_critics(agent.critic, values)
    metrics = agent.train(make_batch(BOX_OBS))
    # loss_actor = mean(alpha * logp - mean_i Q_i): mean of N, neither the min nor a subset
    assert metrics["loss_actor"] == pytest.approx(0.3 * metrics["logp_pi"] - np.mean(values), rel=1e-5)


def test_actor_updates_once_every_g_critic_updates() -> None:
    agent = RedqSacAgent(BOX_OBS, ACT, "cpu", settings={**SMALL, "g": 4})
    batch = make_batch(BOX_OBS)
    snapshot = [p.clone() for p in agent.actor.parameters()]
    alpha0 = agent.entropy.value().item()
    for call in range(1, 9):
        critic_before = [p.clone() for p in agent.critic.parameters()]
        agent.train(batch)
        assert all(not torch.equal(p, q) for p, q in zip(critic_before, agent.critic.parameters(), strict=True))
        moved = any(not torch.equal(p, q) for p, q in zip(snapshot, agent.actor.parameters(), strict=True))
        assert moved == (call % 4 == 0), f"call {call}"
        assert (agent.entropy.value().item() != alpha0) == (call >= 4)
        snapshot = [p.clone() for p in agent.actor.parameters()]
    assert (agent.train_steps, agent.actor_updates) == (8, 2)


def test_the_registered_spec_names_this_agent(tmrl_home: Any) -> None:
    """What --algo redqsac builds (the contract below builds it and loads its weights into a worker's actor)."""
    from tmrl_core import get_component
    from tmrl_core.specs import resolve

    spec = get_component("agent", "redqsac")
    assert (spec.load(), spec.load_settings_model(), resolve(spec.actor)) == (RedqSacAgent, RedqSettings, SacActor)


def test_separate_mlp_reference_is_an_mlp() -> None:
    # the reference critics used above are plain tmrl_core.nn.mlp modules (same structure as a hand-built critic)
    reference = mlp([9, 32, 32, 1], "relu")
    agent = RedqSacAgent(TUPLE_OBS, ACT, "cpu", settings=SMALL)
    member = ensemble_member(agent.critic.q, 0)
    assert [type(m) for m in member] == [type(m) for m in reference]


# -- the agent contract: actions, determinism, metrics, checkpoints (ensemble, optimisers, counters, the actor update
# at every G-th call), weights to workers, learning -----------------------------------------------------------------
class TestRedqContract(AgentContract):
    """On pendulum, with a learning check: the deterministic policy clearly beats a random one (about -1200; the
    untrained deterministic policy scores about -1700) within 1,000 steps, with G = 5 critic updates per step. A small
    ensemble keeps it fast; the full figures with the default settings are in benchmarks/."""

    agent_name = "redqsac"
    env_name = "pendulum"
    sets = ["redqsac.hidden_sizes=[64,64]", "redqsac.n=5", "redqsac.m=2", "redqsac.g=5"]
    learning_threshold = -700.0
    learning_steps, learning_start_steps, learning_eval_interval, learning_seed = 1000, 300, 250, 1


class TestRedqContractTupleObservations(AgentContract):
    """On the RC drone: tuple observations, with layer-normalised critics through checkpoints and the weights sent."""

    agent_name = "redqsac"
    env_name = "rc-drone"
    sets = [
        "redqsac.hidden_sizes=[32,32]",
        "redqsac.n=4",
        "redqsac.m=2",
        "redqsac.g=3",
        "redqsac.critic_layer_norm=true",
    ]

