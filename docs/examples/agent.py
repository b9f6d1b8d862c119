"""A complete training agent for tmrl: DDPG (Lillicrap et al., 2016), written against the plugin API only.

docs/agents.md walks through it; ``tests/test_docs_agent.py`` runs this file and checks the agent with
``tmrl_core.testing.AgentContract``. In a plugin, the classes go in a module of your package and the hook in its
``plugin.py``, with ``"my_package.agent:DdpgAgent"`` strings instead of the classes.

Run it:  python docs/examples/agent.py [--steps 3000]   (trains on Pendulum-v1 and prints the test returns)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tmrl_core import AgentSpec, TorchActorModule, TrainingAgent, hookimpl
from tmrl_core.nn import EncoderFactory, make_encoder, mlp, polyak_update
from tmrl_core.settings import SectionValues, coerce_section

if TYPE_CHECKING:
    from gymnasium import spaces


class DdpgSettings(BaseModel):
    """The agent's settings section (``ddpg``): ``tmrl run --algo ddpg --set ddpg.lr_actor=3e-4``."""

    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(0.99, ge=0.0, le=1.0, description="Discount factor.")
    polyak: float = Field(0.995, ge=0.0, le=1.0, description="Target averaging factor (1 - tau).")
    lr_actor: float = Field(1e-3, gt=0.0, description="Learning rate of the actor.")
    lr_critic: float = Field(1e-3, gt=0.0, description="Learning rate of the critic.")
    noise: float = Field(0.1, ge=0.0, description="Exploration noise, as a fraction of the action range.")
    hidden_sizes: tuple[int, ...] = Field((256, 256), min_length=1, description="Hidden layers of both networks.")


