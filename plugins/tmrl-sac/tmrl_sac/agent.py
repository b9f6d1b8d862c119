"""Soft Actor-Critic (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications").

- :class:`SacSettings`: the hyperparameters (settings section ``sac``).
- :class:`SacActor`: the squashed-Gaussian policy the workers run.
- :class:`EnsembleCritic`: ``n`` Q-functions ``Q_i(o, a)`` computed as one batched computation (SAC uses ``n = 2``,
  REDQ more).
- :class:`EntropyCoefficient`: the entropy coefficient ``alpha``, fixed (SAC v1) or learned (SAC v2).
- :func:`build_optimizer`: the optimiser chosen in the settings.
- :class:`SacAgent`: the training agent; :meth:`SacAgent.train` is the whole update, top to bottom. REDQ
  (``tmrl_redq``) is this class with four of its small methods replaced (``num_critics``, ``target_q``,
  ``policy_q``, ``actor_update_due``).

Notation (the paper's): ``o`` observation, ``a`` action, ``r`` reward, ``o2`` next observation, ``d`` terminated,
``pi`` the policy, ``logp`` log-densities, ``q`` critic values, ``y`` the bootstrapped critic target ("backup"),
``alpha`` the entropy coefficient, ``gamma`` the discount, ``polyak`` the target averaging factor.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from tmrl_core import TorchActorModule, TrainingAgent
from tmrl_core.errors import ConfigError, IncompatibleComponentsError
from tmrl_core.nn import ACTIVATIONS, EncoderFactory, EnsembleMLP, VmapEnsemble, make_encoder, mlp, polyak_update
from tmrl_core.settings import SectionValues, coerce_section
from tmrl_sac.settings import SacSettings

__all__ = [
    "EnsembleCritic",
    "EntropyCoefficient",
    "SacActor",
    "SacAgent",
    "SacSettings",
    "build_optimizer",
    "check_action_space",
    "metrics_to_floats",
]

#: Bounds of the policy's log standard deviation (as in SAC's reference implementations).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def check_action_space(action_space: spaces.Space, algo: str = "sac") -> tuple[int, np.ndarray, np.ndarray]:
    """``(|A|, low, high)`` of a bounded ``Box`` action space; raises IncompatibleComponentsError otherwise."""
    if not isinstance(action_space, spaces.Box):
        raise IncompatibleComponentsError(
            f"{algo} needs continuous actions (a gymnasium Box), got {type(action_space).__name__}",
            hint=f"choose an environment with a Box action space for --algo {algo}, or an algorithm for this space",
        )
    low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise IncompatibleComponentsError(
            f"{algo} squashes actions into the Box bounds, but this Box is unbounded ({action_space})",
            hint="wrap the environment so that its action space has finite bounds (e.g. [-1, 1])",
        )
    return int(np.prod(action_space.shape, dtype=np.int64)), low.reshape(-1), high.reshape(-1)


class SacActor(TorchActorModule):
    """The squashed-Gaussian policy: ``a = low + (tanh(u) + 1) / 2 * (high - low)``, ``u ~ N(mu(o), sigma(o))``.

    ``logp`` is the log-density of ``tanh(u)`` in ``[-1, 1]^|A|`` (the Box is an affine image of it), so a target
    entropy of ``-|A|`` means the same thing whatever the action bounds.

    Args:
        observation_space, action_space: the environment's spaces (a bounded Box for actions).
        encoder: the env spec's encoder factory (None: flatten).
        settings: :class:`SacSettings` (``hidden_sizes``, ``activation``) or a subclass, a dict, or None.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        encoder: EncoderFactory | None = None,
        settings: SectionValues = None,
    ) -> None:
        super().__init__(observation_space, action_space)
        settings = coerce_section(settings, SacSettings)
        act_dim, low, high = check_action_space(action_space)
        self.encoder = make_encoder(encoder, observation_space)
        hidden = list(settings.hidden_sizes)
        self.trunk = mlp(
            [self.encoder.out_features, *hidden], ACTIVATIONS[settings.activation], ACTIVATIONS[settings.activation]
        )
        self.mu_layer = nn.Linear(hidden[-1], act_dim)
        self.log_std_layer = nn.Linear(hidden[-1], act_dim)
        # not persistent: derived from the action space, so weights files hold learned tensors only
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32), persistent=False)
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32), persistent=False)
        self.act_dim = act_dim

    def forward(
        self, obs: Any, test: bool = False, with_logprob: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(action, logp)`` for a batch of observations; ``test=True`` gives the deterministic action
        ``tanh(mu)``. The action has shape ``(batch, *action_space.shape)``; ``logp`` has shape ``(batch,)``."""
        h = self.trunk(self.encoder(obs))
        mu = self.mu_layer(h)
        log_std = self.log_std_layer(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        eps = torch.zeros_like(mu) if test else torch.randn_like(mu)
        u = mu + log_std.exp() * eps
        logp = None
        if with_logprob:
            # Gaussian log-density of u (its standardised value is eps), then the tanh change of variables:
            # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), numerically stable.
            logp_u = (-0.5 * eps.pow(2) - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * self.act_dim
            logp = logp_u - (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)
        a = torch.tanh(u) * self.action_scale + self.action_bias
        return a.view(a.shape[0], *self.action_space.shape), logp

    @torch.no_grad()
    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        """The action for a batch of one observation, as a numpy array of shape ``action_space.shape``."""
        a, _ = self.forward(obs, test=test, with_logprob=False)
        return a[0].cpu().numpy().astype(self.action_space.dtype, copy=False)


class EnsembleCritic(nn.Module):
    """``n`` Q-functions ``Q_i(o, a) = MLP_i([features(o), a])`` evaluated together.

    The heads are one :class:`~tmrl_core.nn.EnsembleMLP` (stacked weights, batched matrix products). The observation
    encoder is either shared by all heads (``"shared"``: computed once per batch; it is trained by the sum of the
    critics' losses, as in image-based SAC variants) or one per critic (``"per_critic"``: ``n`` independent encoders
    run with ``torch.func.vmap``). An encoder without parameters (the default flatten) is always computed once.

    ``forward(o, a)`` returns ``(n, batch)``; ``members`` selects a subset, ``detach_params`` lets gradients reach
    the action but not the critic's weights (the actor's loss).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        n: int,
        encoder: EncoderFactory | None = None,
        hidden_sizes: Iterable[int] = (256, 256),
        activation: str = "relu",
        encoder_mode: Literal["shared", "per_critic"] = "shared",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        act_dim, _, _ = check_action_space(action_space)
        self.n = n
        first = make_encoder(encoder, observation_space)
        self.per_critic = encoder_mode == "per_critic" and any(True for _ in first.parameters())
        if self.per_critic:
            others = [make_encoder(encoder, observation_space) for _ in range(n - 1)]
            self.encoder: nn.Module = VmapEnsemble([first, *others])
        else:
            self.encoder = first
        self.q = EnsembleMLP(n, [first.out_features + act_dim, *hidden_sizes, 1], activation, layer_norm=layer_norm)

    def forward(
        self, obs: Any, act: torch.Tensor, members: torch.Tensor | None = None, detach_params: bool = False
    ) -> torch.Tensor:
        act = act.reshape(act.shape[0], -1)
        if detach_params:
            # only the action needs a gradient path: the encoder runs without building a graph
            with torch.no_grad():
                features = self.encoder(obs)
        else:
            features = self.encoder(obs)
        if self.per_critic:
            if members is not None:
                features = features[members]
            x = torch.cat([features, act.expand(features.shape[0], *act.shape)], dim=-1)
        else:
            x = torch.cat([features, act], dim=-1)
        return self.q(x, members=members, detach_params=detach_params).squeeze(-1)


