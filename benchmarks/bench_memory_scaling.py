"""How the replay memory's cost grows: RSS, bytes per transition, batch time and checkpoint write/resume time at
10k, 100k and 1M transitions, for the TrackMania full observation and for pendulum.

Observations (what the worker's compressor sends and the memory stores):

- ``tm-full``: TrackMania ``trackmania-full`` with its defaults: speed, gear, rpm (float32 each), a history of 4
  grayscale 64x64 uint8 screenshots, and rtgym's action buffer of 2 actions of 3 float32 (samples history-compressed:
  each frame and each action travels and is stored once);
- ``pendulum``: gymnasium Pendulum-v1, 3 float32 observations, 1 action.

For every (observation, size) the ``ring`` memory (the default) and, where it fits in ``--generic-budget-gb``, the
straightforward per-sample ``generic`` memory (raw samples, every image history stored whole) are filled in a fresh
process each, so RSS figures are not mixed up. Measured: RSS growth while filling (and per transition), the bytes of
the memory's arrays per transition against the raw observation's size, the median time of one batch of 256
(``sample()``, one torch thread), and, for the ring memory, the time to write a checkpoint of it (safetensors,
fsynced) and to read it back into a new memory, with the file's size.

1M TrackMania transitions need about 4.3 GB of RAM (and as much disk): opt in with ``--tm-million``; without it that
row is skipped and its figures extrapolated from 100k (marked so). Everything else runs in a few minutes on 2 cores.

    python benchmarks/bench_memory_scaling.py                 # table
    python benchmarks/bench_memory_scaling.py --plot out.png  # and a plot (needs matplotlib)
    python benchmarks/bench_memory_scaling.py --quick         # 10k and 100k only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = (10_000, 100_000, 1_000_000)
BATCH = 256
CHUNK = 10_000
TM_FRAMES, TM_SIDE, TM_ACT_BUF, TM_ACT = 4, 64, 2, 3


def raw_obs_bytes(kind: str) -> int:
    """Bytes of one raw observation's arrays (what a sample carries before compression)."""
    if kind == "tm-full":
        return 3 * 4 + TM_FRAMES * TM_SIDE * TM_SIDE + TM_ACT_BUF * TM_ACT * 4
    return 3 * 4


def rss_bytes() -> int:
    """Resident memory after giving freed heap back to the system (so transient sample chunks do not count)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS may include freed heap
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def samples(kind: str, start: int, n: int, raw: bool, state: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``n`` synthetic samples of episodes of 1000 steps (compressed for ``tm-full`` unless ``raw``)."""
    import numpy as np

    rng = np.random.default_rng(start)
    rew = rng.normal(size=n)
    if kind == "pendulum":
        obs = rng.normal(size=(n, 3)).astype(np.float32)
        act = rng.uniform(-2, 2, size=(n, 1)).astype(np.float32)
        return [(act[i], obs[i], float(rew[i]), False, (start + i) % 1000 == 999, {}) for i in range(n)]
    from tmrl_core.compression import HistoryCompressor

    compressor = state.setdefault("compressor", HistoryCompressor(TM_ACT_BUF, 3))
    frames = rng.integers(0, 256, size=(n, TM_SIDE, TM_SIDE), dtype=np.uint8)
    actions = rng.uniform(-1, 1, size=(n, TM_ACT)).astype(np.float32)
    scalars = rng.uniform(0, 1, size=(n, 3, 1)).astype(np.float32)
    default = np.zeros(TM_ACT, dtype=np.float32)
    out = []
    for i in range(n):
        t = (start + i) % 1000
        if t == 0:
            state["history"] = [frames[i]] * TM_FRAMES
            state["act_buf"] = [*state.get("act_buf", [default] * TM_ACT_BUF)[:-1], default]
            act = default
        else:
            state["history"] = [*state["history"][1:], frames[i]]
            act = actions[i]
            state["act_buf"] = [*state["act_buf"][1:], act]
        obs = (scalars[i, 0], scalars[i, 1], scalars[i, 2], np.stack(state["history"]), *state["act_buf"])
        sample = (act, obs, float(rew[i]), False, t == 999, {})
        out.append(sample if raw else compressor(*sample))
    return out