class DdpgActor(TorchActorModule):
    """A deterministic policy ``a = mu(o)`` squashed into the Box; exploration adds Gaussian noise when acting."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        encoder: EncoderFactory | None = None,
        settings: SectionValues = None,
    ) -> None:
        super().__init__(observation_space, action_space)
        s = coerce_section(settings, DdpgSettings)
        self.encoder = make_encoder(encoder, observation_space)  # the env's encoder: any env, same agent
        act_dim = int(np.prod(action_space.shape))
        self.mu = mlp([self.encoder.out_features, *s.hidden_sizes, act_dim], torch.nn.ReLU)
        low, high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)
        # derived from the action space, so not part of the weights sent to workers
        self.register_buffer("scale", torch.as_tensor((high - low) / 2).reshape(-1), persistent=False)
        self.register_buffer("bias", torch.as_tensor((high + low) / 2).reshape(-1), persistent=False)
        self.noise = s.noise

    def forward(self, obs: Any) -> torch.Tensor:
        """A batch of observations -> a batch of actions ``(batch, act_dim)``, inside the bounds."""
        return torch.tanh(self.mu(self.encoder(obs))) * self.scale + self.bias

    @torch.no_grad()
    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        """A batch of one observation -> one action, shaped like the action space."""
        a = self.forward(obs)[0]
        if not test:
            a = a + self.noise * self.scale * torch.randn_like(a)
            a = torch.clamp(a, self.bias - self.scale, self.bias + self.scale)
        return a.reshape(self.action_space.shape).cpu().numpy().astype(self.action_space.dtype)


class DdpgAgent(TrainingAgent):
    """DDPG: one critic ``Q(o, a)`` and its target, the actor and its target."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: str | torch.device = "cpu",
        encoder: EncoderFactory | None = None,
        settings: SectionValues = None,
    ) -> None:
        super().__init__(observation_space, action_space, device)
        self.settings = s = coerce_section(settings, DdpgSettings)
        self.actor = DdpgActor(observation_space, action_space, encoder, s).to(device)
        self.critic_encoder = make_encoder(encoder, observation_space).to(device)
        act_dim = int(np.prod(action_space.shape))
        self.q = mlp([self.critic_encoder.out_features + act_dim, *s.hidden_sizes, 1], torch.nn.ReLU).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_params = [*self.critic_encoder.parameters(), *self.q.parameters()]
        self.critic_target = copy.deepcopy(torch.nn.ModuleList([self.critic_encoder, self.q])).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=s.lr_actor)
        self.critic_optimizer = torch.optim.Adam(self.critic_params, lr=s.lr_critic)
        self.train_steps = 0

    def critic(self, obs: Any, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        encoder, q = self.critic_target if target else (self.critic_encoder, self.q)
        return q(torch.cat([encoder(obs), act.reshape(act.shape[0], -1)], dim=-1)).squeeze(-1)

    def get_actor(self) -> DdpgActor:
        return self.actor

    def train(self, batch: tuple[Any, ...]) -> dict[str, float]:
        """One update on ``(o, a, r, o2, terminated, truncated)`` (tensors on ``self.device``, batch first)."""
        o, a, r, o2, d, _truncated = batch  # a time-limit truncation keeps bootstrapping
        s = self.settings

        # critic: regress Q(o, a) on y = r + gamma * (1 - d) * Q_targ(o2, mu_targ(o2))
        with torch.no_grad():
            y = r + s.gamma * (1.0 - d) * self.critic(o2, self.actor_target(o2), target=True)
        loss_q = (self.critic(o, a) - y).pow(2).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_q.backward()
        self.critic_optimizer.step()

        # actor: maximise Q(o, mu(o)); only the actor's optimiser steps
        loss_pi = -self.critic(o, self.actor(o)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss_pi.backward()
        self.actor_optimizer.step()

        # targets: theta_targ <- polyak * theta_targ + (1 - polyak) * theta
        polyak_update(self.actor.parameters(), self.actor_target.parameters(), s.polyak)
        polyak_update(self.critic_params, self.critic_target.parameters(), s.polyak)
        self.train_steps += 1
        return {"loss_actor": loss_pi.item(), "loss_critic": loss_q.item(), "backup_mean": y.mean().item()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, targets, optimisers, the step counter (tensors and plain data)."""
        return {
            "actor": self.actor.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic": torch.nn.ModuleList([self.critic_encoder, self.q]).state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "train_steps": self.train_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.actor_target.load_state_dict(state["actor_target"])
        torch.nn.ModuleList([self.critic_encoder, self.q]).load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        # optimisers keep the given tensors by reference: copies keep the source independent
        self.actor_optimizer.load_state_dict(copy.deepcopy(state["actor_optimizer"]))
        self.critic_optimizer.load_state_dict(copy.deepcopy(state["critic_optimizer"]))
        self.train_steps = int(state["train_steps"])


class DdpgPlugin:
    """The hook implementation; in a package, ``plugin.py`` holds it and names the classes by string."""

    @hookimpl
    def tmrl_register_agents(self, register: Callable[[AgentSpec], None]) -> None:
        register(
            AgentSpec(
                name="ddpg",
                factory=DdpgAgent,
                actor=DdpgActor,
                settings=DdpgSettings,
                description="DDPG: a deterministic actor and one critic (the docs' example agent).",
            )
        )


if __name__ == "__main__":
    import argparse

    import gymnasium

    from tmrl_core.testing import run_learning, seed_everything

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="environment steps")
    args = parser.parse_args()
    seed_everything(0)
    env = gymnasium.make("Pendulum-v1")
    agent = DdpgAgent(env.observation_space, env.action_space, settings={"hidden_sizes": (64, 64)})
    result = run_learning(
        lambda: gymnasium.make("Pendulum-v1"),
        agent,
        env_steps=args.steps,
        start_steps=min(500, args.steps // 2),
        batch_size=128,
        eval_interval=max(args.steps // 4, 1),
        eval_episodes=2,
        log=print,
    )
    print(f"ddpg: best test return {result.best_return:.1f} after {result.env_steps} env steps")
