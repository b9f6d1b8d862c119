"""tmrl-sac: the actor, the agent's update, optimisers, the entropy coefficient, and the AgentContract (checkpoints,
weights to workers, a learning check)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tmrl_sac import SacActor, SacAgent, SacSettings
from torch import nn

from tmrl_core.errors import ConfigError, IncompatibleComponentsError
from tmrl_core.nn import FlattenEncoder
from tmrl_core.testing import AgentContract

B = 16
BOX_OBS = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
# rc-drone-like: four scalars and an action buffer of two actions, as a Tuple of arrays
TUPLE_OBS = spaces.Tuple(
    (
        spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
        spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
        spaces.Box(-0.5, 0.5, shape=(1,), dtype=np.float32),
        spaces.Box(-0.5, 0.5, shape=(1,), dtype=np.float32),
        spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32),
        spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32),
    )
)
# asymmetric bounds, so that squashing to the Box is visible
ACT = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 5.0], np.float32), dtype=np.float32)
SMALL = {"hidden_sizes": (32, 32)}


def obs_batch(space: spaces.Space, n: int = B) -> Any:
    if isinstance(space, spaces.Tuple):
        return tuple(obs_batch(s, n) for s in space.spaces)
    return torch.as_tensor(np.stack([space.sample() for _ in range(n)]))


def make_batch(obs_space: spaces.Space, act_space: spaces.Box, n: int = B, seed: int = 0) -> tuple[Any, ...]:
    obs_space.seed(seed)
    act_space.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    act = torch.as_tensor(np.stack([act_space.sample() for _ in range(n)]))
    rew = torch.randn(n, generator=gen)
    return obs_batch(obs_space, n), act, rew, obs_batch(obs_space, n), torch.zeros(n), torch.zeros(n)


# -- actor ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("obs_space", [BOX_OBS, TUPLE_OBS], ids=["box", "tuple"])
def test_actor_shapes_bounds_and_act(obs_space: spaces.Space) -> None:
    torch.manual_seed(0)
    actor = SacActor(obs_space, ACT, settings=SMALL)
    a, logp = actor(obs_batch(obs_space))
    assert a.shape == (B, 2) and logp is not None and logp.shape == (B,)
    assert torch.isfinite(logp).all()
    low, high = torch.as_tensor(ACT.low), torch.as_tensor(ACT.high)
    assert bool(((a >= low) & (a <= high)).all())

    one = obs_space.sample()
    action = actor.act_(one, test=False)
    assert action.shape == ACT.shape and action.dtype == np.float32 and ACT.contains(action)
    # deterministic in test mode, stochastic otherwise
    assert np.array_equal(actor.act_(one, test=True), actor.act_(one, test=True))
    assert not np.array_equal(actor.act_(one, test=False), actor.act_(one, test=False))
    a_test, logp_none = actor(obs_batch(obs_space), test=True, with_logprob=False)
    assert logp_none is None and a_test.shape == (B, 2)


def test_actor_logp_is_the_squashed_gaussian_density() -> None:
    torch.manual_seed(1)
    actor = SacActor(BOX_OBS, ACT, settings=SMALL)
    o = obs_batch(BOX_OBS)
    torch.manual_seed(2)
    a, logp = actor(o)
    # reference: torch.distributions' Normal pushed through tanh, density in [-1, 1]^|A|
    h = actor.trunk(actor.encoder(o))
    mu, std = actor.mu_layer(h), actor.log_std_layer(h).clamp(-20, 2).exp()
    squashed = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, std), [torch.distributions.TanhTransform(cache_size=1)]
    )
    in_unit_box = (a - actor.action_bias) / actor.action_scale
    expected = squashed.log_prob(in_unit_box.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(logp, expected, atol=2e-3, rtol=1e-3)


def test_non_box_action_spaces_are_rejected_with_a_hint() -> None:
    with pytest.raises(IncompatibleComponentsError) as info:
        SacAgent(BOX_OBS, spaces.Discrete(3), "cpu")
    assert info.value.hint and "Box" in info.value.hint
    with pytest.raises(IncompatibleComponentsError):
        SacActor(BOX_OBS, spaces.Box(-np.inf, np.inf, shape=(2,)))


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        SacAgent(BOX_OBS, ACT, "cpu", settings={"no_such_key": 1})
    with pytest.raises(ConfigError):
        SacAgent(BOX_OBS, ACT, "cpu", settings={"optimizer_actor": "rmsprop"})
    with pytest.raises(ConfigError, match="betas_critic"):
        SacAgent(BOX_OBS, ACT, "cpu", settings={"betas_critic": (0.9, 1.5)})
    for name, field in SacSettings.model_fields.items():
        assert field.description, f"SacSettings.{name} has no description"


# -- the update ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("obs_space", [BOX_OBS, TUPLE_OBS], ids=["box", "tuple"])
def test_train_returns_float_metrics_and_updates_everything(obs_space: spaces.Space) -> None:
    torch.manual_seed(0)
    agent = SacAgent(obs_space, ACT, "cpu", settings=SMALL)
    before = {
        "actor": [p.clone() for p in agent.actor.parameters()],
        "critic": [p.clone() for p in agent.critic.parameters()],
        "target": [p.clone() for p in agent.critic_target.parameters()],
    }
    metrics = agent.train(make_batch(obs_space, ACT))
    assert {"loss_actor", "loss_critic", "entropy_coef", "loss_entropy_coef"} <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    for name, module in (("actor", agent.actor), ("critic", agent.critic), ("target", agent.critic_target)):
        changed = [not torch.equal(p, q) for p, q in zip(before[name], module.parameters(), strict=True)]
        assert all(changed), f"{name}: some parameters did not move"
    assert agent.critic.q.n == 2 and agent.train_steps == 1


def test_only_terminated_cuts_the_bootstrap() -> None:
    obs, act, rew, next_obs, _, _ = make_batch(BOX_OBS, ACT)
    fixed_alpha = {**SMALL, "learn_entropy_coef": False}

    def run(terminated: float, truncated: float) -> dict[str, float]:
        torch.manual_seed(0)
        agent = SacAgent(BOX_OBS, ACT, "cpu", settings=fixed_alpha)
        torch.manual_seed(1)
        return agent.train((obs, act, rew, next_obs, torch.full((B,), terminated), torch.full((B,), truncated)))

    plain = run(0.0, 0.0)
    assert run(0.0, 1.0) == plain  # truncation is ignored
    ended = run(1.0, 0.0)
    assert ended["backup_mean"] == pytest.approx(rew.mean().item(), abs=1e-6)  # y = r
    assert ended["backup_mean"] != pytest.approx(plain["backup_mean"])


# -- optimisers -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizer_choice_betas_and_weight_decay_in_param_groups(name: str, cls: type) -> None:
    settings = {
        **SMALL,
        "optimizer_actor": name,
        "optimizer_critic": name,
        "betas_actor": (0.5, 0.6),
        "betas_critic": (0.7, 0.8),
        "l2_actor": 0.01,
        "l2_critic": 0.02,
        "lr_actor": 0.003,
        "lr_critic": 0.004,
    }
    agent = SacAgent(BOX_OBS, ACT, "cpu", settings=settings)
    for opt, lr, l2, betas in (
        (agent.actor_optimizer, 0.003, 0.01, (0.5, 0.6)),
        (agent.critic_optimizer, 0.004, 0.02, (0.7, 0.8)),
    ):
        assert type(opt) is cls
        (group,) = opt.param_groups
        assert group["lr"] == lr and group["weight_decay"] == l2
        if name != "sgd":
            assert tuple(group["betas"]) == betas
    actor_params = {id(p) for p in agent.actor.parameters()}
    assert {id(p) for p in agent.actor_optimizer.param_groups[0]["params"]} == actor_params
    assert {id(p) for p in agent.critic_optimizer.param_groups[0]["params"]} == {
        id(p) for p in agent.critic.parameters()
    }


@pytest.mark.parametrize("name", ["sgd", "adamw", "adam"])
def test_weight_decay_is_applied(name: str) -> None:
    """Two agents with the same weights, batch and noise, with and without critic weight decay: after one update
    the critics differ by exactly ``-lr * wd * theta`` (SGD's L2 term, AdamW's decoupled decay); Adam's L2 term
    changes the step too."""
    batch = make_batch(BOX_OBS, ACT)
    lr, wd = 0.01, 0.5
    critics = []
    for l2 in (0.0, wd):
        torch.manual_seed(0)
        agent = SacAgent(
            BOX_OBS, ACT, "cpu", settings={**SMALL, "optimizer_critic": name, "lr_critic": lr, "l2_critic": l2}
        )
        start = [p.detach().clone() for p in agent.critic.parameters()]
        torch.manual_seed(1)
        agent.train(batch)
        critics.append([p.detach().clone() for p in agent.critic.parameters()])
    if name == "adam":
        # the L2 term goes through Adam's normalisation: no closed form, but the step must change
        assert any(not torch.allclose(plain, decayed) for plain, decayed in zip(*critics, strict=True))
        return
    for theta0, plain, decayed in zip(start, *critics, strict=True):
        torch.testing.assert_close(decayed - plain, -lr * wd * theta0, atol=1e-6, rtol=1e-4)


# -- entropy coefficient --------------------------------------------------------------------------------------------
def test_fixed_alpha_stays_fixed() -> None:
    agent = SacAgent(BOX_OBS, ACT, "cpu", settings={**SMALL, "learn_entropy_coef": False, "alpha": 0.05})
    assert agent.entropy.optimizer is None and not agent.entropy.log_alpha.requires_grad
    batch = make_batch(BOX_OBS, ACT)
    for _ in range(5):
        metrics = agent.train(batch)
    assert metrics["entropy_coef"] == pytest.approx(0.05)
    assert "loss_entropy_coef" not in metrics


@pytest.mark.parametrize(("target_entropy", "direction"), [(10.0, 1), (-50.0, -1)])
def test_learned_alpha_moves_towards_the_target_entropy(target_entropy: float, direction: int) -> None:
    """Alpha grows when the policy's entropy is below the target (here: unreachable) and shrinks when above."""
    torch.manual_seed(0)
    settings = {**SMALL, "alpha": 0.2, "lr_entropy": 0.05, "target_entropy": target_entropy}
    agent = SacAgent(BOX_OBS, ACT, "cpu", settings=settings)
    assert agent.entropy.target_entropy == target_entropy
    batch = make_batch(BOX_OBS, ACT)
    for _ in range(10):
        agent.train(batch)
    alpha = agent.entropy.value().item()
    assert (alpha - 0.2) * direction > 0.1 * 0.2