def measure_one(kind: str, size: int, memory_name: str, batches: int) -> dict[str, Any]:
    """Fill one memory in this process and measure it (run in a fresh process by :func:`main`)."""
    import torch

    from tmrl_core.buffer import Buffer
    from tmrl_core.checkpoint import load_state, save_state
    from tmrl_core.memory import GenericTorchMemory, RingMemory

    torch.set_num_threads(1)
    options = {"act_buf_len": TM_ACT_BUF, "history_index": 3} if kind == "tm-full" else {}

    def make() -> Any:
        if memory_name == "ring":
            return RingMemory(memory_size=size, batch_size=BATCH, seed=0, **options)
        return GenericTorchMemory(memory_size=size, batch_size=BATCH, seed=0)

    state: dict[str, Any] = {}
    samples(kind, 0, 10, memory_name == "generic", {})  # imports and first allocations before the baseline
    memory = make()
    rss0 = rss_bytes()
    fill_s = 0.0  # time in append only (making the synthetic samples is not counted)
    for start in range(0, size + 1, CHUNK):
        buffer = Buffer(maxlen=CHUNK)
        buffer.memory.extend(samples(kind, start, min(CHUNK, size + 1 - start), memory_name == "generic", state))
        t0 = time.perf_counter()
        memory.append(buffer)
        fill_s += time.perf_counter() - t0
        del buffer
    rss1 = rss_bytes()
    memory.sample()
    times = []
    for _ in range(batches):
        t = time.perf_counter()
        memory.sample()
        times.append(time.perf_counter() - t)
    result: dict[str, Any] = {
        "kind": kind,
        "size": size,
        "memory": memory_name,
        "transitions": len(memory),
        "rss_growth": rss1 - rss0,
        "array_bytes": memory.nbytes() if hasattr(memory, "nbytes") else None,
        "fill_s": fill_s,
        "batch_ms": 1e3 * statistics.median(times),
    }
    if memory_name == "ring":
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMRL_BENCH_TMP")) as folder:
            path = Path(folder) / "ck.safetensors"
            t = time.perf_counter()
            save_state(path, {"memory": memory.state_dict()})
            result["write_s"] = time.perf_counter() - t
            result["file_bytes"] = path.stat().st_size
            del memory
            t = time.perf_counter()
            resumed = make()
            resumed.load_state_dict(load_state(path)["memory"])
            result["resume_s"] = time.perf_counter() - t
            assert len(resumed) == result["transitions"]
    return result


def run_child(kind: str, size: int, memory_name: str, batches: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", kind, str(size), memory_name, "--batches", str(batches)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"kind": kind, "size": size, "memory": memory_name, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def generic_estimate_bytes(kind: str, size: int) -> int:
    """Rough RAM of ``generic`` (raw samples as Python objects): arrays plus ~400 bytes of Python objects each."""
    return size * (raw_obs_bytes(kind) + 400)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'observation':<10} {'transitions':>11} {'memory':<8} {'RSS growth':>11} {'B/transition':>12} "
        f"{'x raw obs':>9} {'batch ms':>8} {'fill s':>7} {'ckpt write s':>12} {'resume s':>8} {'file':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r or "skipped" in r:
            why = r.get("skipped") or f"failed: {r['error']}"
            print(f"{r['kind']:<10} {r['size']:>11,} {r['memory']:<8} {why}")
            continue
        per = r["rss_growth"] / r["size"]
        mark = " *" if r.get("extrapolated") else ""
        print(
            f"{r['kind']:<10} {r['size']:>11,} {r['memory']:<8} {fmt_bytes(r['rss_growth']):>11} {per:>12,.0f} "
            f"{per / raw_obs_bytes(r['kind']):>9.2f} {r.get('batch_ms', float('nan')):>8.2f} "
            f"{r.get('fill_s', float('nan')):>7.1f} {r.get('write_s', float('nan')):>12.2f} "
            f"{r.get('resume_s', float('nan')):>8.2f} {fmt_bytes(r.get('file_bytes', 0)):>9}{mark}"
        )


