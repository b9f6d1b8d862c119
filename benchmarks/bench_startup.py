"""Seconds from launching a training command to its first environment step: ``tmrl run`` against Stable-Baselines3
and against the floor that every torch program pays (``python -c "import torch"``), alternated, in one run.

- tmrl: ``tmrl run --env pendulum --algo sac -v`` in a fresh data folder; the first env step is the worker's
  ``worker: first env step`` log line.
- sb3: a script that builds SAC on Pendulum-v1 and calls ``learn``, printing a line at the env's first ``step``.
- floor: ``python -c "import torch"`` until it exits.

Each command is stopped (its whole process group) as soon as its line is seen. For ``tmrl run``, the CPU seconds its
worker process had used when it took that step are printed too: on a loaded machine, wall times swing with the load
(and the torch import's floor with them), while that figure barely moves, and on an idle machine it is about what
the worker adds after the parent has started it.

``--before DIR`` adds ``tmrl run`` from another source tree (e.g. ``git archive`` of an older commit, laid out like
this repository), first on ``PYTHONPATH``, alternated with the others: a change's before and after in one run.
Compile both trees' bytecode first (``python -m compileall -q DIR``) as an installation does.

    python benchmarks/bench_startup.py [--repeats 3] [--skip-sb3] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SB3_SCRIPT = """
import sys, gymnasium
from stable_baselines3 import SAC

class Mark(gymnasium.Wrapper):
    def step(self, action):
        if not getattr(self, "seen", False):
            self.seen = True
            print("first env step", file=sys.stderr, flush=True)
        return self.env.step(action)

SAC("MlpPolicy", Mark(gymnasium.make("Pendulum-v1")), batch_size=256, policy_kwargs={"net_arch": [256, 256]},
    device="cpu").learn(400)
"""


def children_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the child processes of ``pid`` (Linux; 0 elsewhere)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after the command: state, ppid, ..., utime (12th), stime (13th)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def time_to_line(
    cmd: list[str], marker: str | None, env: dict[str, str], timeout: float = 120.0, cpu: list[float] | None = None
) -> float:
    """Seconds from starting ``cmd`` to an output line containing ``marker`` (None: to its exit); appends the CPU
    seconds of its child processes at that line to ``cpu``."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        text=True,
        # not this folder: `python -m` (tmrl run's workers) puts the working directory first on sys.path, which would
        # import this checkout's tmrl_core instead of the one on PYTHONPATH (--before)
        cwd=env.get("TMRL_HOME"),
    )
    try:
        if marker is None:
            proc.wait(timeout)
            return time.perf_counter() - start
        assert proc.stdout is not None
        for line in proc.stdout:  # the live display prints worker logs on stdout, so both streams are read
            if marker in line:
                elapsed = time.perf_counter() - start
                if cpu is not None:
                    cpu.append(children_cpu(proc.pid))
                return elapsed
            if time.perf_counter() - start > timeout:
                break
        raise RuntimeError(f"{cmd[:3]} never printed {marker!r}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--before", metavar="DIR", help="also time tmrl run from this source tree")
    args = parser.parse_args(argv)
    tmrl = shutil.which("tmrl") or sys.exit("the tmrl command is not installed")
    sides: dict[str, list[float]] = {"floor": [], "tmrl": [], "before": [], "sb3": []}
    worker_cpu: dict[str, list[float]] = {"tmrl": [], "before": []}
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    for k in range(args.repeats):
        home = tempfile.mkdtemp(prefix="tmrl-bench-start-")
        env = {**os.environ, "TMRL_HOME": home}
        sides["floor"].append(time_to_line([sys.executable, "-c", "import torch"], None, env))
        run = [tmrl, "run", "--env", "pendulum", "--algo", "sac", "--env-steps", "400", "-n", f"start{k}", "-v"]
        sides["tmrl"].append(time_to_line(run, "worker: first env step", env, cpu=worker_cpu["tmrl"]))
        if args.before:
            tree = os.path.abspath(args.before)
            roots = [tree] + sorted(str(p) for p in Path(tree, "plugins").iterdir() if p.is_dir())
            path = os.pathsep.join(roots + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
            before = [*run[:-2], f"before{k}", "-v"]
            before_env = {**env, "PYTHONPATH": path}
            sides["before"].append(time_to_line(before, "worker: first env step", before_env, cpu=worker_cpu["before"]))
        if not args.skip_sb3:
            sides["sb3"].append(time_to_line([sys.executable, "-c", SB3_SCRIPT], "first env step", env))
        shutil.rmtree(home, ignore_errors=True)
        line = "  ".join(f"{name} {values[-1]:5.2f} s" for name, values in sides.items() if values)
        cpus = "  ".join(f"{name} {values[-1]:4.2f} s" for name, values in worker_cpu.items() if values)
        print(f"  {line}   (worker CPU at its first step: {cpus})", flush=True)
    floor = statistics.median(sides["floor"])
    print("\nmedian seconds from launch to the first env step (floor: to the end of `import torch`):")
    for name, values in sides.items():
        if values:
            m = statistics.median(values)
            print(f"  {name:6s} {m:5.2f} s  ({m / floor:.2f}x the torch import)")
    print("median CPU seconds of the worker process at its first env step:")
    for name, values in worker_cpu.items():
        if values:
            print(f"  {name:6s} {statistics.median(values):5.2f} s")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
