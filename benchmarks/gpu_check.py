"""One short run on a machine with a GPU: the SAC and REDQ update benchmarks there, in one table.

- SAC (tmrl-sac ``SacAgent.train``, batch 256, MLP 256x256, pendulum shapes): updates/s eager, with
  ``torch.compile`` (default mode) and with ``torch.compile(mode="reduce-overhead")`` (CUDA graphs);
- REDQ critic update (N=10, M=2): tmrl's batched ensemble against a loop over N critic modules (fused Adam on both
  sides; ``benchmarks/bench_redq_ensemble.py``'s two implementations);
- REDQ-SAC ``train`` calls: achieved FLOP rate against the same matrix products alone (``bench_redq_flops.py``);
- on the CPU of the same machine: SAC updates/s with 1, 2, 4, ... torch threads (how many pay off on a large
  machine, see ``tmrl_core.placement``).

Blocks of the compared sides alternate; every figure is a median of blocks. Each compiled variant runs in its own
process with a time limit (compilation can take long), so one that fails or hangs is reported and the rest go on.
Prints a table with the GPU's name; writes every figure to ``$OUT/gpu.json`` when ``OUT`` is set. Needs torch,
numpy, pydantic, pydantic-settings, pluggy and gymnasium (the agents' own code is measured; the repository's packages
are found from this file's folder); runs on a CPU-only machine too (``--device cpu``, or automatically without CUDA),
which is how it is tested.

    python benchmarks/gpu_check.py [--seconds 6] [--tiny]          # whole run: under 6 minutes on an H200 host
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks", *sorted((ROOT / "plugins").glob("tmrl-*"))):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# the same pendulum-shaped batch as the FLOP benchmark's
from bench_redq_flops import make_batch as sac_batch  # noqa: E402


def sac_agent(device: str) -> Any:
    import numpy as np
    from gymnasium import spaces
    from tmrl_sac.agent import SacAgent

    obs_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    act_space = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
    return SacAgent(obs_space, act_space, device)


def rate(fn: Any, seconds: float, device: str) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    sync(device)
    return n / (time.perf_counter() - t0)


def sac_variant(device: str, mode: str, seconds: float) -> dict[str, float]:
    """SAC updates/s of one variant (run in a child process): eager, compile, or reduce-overhead."""
    torch.manual_seed(0)
    agent, batch = sac_agent(device), sac_batch(device)
    train = agent.train
    t0 = time.perf_counter()
    if mode != "eager":
        train = torch.compile(agent.train, mode=None if mode == "compile" else "reduce-overhead")
    for _ in range(5):  # compilation happens here
        train(batch)
    sync(device)
    warm = time.perf_counter() - t0
    return {"updates_per_s": statistics.median(rate(lambda: train(batch), seconds / 3, device) for _ in range(3)),
            "warm_up_s": warm}  # fmt: skip


def run_child(args: list[str], timeout: float) -> dict[str, Any]:
    """Run this script as a child with ``args``; its last stdout line is JSON."""
    try:
        proc = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(lines[-1])


def redq_ensemble(device: str, seconds: float, blocks: int = 3) -> dict[str, float]:
    from bench_redq_ensemble import batched_update, loop_update

    torch.manual_seed(0)
    n, m, b = 10, 2, 256
    critic, batched = batched_update(n, m, 3, 1, (256, 256), device)
    _, loop = loop_update(critic, device, fused=True)
    data = (
        torch.randn(b, 3, device=device),
        torch.rand(b, 1, device=device) * 2 - 1,
        torch.randn(b, device=device),
        torch.randn(b, 3, device=device),
        torch.rand(b, 1, device=device) * 2 - 1,
        torch.zeros(b, device=device),
    )
    subset = torch.randperm(n)[:m].to(device)
    for f in (batched, loop):
        for _ in range(3):
            f(*data, subset)
    rates: dict[str, list[float]] = {"batched": [], "loop": []}
    for _ in range(blocks):
        for name, f in (("batched", batched), ("loop", loop)):
            rates[name].append(rate(lambda f=f: f(*data, subset), seconds / (2 * blocks), device))
    out = {f"{k}_updates_per_s": statistics.median(v) for k, v in rates.items()}
    out["speedup"] = out["batched_updates_per_s"] / out["loop_updates_per_s"]
    return out


def cpu_threads(seconds: float, counts: list[int]) -> dict[str, float]:
    agent, batch = sac_agent("cpu"), sac_batch("cpu")
    torch.set_flush_denormal(True)
    out: dict[str, list[float]] = {str(c): [] for c in counts}
    for _ in range(2):  # two alternating passes
        for c in counts:
            torch.set_num_threads(c)
            for _ in range(3):
                agent.train(batch)
            out[str(c)].append(rate(lambda: agent.train(batch), seconds / (2 * len(counts)), "cpu"))
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measured figure")
    parser.add_argument("--tiny", action="store_true", help="a few seconds in all, no compiled variants (tests)")
    parser.add_argument("--child", nargs=3, metavar=("DEVICE", "MODE", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        device, mode, seconds = args.child
        print(json.dumps(sac_variant(device, mode, float(seconds))))
        return 0
    t_start = time.perf_counter()
    dev, sec = args.device, (0.3 if args.tiny else args.seconds)
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    report: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": cpus,
        "python": sys.version.split()[0],
    }
    print(f"device {name}, torch {torch.__version__} (CUDA {torch.version.cuda}), {cpus} CPUs", flush=True)

    if args.tiny:  # in this process: a child's torch import would cost more than the figure
        report["sac"] = {"eager": sac_variant(dev, "eager", sec)}
    else:
        modes = ["eager", "compile", "reduce-overhead"]
        report["sac"] = {mode: run_child(["--child", dev, mode, str(sec)], timeout=30 + 20 * sec) for mode in modes}
    for mode, r in report["sac"].items():
        print(f"  SAC {mode:16s} {r}", flush=True)

    report["redq_ensemble"] = redq_ensemble(dev, 2 * sec)
    print(f"  REDQ ensemble {report['redq_ensemble']}", flush=True)

    from bench_redq_flops import measure

    report["redq_flops"] = measure(dev, seconds=2 * sec, blocks=2 if args.tiny else 3)
    print(f"  REDQ FLOP rates {report['redq_flops']}", flush=True)

    counts = [c for c in (1, 2, 4, 8, 16, 32) if c <= cpus][: 1 if args.tiny else None]
    report["cpu_sac_updates_per_s_by_threads"] = cpu_threads(2 * sec, counts)
    print(f"  CPU threads {report['cpu_sac_updates_per_s_by_threads']}", flush=True)
    report["seconds"] = time.perf_counter() - t_start

    eager = report["sac"]["eager"].get("updates_per_s")
    print(f"\n{'=' * 100}\nGPU check on {name} (torch {torch.__version__}, {cpus} CPUs), {report['seconds']:.0f} s")
    print(f"{'figure':58s} {'value':>14s} {'vs':>24s}")
    for mode, r in report["sac"].items():
        value = f"{r['updates_per_s']:.1f}/s" if "updates_per_s" in r else r.get("error", "?")
        ratio = f"{r['updates_per_s'] / eager:.2f}x eager" if eager and "updates_per_s" in r else ""
        warm = f" (warm-up {r['warm_up_s']:.0f} s)" if "warm_up_s" in r else ""
        print(f"{'SAC updates, batch 256, 256x256, ' + mode + warm:58s} {value:>14s} {ratio:>24s}")
    e = report["redq_ensemble"]
    print(f"{'REDQ critic updates, N=10, batched ensemble':58s} {e['batched_updates_per_s']:12.1f}/s "
          f"{e['speedup']:>16.2f}x loop")  # fmt: skip
    print(f"{'REDQ critic updates, N=10, loop over critics':58s} {e['loop_updates_per_s']:12.1f}/s")
    for kind, r in report["redq_flops"].items():
        print(f"{'REDQ-SAC train, ' + kind + ', GFLOP/s':58s} {r['achieved_gflops']:14.1f} "
              f"{100 * r['share_of_matmul_rate']:>10.0f}% of matmuls alone")  # fmt: skip
    one = report["cpu_sac_updates_per_s_by_threads"].get("1")
    for c, r in report["cpu_sac_updates_per_s_by_threads"].items():
        print(f"{'CPU SAC updates, ' + c + ' torch thread(s)':58s} {r:12.1f}/s {r / one:>17.2f}x 1 thread")
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu.json").write_text(json.dumps(report, indent=2))
        print(f"figures written to {Path(out, 'gpu.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