def build_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (adam, adamw, sgd) over ``params``.

    Adam and SGD apply ``weight_decay`` as an L2 term added to the gradient, AdamW as decoupled decay; SGD ignores
    ``betas``. The fused implementation (one kernel for all parameters) is used where torch has it: on CPU it is
    several times faster than the default per-tensor loop, which dominates small networks' update time.
    """
    params = list(params)
    if name == "adam":
        cls: type[torch.optim.Optimizer] = torch.optim.Adam
        kwargs: dict[str, Any] = {"lr": lr, "betas": betas, "weight_decay": weight_decay}
    elif name == "adamw":
        cls, kwargs = torch.optim.AdamW, {"lr": lr, "betas": betas, "weight_decay": weight_decay}
    elif name == "sgd":
        cls, kwargs = torch.optim.SGD, {"lr": lr, "weight_decay": weight_decay}
    else:
        raise ConfigError(f"unknown optimizer {name!r}", hint="choose one of: adam, adamw, sgd")
    try:
        return cls(params, fused=True, **kwargs)
    except RuntimeError:
        # fused kernels exist for floating-point tensors on the usual devices only
        return cls(params, foreach=True, **kwargs)


class EntropyCoefficient(nn.Module):
    """The entropy coefficient ``alpha``: fixed, or learned as ``log(alpha)`` so that the policy's entropy tracks
    ``target_entropy`` (loss ``-log(alpha) * (logp + target_entropy)``, SAC v2).

    Args:
        alpha: the fixed value, or the initial value when learned.
        learn: learn ``alpha``.
        target_entropy: the entropy target (None: ``-act_dim``).
        act_dim: ``|A|``.
        lr: learning rate of ``log(alpha)`` (Adam).
        device: where ``log(alpha)`` lives.
    """

    def __init__(
        self,
        alpha: float,
        learn: bool,
        target_entropy: float | None,
        act_dim: int,
        lr: float,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.learn = learn
        self.target_entropy = float(-act_dim if target_entropy is None else target_entropy)
        log_alpha = torch.tensor(math.log(alpha), dtype=torch.float32, device=device)
        self.log_alpha = nn.Parameter(log_alpha, requires_grad=learn)
        self.optimizer = build_optimizer("adam", [self.log_alpha], lr, (0.9, 0.999), 0.0) if learn else None

    def value(self) -> torch.Tensor:
        """The current ``alpha`` (a detached scalar tensor)."""
        return self.log_alpha.detach().exp()

    def loss(self, logp_pi: torch.Tensor) -> torch.Tensor | None:
        """``-log(alpha) * (logp + target_entropy)`` averaged over the batch (None when alpha is fixed); its gradient
        reaches ``log(alpha)`` only, so it can be backpropagated together with the actor's loss."""
        if self.optimizer is None:
            return None
        return -(self.log_alpha * (logp_pi.detach() + self.target_entropy)).mean()

    def step(self) -> None:
        """Apply the gradient that backpropagating :meth:`loss` left on ``log(alpha)``, then clear it."""
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def optimizer_state(self) -> dict[str, Any] | None:
        return None if self.optimizer is None else self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, Any] | None) -> None:
        if self.optimizer is not None and state is not None:
            self.optimizer.load_state_dict(state)