def test_default_target_entropy_is_minus_action_dimension() -> None:
    agent = SacAgent(BOX_OBS, ACT, "cpu", settings=SMALL)
    assert agent.entropy.target_entropy == -2.0


# -- encoders -------------------------------------------------------------------------------------------------------
class ParamEncoder(nn.Module):
    """An env-supplied encoder with parameters."""

    def __init__(self, observation_space: spaces.Space) -> None:
        super().__init__()
        self.flat = FlattenEncoder(observation_space)
        self.linear = nn.Linear(self.flat.out_features, 6)
        self.out_features = 6

    def forward(self, obs: Any) -> torch.Tensor:
        return torch.relu(self.linear(self.flat(obs)))


@pytest.mark.parametrize("mode", ["shared", "per_critic"])
def test_env_encoders_are_used_by_actor_and_critics(mode: str) -> None:
    agent = SacAgent(TUPLE_OBS, ACT, "cpu", encoder=ParamEncoder, settings={**SMALL, "critic_encoder": mode})
    assert isinstance(agent.actor.encoder, ParamEncoder)
    assert agent.critic.per_critic == (mode == "per_critic")
    encoder_params = [p.clone() for p in agent.critic.encoder.parameters()]
    agent.train(make_batch(TUPLE_OBS, ACT))
    assert all(not torch.equal(p, q) for p, q in zip(encoder_params, agent.critic.encoder.parameters(), strict=True))
    assert agent.critic(obs_batch(TUPLE_OBS), torch.zeros(B, 2)).shape == (2, B)