def plot(rows: list[dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for (kind, name), style in zip(
        [(k, m) for k in ("tm-full", "pendulum") for m in ("ring", "generic")], ("o-", "s--", "^-", "v--"), strict=True
    ):
        pts = [r for r in rows if r["kind"] == kind and r["memory"] == name and "rss_growth" in r
               and not r.get("extrapolated")]  # fmt: skip
        if not pts:
            continue
        x = [r["size"] for r in pts]
        axes[0].plot(x, [r["rss_growth"] / 2**20 for r in pts], style, label=f"{kind} {name}")
        axes[1].plot(x, [r["batch_ms"] for r in pts], style, label=f"{kind} {name}")
        if name == "ring":
            mib = [r["file_bytes"] / 2**20 for r in pts]
            axes[2].plot(mib, [r["write_s"] for r in pts], style, label=f"{kind} write")
            axes[2].plot(mib, [r["resume_s"] for r in pts], ":", label=f"{kind} resume")
    for ax, title, ylabel in zip(
        axes,
        ("RSS growth", f"one batch of {BATCH}", "checkpoint"),
        ("MiB", "ms", "s"),
        strict=True,
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_xlabel("transitions")
    axes[1].set_xlabel("transitions")
    axes[2].set_xlabel("checkpoint file (MiB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k transitions only")
    parser.add_argument("--tm-million", action="store_true", help="also fill 1M TrackMania transitions (~4.3 GB)")
    parser.add_argument("--generic-budget-gb", type=float, default=1.0, help="skip generic rows estimated above this")
    parser.add_argument("--batches", type=int, default=30, help="batches timed per memory")
    parser.add_argument("--plot", metavar="PNG", help="write a plot (matplotlib)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "SIZE", "MEMORY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.one[2], args.batches)))
        return

    sizes = SIZES[:2] if args.quick else SIZES
    rows: list[dict[str, Any]] = []
    for kind in ("tm-full", "pendulum"):
        for size in sizes:
            for name in ("ring", "generic"):
                if name == "generic" and generic_estimate_bytes(kind, size) > args.generic_budget_gb * 2**30:
                    est = fmt_bytes(generic_estimate_bytes(kind, size))
                    rows.append({"kind": kind, "size": size, "memory": name, "skipped": f"skipped: needs ~{est}"})
                    continue
                if kind == "tm-full" and size == 1_000_000 and not args.tm_million:
                    base = next((r for r in rows if r["kind"] == kind and r["size"] == 100_000 and r["memory"] == name
                                 and "rss_growth" in r), None)  # fmt: skip
                    if base is not None:
                        k = size / base["size"]
                        rows.append({**base, "size": size, "extrapolated": True, "rss_growth": base["rss_growth"] * k,
                                     "write_s": base["write_s"] * k, "resume_s": base["resume_s"] * k,
                                     "file_bytes": base["file_bytes"] * k, "fill_s": base["fill_s"] * k})  # fmt: skip
                    continue
                t = time.perf_counter()
                rows.append(run_child(kind, size, name, args.batches))
                print(f"  measured {kind} {size:,} {name} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print(f"\nbatch size {BATCH}, one torch thread; raw observation: tm-full {raw_obs_bytes('tm-full'):,} B, "
          f"pendulum {raw_obs_bytes('pendulum')} B")  # fmt: skip
    print_table(rows)
    if any(r.get("extrapolated") for r in rows):
        print("* extrapolated from 100k (linear: the ring memory preallocates per transition; batch time as at 100k); "
              "--tm-million measures it")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
