"""Training steps per second of the SAC update: tmrl-sac's ``SacAgent.train`` against a plain implementation.

Both run the same update (learned entropy coefficient, twin critics, polyak targets) on the same random batch of
Pendulum-sized transitions, batch 256, MLPs 256x256, in the same process; blocks of steps alternate between the two
so that a change in machine load hits both. The plain one is written the way SAC is usually written (OpenAI
Spinning Up, the original tmrl tutorial): two critic modules, ``torch.distributions``, ``requires_grad`` toggling
around the actor loss, default Adam, a Python loop for polyak averaging, one ``.item()`` per metric.

tmrl-sac differs by: both critics as one batched ensemble (stacked weights, one wide matrix product for the shared
first layer), fused Adam (one kernel for all parameters), detached critic weights instead of ``requires_grad``
toggling, the Gaussian log-density from the sampled noise, a fused (foreach) polyak update and a single device
synchronisation for all metrics.

    python benchmarks/bench_sac_update.py [--steps 300] [--device cpu] [--threads 0] [--hidden 256,256]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
from functools import partial

import numpy as np
import torch
from _blocks import alternating_rates, print_rates
from gymnasium import spaces
from tmrl_sac.agent import SacAgent
from torch import nn

from tmrl_core.nn import mlp


class PlainActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], act_limit: float) -> None:
        super().__init__()
        self.net = mlp([obs_dim, *hidden], nn.ReLU, nn.ReLU)
        self.mu_layer = nn.Linear(hidden[-1], act_dim)
        self.log_std_layer = nn.Linear(hidden[-1], act_dim)
        self.act_limit = act_limit

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(obs)
        mu = self.mu_layer(h)
        std = torch.exp(torch.clamp(self.log_std_layer(h), -20, 2))
        dist = torch.distributions.Normal(mu, std)
        u = dist.rsample()
        logp = dist.log_prob(u).sum(-1) - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return self.act_limit * torch.tanh(u), logp


class PlainSac:
    """SAC as it is usually written: separate critic modules, toggled requires_grad, per-parameter loops."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], device: str) -> None:
        self.pi = PlainActor(obs_dim, act_dim, hidden, 2.0).to(device)
        self.q1 = mlp([obs_dim + act_dim, *hidden, 1], nn.ReLU).to(device)
        self.q2 = mlp([obs_dim + act_dim, *hidden, 1], nn.ReLU).to(device)
        self.q1_targ, self.q2_targ = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in itertools.chain(self.q1_targ.parameters(), self.q2_targ.parameters()):
            p.requires_grad = False
        self.q_params = list(itertools.chain(self.q1.parameters(), self.q2.parameters()))
        self.pi_optimizer = torch.optim.Adam(self.pi.parameters(), lr=1e-3)
        self.q_optimizer = torch.optim.Adam(self.q_params, lr=1e-3)
        self.log_alpha = torch.tensor([math.log(0.2)], device=device, requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=1e-3)
        self.target_entropy = -float(act_dim)
        self.gamma, self.polyak = 0.99, 0.995

    def q(self, net: nn.Module, o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([o, a], dim=-1)).squeeze(-1)

    def train(self, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        o, a, r, o2, d, _ = batch
        pi, logp_pi = self.pi(o)
        alpha = torch.exp(self.log_alpha.detach())
        loss_alpha = -(self.log_alpha * (logp_pi + self.target_entropy).detach()).mean()
        self.alpha_optimizer.zero_grad()
        loss_alpha.backward()
        self.alpha_optimizer.step()

        q1, q2 = self.q(self.q1, o, a), self.q(self.q2, o, a)
        with torch.no_grad():
            a2, logp_a2 = self.pi(o2)
            q_targ = torch.min(self.q(self.q1_targ, o2, a2), self.q(self.q2_targ, o2, a2))
            backup = r + self.gamma * (1 - d) * (q_targ - alpha * logp_a2)
        loss_q = ((q1 - backup) ** 2).mean() + ((q2 - backup) ** 2).mean()
        self.q_optimizer.zero_grad()
        loss_q.backward()
        self.q_optimizer.step()

        for p in self.q_params:
            p.requires_grad = False
        q_pi = torch.min(self.q(self.q1, o, pi), self.q(self.q2, o, pi))
        loss_pi = (alpha * logp_pi - q_pi).mean()
        self.pi_optimizer.zero_grad()
        loss_pi.backward()
        self.pi_optimizer.step()
        for p in self.q_params:
            p.requires_grad = True

        with torch.no_grad():
            online = itertools.chain(self.q1.parameters(), self.q2.parameters())
            target = itertools.chain(self.q1_targ.parameters(), self.q2_targ.parameters())
            for p, p_targ in zip(online, target, strict=True):
                p_targ.data.mul_(self.polyak)
                p_targ.data.add_((1 - self.polyak) * p.data)
        return {
            "loss_actor": loss_pi.item(),
            "loss_critic": loss_q.item(),
            "loss_entropy_coef": loss_alpha.item(),
            "entropy_coef": alpha.item(),
        }


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per implementation")
    parser.add_argument("--blocks", type=int, default=6, help="alternating timed blocks per implementation")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="256,256", help="hidden layer sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    torch.manual_seed(0)

    obs_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    act_space = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
    n, dev = args.batch, args.device
    batch = (
        torch.randn(n, 3, device=dev),
        torch.rand(n, 1, device=dev) * 4 - 2,
        torch.randn(n, device=dev),
        torch.randn(n, 3, device=dev),
        (torch.rand(n, device=dev) < 0.01).float(),
        torch.zeros(n, device=dev),
    )
    implementations = {
        "plain": PlainSac(3, 1, hidden, dev),
        "tmrl-sac": SacAgent(obs_space, act_space, dev, settings={"hidden_sizes": hidden}),
    }
    for impl in implementations.values():  # warm-up (allocator, kernels)
        for _ in range(10):
            impl.train(batch)
    synchronize(dev)

    per_block = max(args.steps // args.blocks, 1)
    calls = {name: partial(impl.train, batch) for name, impl in implementations.items()}
    rates = alternating_rates(calls, args.blocks, per_block, sync=partial(synchronize, dev))

    print(
        f"SAC update, batch {n}, MLP {'x'.join(map(str, hidden))}, device {dev}, "
        f"torch threads {torch.get_num_threads()}, {args.blocks} x {per_block} steps each"
    )
    medians = print_rates(rates, "training steps/s", width=9)
    ratio = medians["tmrl-sac"] / medians["plain"]
    print(f"  speed-up tmrl-sac / plain: {ratio:.2f}x")


if __name__ == "__main__":
    main()
