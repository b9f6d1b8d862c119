"""Achieved FLOP rate of REDQ's updates against plain matrix products of the same shapes, on the same device.

What is measured, alternately in blocks:

- ``RedqSacAgent.train`` (tmrl-redq, N=10 critics, M=2, batch 256, MLP 256x256, pendulum shapes): the calls
  without the actor update (``G - 1`` of every ``G``; G=20 by default) and the calls with it are timed separately;
- the matrix products that each call runs, recorded once from the call itself (every ``mm``/``addmm``/``bmm``/
  ``baddbmm`` with its shapes), replayed back to back on preallocated tensors: the rate the same arithmetic reaches
  with no other work around it.

The FLOPs of a call are counted by ``torch.utils.flop_counter`` (matrix products only: 2 * m * n * k each). The ratio
achieved / replay is the share of the ceiling that the update reaches; the rest is the other work of an update
(element-wise operations, the optimiser, the target averaging, Python and dispatch overhead).

    python benchmarks/bench_redq_flops.py [--device cpu|cuda] [--seconds 4] [--blocks 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

MATMULS = {"mm", "addmm", "bmm", "baddbmm"}


class _RecordMatmuls(TorchDispatchMode):
    """Records ``(op name, argument shapes)`` of every matrix product dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func.overloadpacket.__name__
        if name in MATMULS:
            self.calls.append((name, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def replay(calls: list[tuple[str, list[tuple[int, ...]]]], device: str) -> Callable[[], None]:
    """A function running the recorded matrix products on preallocated random tensors (outputs preallocated too)."""
    ops: list[Callable[[], Any]] = []
    for name, shapes in calls:
        tensors = [torch.randn(s, device=device) for s in shapes]
        op = getattr(torch, name)
        if name in ("mm", "bmm"):
            a, b = tensors[0], tensors[1]
            out = op(a, b)
            ops.append(lambda op=op, a=a, b=b, out=out: op(a, b, out=out))
        else:  # addmm / baddbmm: (input, mat1, mat2)
            c, a, b = tensors[0], tensors[1], tensors[2]
            out = op(c, a, b)
            ops.append(lambda op=op, c=c, a=a, b=b, out=out: op(c, a, b, out=out))

    def run() -> None:
        for f in ops:
            f()

    return run


def make_agent(device: str, n: int = 10, m: int = 2, g: int = 20, hidden: tuple[int, ...] = (256, 256)) -> Any:
    from gymnasium import spaces
    from tmrl_redq.agent import RedqSacAgent

    obs_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    act_space = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
    return RedqSacAgent(obs_space, act_space, device, settings={"n": n, "m": m, "g": g, "hidden_sizes": hidden})


def make_batch(device: str, b: int = 256) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(
        t.to(device)
        for t in (
            torch.randn(b, 3, generator=gen),
            torch.rand(b, 1, generator=gen) * 4 - 2,
            torch.randn(b, generator=gen),
            torch.randn(b, 3, generator=gen),
            torch.zeros(b),
            torch.zeros(b),
        )
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(device: str, seconds: float = 4.0, blocks: int = 3) -> dict[str, Any]:
    """FLOPs, achieved and replayed FLOP rates of REDQ's two kinds of ``train`` calls."""
    # G decides only which calls also update the actor, not what a call costs: G=2 reaches both kinds of call at once
    agent, batch = make_agent(device, g=2), make_batch(device)
    g = agent.updates_per_step
    for _ in range(2 * g):  # warm-up: optimiser states, allocator
        agent.train(batch)
    sync(device)
    kinds: dict[str, dict[str, Any]] = {}
    # one call of each kind: ``train`` updates the actor on the G-th call (train_steps counts calls)
    for kind in ("critic only", "critic + actor"):
        while (agent.train_steps % g == g - 1) != (kind == "critic + actor"):
            agent.train(batch)
        recorder, counter = _RecordMatmuls(), FlopCounterMode(display=False)
        with counter, recorder:
            agent.train(batch)
        kinds[kind] = {"flops": counter.get_total_flops(), "replay": replay(recorder.calls, device), "calls": recorder}
    rates: dict[str, dict[str, list[float]]] = {k: {"achieved": [], "replay": []} for k in kinds}
    per = seconds / (blocks * 2 * len(kinds))
    for _ in range(blocks):
        for kind, info in kinds.items():
            want_actor = kind == "critic + actor"
            n, elapsed = 0, 0.0
            while elapsed < per:
                while (agent.train_steps % g == g - 1) != want_actor:
                    agent.train(batch)
                sync(device)
                t0 = time.perf_counter()
                agent.train(batch)
                sync(device)
                elapsed += time.perf_counter() - t0
                n += 1
            rates[kind]["achieved"].append(info["flops"] * n / elapsed)
            run, n, t0 = info["replay"], 0, time.perf_counter()
            while time.perf_counter() - t0 < per:
                run()
                n += 1
            sync(device)
            rates[kind]["replay"].append(info["flops"] * n / (time.perf_counter() - t0))
    out: dict[str, Any] = {}
    for kind, info in kinds.items():
        achieved = statistics.median(rates[kind]["achieved"])
        ceiling = statistics.median(rates[kind]["replay"])
        out[kind] = {
            "mflop_per_call": info["flops"] / 1e6,
            "matmuls_per_call": len(info["calls"].calls),
            "achieved_gflops": achieved / 1e9,
            "matmul_only_gflops": ceiling / 1e9,
            "share_of_matmul_rate": achieved / ceiling,
            "calls_per_s": achieved / info["flops"],
        }
    return out


def print_table(results: dict[str, Any], device_name: str) -> None:
    print(f"REDQ-SAC train calls, N=10, M=2, batch 256, MLP 256x256, {device_name}")
    columns = f"{'MFLOP':>7s} {'matmuls':>7s} {'calls/s':>9s} {'GFLOP/s':>8s} {'matmuls alone':>13s} {'share':>6s}"
    print(f"  {'call':16s} {columns}")
    for kind, r in results.items():
        print(
            f"  {kind:16s} {r['mflop_per_call']:7.1f} {r['matmuls_per_call']:7d} {r['calls_per_s']:9.1f} "
            f"{r['achieved_gflops']:8.2f} {r['matmul_only_gflops']:13.2f} {100 * r['share_of_matmul_rate']:5.0f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds in all")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    results = measure(args.device, args.seconds, args.blocks)
    name = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print_table(results, name)


if __name__ == "__main__":
    main()
