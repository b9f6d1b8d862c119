"""REDQ-SAC (Chen et al., 2021, "Randomized Ensembled Double Q-Learning: Learning Fast Without a Model").

SAC with an ensemble of ``N`` critics computed as one batched computation (:class:`tmrl_sac.agent.EnsembleCritic`),
a target that takes the minimum over a random subset of ``M`` distinct target critics, an actor trained against the
mean of all ``N`` critics, and ``G`` critic updates per actor update.

Update-to-data accounting: one :meth:`RedqSacAgent.train` call is one critic update (one batch); the actor and the
entropy coefficient are updated on every ``G``-th call. The paper's update-to-data ratio ``G`` (critic updates per
environment step) is exposed as :attr:`RedqSacAgent.updates_per_step`: the Trainer makes ``G`` ``train`` calls per
training step, so ``max_training_steps_per_env_step=1`` gives the paper's ``G`` critic updates per environment step.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from tmrl_sac.agent import SacAgent, SacSettings, metrics_to_floats

from tmrl_core.nn import polyak_update

__all__ = ["RedqSacAgent", "RedqSettings"]


class RedqSettings(SacSettings):
    """Hyperparameters of REDQ-SAC: SAC's, plus the ensemble's (the paper's N, M and G)."""

    n: int = Field(10, ge=2, description="N: critics in the ensemble (REDQ_N).")
    m: int = Field(
        2, ge=1, description="M: target critics drawn at random (distinct) for each target's minimum (REDQ_M)."
    )
    g: int = Field(20, ge=1, description="G: critic updates per actor update (the update-to-data ratio).")

    @model_validator(mode="after")
    def _m_at_most_n(self) -> RedqSettings:
        if self.m > self.n:
            raise ValueError(f"m ({self.m}) cannot exceed n ({self.n}): the target subset draws distinct critics")
        return self


class RedqSacAgent(SacAgent):
    """REDQ-SAC training agent: :class:`~tmrl_sac.agent.SacAgent`'s actor, ensemble critic, optimisers, entropy
    coefficient and checkpoints, with ``N`` critics and the REDQ update.

    Args:
        observation_space, action_space: the environment's spaces (a bounded Box for actions).
        device: where the models live and batches arrive.
        encoder: the env spec's encoder factory (None: flatten). With ``critic_encoder="shared"`` (default) one
            encoder feeds all ``N`` heads; ``"per_critic"`` gives each critic its own, vmapped.
        settings: :class:`RedqSettings`, a dict of its fields, or None for the defaults.
    """

    settings_model = RedqSettings
    algo = "redqsac"
    settings: RedqSettings

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        device: str | torch.device = "cpu",
        encoder: Any = None,
        settings: Any = None,
    ) -> None:
        # SacAgent builds one optimiser over the ensemble's stacked weights: Adam's and SGD's updates are
        # elementwise, so it is exactly N separate optimisers, in one pass.
        super().__init__(observation_space, action_space, device, encoder, settings)
        self.actor_updates = 0

    def num_critics(self) -> int:
        """``N``."""
        return self.settings.n

    @property
    def utd_ratio(self) -> int:
        """Critic updates per actor update (``G``)."""
        return self.settings.g

    @property
    def updates_per_step(self) -> int:  # type: ignore[override]
        """``train`` calls per Trainer training step: ``G`` critic updates and one actor update."""
        return self.settings.g

    def target_q(self, o2: Any, a2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(min over a random subset M of the target critics of Q_targ_i(o2, a2), the subset's indices)``.

        The ``M`` indices are distinct (drawn without replacement by torch's generator of the agent's device) and only
        those critics are evaluated.
        """
        subset = torch.randperm(self.settings.n, device=self.device)[: self.settings.m]
        return self.critic_target(o2, a2, members=subset).min(dim=0).values, subset

    def train(self, batch: tuple[Any, ...]) -> dict[str, float]:
        """One critic update on ``(o, a, r, o2, terminated, truncated)``; every ``G``-th call also updates the actor
        and the entropy coefficient. Only ``terminated`` stops bootstrapping (a truncation keeps the value)."""
        o, a, r, o2, d, _truncated = batch
        gamma, polyak, g = self.settings.gamma, self.settings.polyak, self.settings.g
        alpha = self.entropy.value()

        # target: y = r + gamma * (1 - d) * (min_{i in M} Q_targ_i(o2, a2) - alpha * logp(a2 | o2)),  a2 ~ pi(o2)
        with torch.no_grad():
            a2, logp_a2 = self.actor(o2)
            q_pi_targ, _subset = self.target_q(o2, a2)
            y = r + gamma * (1.0 - d) * (q_pi_targ - alpha * logp_a2)

        # all N critics regress on the same y: sum over i of the mean squared error
        q = self.critic(o, a)
        loss_q = (q - y).pow(2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_q.backward()
        self.critic_optimizer.step()
        self.train_steps += 1

        metrics = {
            "loss_critic": loss_q.detach(),
            "entropy_coef": alpha,
            "q_mean": q.detach().mean(),
            "q_std_ensemble": q.detach().std(dim=0).mean(),
            "backup_mean": y.mean(),
        }

        if self.train_steps % g == 0:
            # actor: minimise alpha * logp(pi | o) - (1/N) sum_i Q_i(o, pi) (critic weights held fixed);
            # alpha: minimise -log(alpha) * (logp(pi | o) + target entropy); one backward pass for both
            pi, logp_pi = self.actor(o)
            q_pi = self.critic(o, pi, detach_params=True).mean(dim=0)
            loss_pi = (alpha * logp_pi - q_pi).mean()
            loss_alpha = self.entropy.loss(logp_pi)
            self.actor_optimizer.zero_grad(set_to_none=True)
            (loss_pi if loss_alpha is None else loss_pi + loss_alpha).backward()
            self.actor_optimizer.step()
            self.entropy.step()
            self.actor_updates += 1
            metrics.update(loss_actor=loss_pi.detach(), logp_pi=logp_pi.detach().mean())
            if loss_alpha is not None:
                metrics["loss_entropy_coef"] = loss_alpha.detach()

        # target critics: theta_targ_i <- polyak * theta_targ_i + (1 - polyak) * theta_i, all i at once
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), polyak)
        # the actor's metrics come with the calls that update it (the Trainer averages each key over its values)
        return metrics_to_floats(**metrics)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """SAC's state (ensemble, target ensemble, optimisers, ``log(alpha)``, critic updates as ``train_steps``)
        and the actor-update counter."""
        return {**super().state_dict(), "actor_updates": self.actor_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.actor_updates = int(state["actor_updates"])
