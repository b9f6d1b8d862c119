"""REDQ-SAC (Chen et al., 2021, "Randomized Ensembled Double Q-Learning: Learning Fast Without a Model").

SAC with an ensemble of ``N`` critics computed as one batched computation (:class:`tmrl_sac.agent.EnsembleCritic`),
a target that takes the minimum over a random subset of ``M`` distinct target critics, an actor trained against the
mean of all ``N`` critics, and ``G`` critic updates per actor update.

The update itself is SAC's (:meth:`tmrl_sac.agent.SacAgent.train`, top to bottom); REDQ replaces four of its small
methods: ``num_critics`` (N), ``target_q`` (min over a random M), ``policy_q`` (mean of N) and
``actor_update_due`` (every G-th call).

Update-to-data accounting: one ``train`` call is one critic update (one batch); the actor and the
entropy coefficient are updated on every ``G``-th call. The paper's update-to-data ratio ``G`` (critic updates per
environment step) is exposed as :attr:`RedqSacAgent.updates_per_step`: the Trainer makes ``G`` ``train`` calls per
training step, so ``max_training_steps_per_env_step=1`` gives the paper's ``G`` critic updates per environment step.
"""

from __future__ import annotations

from typing import Any

import torch
from tmrl_sac import SacAgent

from tmrl_redq.settings import RedqSettings

__all__ = ["RedqSacAgent", "RedqSettings"]


class RedqSacAgent(SacAgent):
    """REDQ-SAC: :class:`~tmrl_sac.agent.SacAgent`'s update (``train``), actor, optimisers, entropy coefficient and
    checkpoints, with the paper's three differences, each a method below.

    Args:
        observation_space, action_space: the environment's spaces (a bounded Box for actions).
        device: where the models live and batches arrive.
        encoder: the env spec's encoder factory (None: flatten). With ``critic_encoder="shared"`` (default) one
            encoder feeds all ``N`` heads; ``"per_critic"`` gives each critic its own, vmapped.
        settings: :class:`RedqSettings`, a dict of its fields, or None for the defaults.

    SacAgent builds one optimiser over the ensemble's stacked weights: Adam's and SGD's updates are elementwise, so it
    is exactly ``N`` separate optimisers, in one pass.
    """

    settings_model = RedqSettings
    algo = "redqsac"
    settings: RedqSettings

    def num_critics(self) -> int:
        """An ensemble of ``N`` critics."""
        return self.settings.n

    def target_q(self, o2: Any, a2: torch.Tensor) -> torch.Tensor:
        """The minimum over a random subset of ``M`` distinct target critics (only those are evaluated)."""
        return self.critic_target(o2, a2, members=self.target_subset()).min(dim=0).values

    def policy_q(self, o: Any, pi: torch.Tensor) -> torch.Tensor:
        """The actor maximises the mean of all ``N`` critics."""
        return self.critic(o, pi, detach_params=True).mean(dim=0)

    def actor_update_due(self) -> bool:
        """``G`` critic updates per actor update: the actor (and alpha) on every ``G``-th ``train`` call."""
        return (self.train_steps + 1) % self.settings.g == 0

    @property
    def updates_per_step(self) -> int:  # type: ignore[override]
        """``train`` calls per Trainer training step: ``G`` critic updates and one actor update."""
        return self.settings.g

    def target_subset(self) -> torch.Tensor:
        """``M`` distinct indices among ``N``, drawn without replacement by torch's generator of the agent's device."""
        return torch.randperm(self.settings.n, device=self.device)[: self.settings.m]

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """SAC's state (ensemble, target ensemble, optimisers, ``log(alpha)``, critic updates as ``train_steps``)
        and the actor-update counter."""
        return {**super().state_dict(), "actor_updates": self.actor_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.actor_updates = int(state["actor_updates"])
