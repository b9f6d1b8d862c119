"""What layer-normalised critics cost: REDQ-SAC's whole ``train`` call with ``critic_layer_norm`` off and on.

Two ``RedqSacAgent`` instances, identical but for the setting, train on the same random batch of
``trackmania-lidar``-sized transitions (83 inputs: speed, 4 x 19 LIDAR beams, two past actions; 3 actions), batch 256,
in the same process and thread; timed blocks alternate between the two so that a change in machine load hits both.
One ``train`` call is one critic update of all N critics (and, every G-th call, the actor's).

    python benchmarks/bench_critic_layer_norm.py [--hidden 64,64] [--n 10] [--steps 400] [--threads 1]
"""

from __future__ import annotations

import argparse
from functools import partial

import numpy as np
import torch
from _blocks import alternating_rates, print_rates
from gymnasium import spaces
from tmrl_redq.agent import RedqSacAgent

OBS_DIM, ACT_DIM = 1 + 4 * 19 + 2 * 3, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", default="64,64", help="hidden sizes of every MLP")
    parser.add_argument("--n", type=int, default=10, help="critics in the ensemble (N)")
    parser.add_argument("--g", type=int, default=20, help="critic updates per actor update (G)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=400, help="timed train calls per setting")
    parser.add_argument("--blocks", type=int, default=8, help="alternating timed blocks per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tmrl run's trainer uses 1 on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",")]
    obs_space = spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
    act_space = spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    agents = {}
    for layer_norm in (False, True):
        torch.manual_seed(0)
        settings = {"hidden_sizes": hidden, "n": args.n, "g": args.g, "critic_layer_norm": layer_norm}
        agents["layer norm" if layer_norm else "plain"] = RedqSacAgent(obs_space, act_space, "cpu", settings=settings)
    b = args.batch
    gen = torch.Generator().manual_seed(1)
    batch = (
        torch.rand(b, OBS_DIM, generator=gen) * 2 - 1,
        torch.rand(b, ACT_DIM, generator=gen) * 2 - 1,
        torch.randn(b, generator=gen),
        torch.rand(b, OBS_DIM, generator=gen) * 2 - 1,
        torch.zeros(b),
        torch.zeros(b),
    )
    for agent in agents.values():  # warm-up, including actor updates
        for _ in range(2 * args.g):
            agent.train(batch)
    per_block = max(args.steps // args.blocks, 1)
    rates = alternating_rates(
        {name: partial(agent.train, batch) for name, agent in agents.items()}, args.blocks, per_block
    )
    print(
        f"REDQ-SAC train calls, N={args.n}, G={args.g}, batch {b}, MLPs {'x'.join(map(str, hidden))}, {OBS_DIM} inputs,"
        f" cpu, {torch.get_num_threads()} thread(s), {args.blocks} alternating blocks x {per_block} calls"
    )
    medians = print_rates(rates, "train calls/s")
    print(f"  layer norm / plain: {medians['layer norm'] / medians['plain']:.2f}x the rate")


if __name__ == "__main__":
    main()