def test_the_registered_spec_names_this_agent(tmrl_home: Any) -> None:
    """What --algo sac builds (the contract below builds it and loads its weights into a worker's actor)."""
    from tmrl_core import get_component
    from tmrl_core.specs import resolve

    spec = get_component("agent", "sac")
    assert (spec.load(), spec.load_settings_model(), resolve(spec.actor)) == (SacAgent, SacSettings, SacActor)


def test_layer_normalised_critics_keep_q_bounded_when_inputs_blow_up() -> None:
    """critic_layer_norm puts a LayerNorm in every hidden layer of every critic (its own scale and shift, saved with
    the agent); the features reaching the last layer are then normalised, so scaling the input up by 1e4 leaves Q
    within what the last layer's weights allow, where the plain critic's Q grows with the input."""
    box = spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)
    torch.manual_seed(0)
    plain = SacAgent(box, ACT, "cpu", settings=SMALL)
    normed = SacAgent(box, ACT, "cpu", settings={**SMALL, "critic_layer_norm": True})
    assert plain.critic.q.norms is None
    assert len(normed.critic.q.norms) == 2 and "q.norms.1.weight" in normed.state_dict()["critic"]
    assert normed.critic.q.norms[0].weight.shape == (2, 1, 32)  # one scale vector per critic
    assert not any(isinstance(m, nn.LayerNorm) for m in normed.actor.modules())  # the actor is unchanged

    o, a = torch.randn(B, 6), torch.zeros(B, 2)
    for agent in (plain, normed):
        agent.train(make_batch(box, ACT))
    # |Q_i| <= ||h_i|| ||w_i|| + |b_i|, with normalised features ||h_i|| <= max|scale_i| sqrt(32) + ||shift_i||
    norm, last = normed.critic.q.norms[-1], normed.critic.q.layers[-1]
    h_bound = norm.weight.abs().amax(dim=(1, 2)) * 32**0.5 + norm.bias.norm(dim=(1, 2))
    bound = h_bound * last.weight.norm(dim=(1, 2)) + last.bias.abs().flatten()
    assert (normed.critic(o * 1e4, a).abs().amax(dim=1) <= bound).all()
    assert plain.critic(o * 1e4, a).abs().max().item() > 100 * plain.critic(o, a).abs().max().item()


# -- learning ---------------------------------------------------------------------------------------------------------


# -- the agent contract: actions, determinism, metrics, checkpoints, weights to workers, learning ---------------------
class TestSacContract(AgentContract):
    """On pendulum, with a learning check: the deterministic policy clearly beats a random one (about -1200; the
    untrained deterministic policy scores about -1700) within 3,000 steps. Small networks with a higher learning rate
    keep it fast; the full figures with the default settings are in benchmarks/."""

    agent_name = "sac"
    env_name = "pendulum"
    sets = ["sac.hidden_sizes=[64,64]", "sac.lr_actor=0.003", "sac.lr_critic=0.003"]
    learning_threshold = -700.0
    learning_steps, learning_start_steps, learning_eval_interval, learning_seed = 3000, 500, 500, 2


class TestSacContractTupleObservationsFixedAlpha(AgentContract):
    """On the RC drone: tuple observations (with rtgym's action buffer), and a fixed alpha through the round trip."""

    agent_name = "sac"
    env_name = "rc-drone"
    sets = ["sac.hidden_sizes=[32,32]", "sac.learn_entropy_coef=false", "sac.alpha=0.05"]

