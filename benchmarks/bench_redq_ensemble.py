"""Critic updates per second of the REDQ ensemble: one batched computation against a loop over N modules.

A critic update is what ``RedqSacAgent.train`` does to its critics: the target ``min`` over ``M`` random target
critics at ``(o2, a2)``, the regression of all ``N`` critics on it, one optimiser step, polyak averaging of the N
targets. The batched side is tmrl's own code (``EnsembleCritic``, its optimiser builder, ``polyak_update``); the loop
side holds N ``nn.Sequential`` critics (and N targets) and goes through them in Python, with torch's default Adam and
also with fused Adam (to separate the ensemble's gain from the optimiser's). Both start from the same weights; the
benchmark checks that they produce the same weights after one update before timing.

    python benchmarks/bench_redq_ensemble.py [--device cpu|cuda] [--n 10] [--steps 200] [--threads 0]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces
from tmrl_sac.agent import EnsembleCritic, build_optimizer
from torch import nn

from tmrl_core.nn import polyak_update
from tmrl_core.testing import ensemble_member

GAMMA, POLYAK, LR = 0.99, 0.995, 1e-3


def batched_update(n: int, m: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...], device: str):
    obs_space = spaces.Box(-1.0, 1.0, shape=(obs_dim,), dtype=np.float32)
    act_space = spaces.Box(-1.0, 1.0, shape=(act_dim,), dtype=np.float32)
    critic = EnsembleCritic(obs_space, act_space, n, None, hidden, "relu").to(device)
    target = copy.deepcopy(critic).requires_grad_(False)
    optimizer = build_optimizer("adam", critic.parameters(), LR, (0.9, 0.999), 0.0)

    def update(o, a, r, o2, a2, d, subset) -> None:
        with torch.no_grad():
            y = r + GAMMA * (1 - d) * target(o2, a2, members=subset).min(dim=0).values
        loss = (critic(o, a) - y).pow(2).mean(dim=1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        polyak_update(critic.parameters(), target.parameters(), POLYAK)

    return critic, update


def loop_update(critic: EnsembleCritic, device: str, fused: bool):
    """N separate critics holding ``critic``'s weights, updated one module at a time."""
    critics = nn.ModuleList(ensemble_member(critic.q, i) for i in range(critic.n)).to(device)
    targets = copy.deepcopy(critics).requires_grad_(False)
    optimizer = torch.optim.Adam(critics.parameters(), lr=LR, fused=True if fused else None)

    def update(o, a, r, o2, a2, d, subset) -> None:
        with torch.no_grad():
            x2 = torch.cat([o2, a2], dim=-1)
            q_targ = torch.stack([targets[i](x2).squeeze(-1) for i in subset.tolist()]).min(dim=0).values
            y = r + GAMMA * (1 - d) * q_targ
        x = torch.cat([o, a], dim=-1)
        loss = sum(((q(x).squeeze(-1) - y) ** 2).mean() for q in critics)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for p, p_targ in zip(critics.parameters(), targets.parameters(), strict=True):
                p_targ.mul_(POLYAK).add_((1 - POLYAK) * p)

    return critics, update


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--n", type=int, default=10, help="critics in the ensemble (N)")
    parser.add_argument("--m", type=int, default=2, help="target subset size (M)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--steps", type=int, default=200, help="timed updates per implementation")
    parser.add_argument("--blocks", type=int, default=4, help="alternating timed blocks per implementation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    dev, b, obs_dim, act_dim = args.device, args.batch, 3, 1
    torch.manual_seed(0)

    critic, batched = batched_update(args.n, args.m, obs_dim, act_dim, hidden, dev)
    implementations: dict[str, tuple[Callable[..., None], nn.Module]] = {}
    loop_default_modules, loop_default = loop_update(critic, dev, fused=False)
    loop_fused_modules, loop_fused = loop_update(critic, dev, fused=True)
    implementations = {
        "loop, default Adam": (loop_default, loop_default_modules),
        "loop, fused Adam": (loop_fused, loop_fused_modules),
        "batched (tmrl)": (batched, critic),
    }

    def batch() -> tuple[torch.Tensor, ...]:
        return (
            torch.randn(b, obs_dim, device=dev),
            torch.rand(b, act_dim, device=dev) * 2 - 1,
            torch.randn(b, device=dev),
            torch.randn(b, obs_dim, device=dev),
            torch.rand(b, act_dim, device=dev) * 2 - 1,
            torch.zeros(b, device=dev),
        )

    # same weights in, same weights out after one update with the same subset
    data, subset = batch(), torch.randperm(args.n)[: args.m].to(dev)
    for update, _ in implementations.values():
        update(*data, subset)
    for i in range(args.n):
        member = ensemble_member(critic.q, i)
        for _, modules in list(implementations.values())[:2]:
            for p, q in zip(member.parameters(), modules[i].parameters(), strict=True):
                torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)

    for update, _ in implementations.values():  # warm-up
        for _ in range(5):
            update(*data, subset)
    synchronize(dev)
    per_block = max(args.steps // args.blocks, 1)
    rates: dict[str, list[float]] = {name: [] for name in implementations}
    for _ in range(args.blocks):
        for name, (update, _) in implementations.items():
            subsets = [torch.randperm(args.n)[: args.m].to(dev) for _ in range(per_block)]
            start = time.perf_counter()
            for k in range(per_block):
                update(*data, subsets[k])
            synchronize(dev)
            rates[name].append(per_block / (time.perf_counter() - start))

    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"REDQ critic update, N={args.n}, M={args.m}, batch {b}, MLP {'x'.join(map(str, hidden))}, device {name}, "
        f"{args.blocks} x {per_block} updates each (same weights checked after one update)"
    )
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for k, values in rates.items():
        print(f"  {k:20s} {medians[k]:8.1f} critic updates/s (min {min(values):.1f}, max {max(values):.1f})")
    print(f"  speed-up batched / loop (default Adam): {medians['batched (tmrl)'] / medians['loop, default Adam']:.2f}x")
    print(f"  speed-up batched / loop (fused Adam):   {medians['batched (tmrl)'] / medians['loop, fused Adam']:.2f}x")


if __name__ == "__main__":
    main()