def metrics_to_floats(**values: torch.Tensor) -> dict[str, float]:
    """Scalar tensors to floats with a single device synchronisation."""
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    return dict(zip(values, stacked.tolist(), strict=True))


class SacAgent(TrainingAgent):
    """Soft Actor-Critic with twin critics, polyak-averaged target critics and a fixed or learned ``alpha``.

    Args:
        observation_space, action_space: the environment's spaces (a bounded Box for actions).
        device: where the models live and batches arrive.
        encoder: the env spec's encoder factory (None: flatten).
        settings: :class:`SacSettings`, a dict of its fields, or None for the defaults.
    """

    #: the settings model this agent validates its settings with
    settings_model: type[SacSettings] = SacSettings
    #: the name users type (``--algo``), for error messages
    algo: str = "sac"

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: str | torch.device = "cpu",
        encoder: EncoderFactory | None = None,
        settings: SectionValues = None,
    ) -> None:
        super().__init__(observation_space, action_space, device)
        self.settings = s = coerce_section(settings, self.settings_model)
        act_dim, _, _ = check_action_space(action_space, algo=self.algo)
        self.actor = SacActor(observation_space, action_space, encoder, s).to(device)
        self.critic = EnsembleCritic(
            observation_space,
            action_space,
            self.num_critics(),
            encoder,
            s.hidden_sizes,
            s.activation,
            s.critic_encoder,
            layer_norm=s.critic_layer_norm,
        ).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = build_optimizer(
            s.optimizer_actor, self.actor.parameters(), s.lr_actor, s.betas_actor, s.l2_actor
        )
        self.critic_optimizer = build_optimizer(
            s.optimizer_critic, self.critic.parameters(), s.lr_critic, s.betas_critic, s.l2_critic
        )
        self.entropy = EntropyCoefficient(
            s.alpha, s.learn_entropy_coef, s.target_entropy, act_dim, s.lr_entropy, device
        )
        self.train_steps = 0  # critic updates (train calls)
        self.actor_updates = 0

    # -- what REDQ changes: four small methods, each one of the paper's differences ---------------------------------
    def num_critics(self) -> int:
        """Critics in the ensemble: two for SAC's clipped double Q."""
        return 2

    def target_q(self, o2: Any, a2: torch.Tensor) -> torch.Tensor:
        """The target critics' value of ``(o2, a2)``: SAC's clipped double Q, ``min_i Q_targ_i(o2, a2)``."""
        return self.critic_target(o2, a2).min(dim=0).values

    def policy_q(self, o: Any, pi: torch.Tensor) -> torch.Tensor:
        """The critics' value of the policy's action, which the actor maximises: ``min_i Q_i(o, pi)`` (gradients
        reach the action, not the critics' weights)."""
        return self.critic(o, pi, detach_params=True).min(dim=0).values

    def actor_update_due(self) -> bool:
        """Whether this ``train`` call also updates the actor and ``alpha``: always for SAC."""
        return True

    def get_actor(self) -> SacActor:
        return self.actor

    def train(self, batch: tuple[Any, ...]) -> dict[str, float]:
        """One update on ``(o, a, r, o2, terminated, truncated)``: the critics, then (when
        :meth:`actor_update_due`) the actor and ``alpha``, then the target critics.

        Only ``terminated`` stops bootstrapping: a truncated episode (time limit) still has a value after its last
        step, so ``truncated`` is ignored here.
        """
        o, a, r, o2, d, _truncated = batch
        gamma, polyak = self.settings.gamma, self.settings.polyak
        update_actor = self.actor_update_due()
        alpha = self.entropy.value()

        # policy on o: the action and its log-density serve the actor's and alpha's losses below
        if update_actor:
            pi, logp_pi = self.actor(o)

        # critic target: y = r + gamma * (1 - d) * (Q_targ(o2, a2) - alpha * logp(a2 | o2)),  a2 ~ pi(o2)
        with torch.no_grad():
            a2, logp_a2 = self.actor(o2)
            y = r + gamma * (1.0 - d) * (self.target_q(o2, a2) - alpha * logp_a2)

        # critics: all of them regress on the same y (sum over i of the mean squared error of Q_i(o, a))
        q = self.critic(o, a)
        loss_q = (q - y).pow(2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_q.backward()
        self.critic_optimizer.step()
        metrics = {
            "loss_critic": loss_q.detach(),
            "entropy_coef": alpha,
            "q_mean": q.detach().mean(),
            "q_std_ensemble": q.detach().std(dim=0).mean(),
            "backup_mean": y.mean(),
        }

        # actor: minimise alpha * logp(pi | o) - policy_q(o, pi) through the updated critics (weights held fixed);
        # alpha: minimise -log(alpha) * (logp(pi | o) + target entropy). One backward pass serves both losses, as
        # each reaches its own parameters only.
        if update_actor:
            loss_pi = (alpha * logp_pi - self.policy_q(o, pi)).mean()
            loss_alpha = self.entropy.loss(logp_pi)
            self.actor_optimizer.zero_grad(set_to_none=True)
            (loss_pi if loss_alpha is None else loss_pi + loss_alpha).backward()
            self.actor_optimizer.step()
            self.entropy.step()
            self.actor_updates += 1
            # the actor's metrics come with the calls that update it (the Trainer averages each key over its values)
            metrics.update(loss_actor=loss_pi.detach(), logp_pi=logp_pi.detach().mean())
            if loss_alpha is not None:
                metrics["loss_entropy_coef"] = loss_alpha.detach()

        # target critics: theta_targ <- polyak * theta_targ + (1 - polyak) * theta, all critics at once
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), polyak)
        self.train_steps += 1
        return metrics_to_floats(**metrics)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Models, target critics, optimisers, ``log(alpha)`` and counters (tensors and plain data only)."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "log_alpha": self.entropy.log_alpha.detach().clone(),
            "entropy_optimizer": self.entropy.optimizer_state(),
            "train_steps": self.train_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (copied: nothing is shared with ``state`` afterwards)."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        # torch optimisers keep the given state tensors by reference; copies keep the source agent independent
        self.actor_optimizer.load_state_dict(copy.deepcopy(state["actor_optimizer"]))
        self.critic_optimizer.load_state_dict(copy.deepcopy(state["critic_optimizer"]))
        with torch.no_grad():
            self.entropy.log_alpha.copy_(state["log_alpha"])
        self.entropy.load_optimizer_state(copy.deepcopy(state["entropy_optimizer"]))
        self.train_steps = int(state["train_steps"])
