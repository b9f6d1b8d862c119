"""Does an agent learn to drive the simulated TrackMania? ``tmrl run --env trackmania-lidar`` with sac and redqsac.

For each algorithm, track and seed, one ``tmrl run`` (trainer and worker as a user runs them, the simulated game in
the worker) until the env-step budget, with a deterministic test episode every ``--test-every`` training episodes.
From the run's ``metrics.jsonl`` it prints the test progress (share of the track covered) and test return against
env steps, and the env steps at which a deterministic test episode first finished a lap (the env's ``finished_test``
episode metric: the car crossed the finish line, whatever the finish bonus ``trackmania.end_of_track`` is;
``--end-of-track X`` sets that bonus).

Targets (issue 11): a finished deterministic lap within 20,000 env steps on the default track with sac, fewer with
redqsac; within 50,000 on the tight track.

Faster than real time: ``--time-scale K`` runs the simulator's clock K times faster
(``trackmania.sim.time_scale``) and shortens rtgym's time step by the same factor, so an env step is still 50 ms of
game time and every figure in env steps means what it means at the real 20 Hz pace (``--time-scale 1``, what a user
runs). Training per env step is the plugin's default, the same for a user: one training step per env step, the worker
waiting between episodes while the trainer is behind (``training.when_behind = wait``), so the curves do not depend
on how fast the machine trains; the wall-clock time does.

    python benchmarks/bench_trackmania_learning.py [--algos sac redqsac] [--tracks default tight] [--seeds 0 1 2]
        [--env trackmania-lidar] [--env-steps 20000] [--time-scale 4] [--test-every 5] [--until-lap] [--out DIR]

``--until-lap`` ends a run (Ctrl-C, so it writes its checkpoint) at its first finished deterministic test lap: the
figure the targets are about, without the rest of the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tmrl_command() -> list[str]:
    return [sys.executable, "-m", "tmrl_core"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_once(algo: str, track: str, seed: int, args: argparse.Namespace, home: Path) -> dict:
    scale = args.time_scale
    name = f"bench-{algo}-{track}-{seed}"
    sets = {
        "run.seed": seed,
        "trackmania.backend": "simulated",
        "trackmania.sim.track": track,
        "trackmania.sim.time_scale": scale,
        "trackmania.time_step_duration": 0.05 / scale,
        "trackmania.start_obs_capture": 0.04 / scale,
        "trackmania.sleep_time_at_reset": 0.0,
        "trackmania.timing_log": home / f"{name}-timing.jsonl",
        "worker.test_episode_interval": args.test_every,
        **({"trackmania.end_of_track": args.end_of_track} if args.end_of_track is not None else {}),
        **dict(kv.split("=", 1) for kv in args.set),
    }
    cmd = [*tmrl_command(), "run", "--env", args.env, "--algo", algo, "--env-steps", str(args.env_steps),
           "--run-name", name]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env.update(TMRL_HOME=str(home), PYTHONWARNINGS="ignore", WANDB_MODE="offline")
    metrics_path = home / "runs" / name / "metrics.jsonl"
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        stopped_at_lap = interrupted = timed_out = False
        lap_finished = _LapWatch(metrics_path)
        try:
            while proc.poll() is None:
                time.sleep(2.0)
                if time.perf_counter() - t0 > args.timeout:
                    proc.send_signal(signal.SIGINT)
                    timed_out = True
                    break
                if args.until_lap and not stopped_at_lap and lap_finished():
                    proc.send_signal(signal.SIGINT)  # Ctrl-C: the run writes its checkpoint and ends
                    stopped_at_lap = True
            proc.wait()
        except KeyboardInterrupt:
            # the benchmark itself is stopped (Ctrl-C, SIGTERM): stop its run too, as Ctrl-C would, and report what
            # it reached; a second signal while it checkpoints is ignored (the run is already ending)
            interrupted = True
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if proc.poll() is None and not (stopped_at_lap or timed_out):  # a second Ctrl-C would skip its checkpoint
                proc.send_signal(signal.SIGINT)
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    seconds = time.perf_counter() - t0
    ok = proc.returncode == 0 or ((stopped_at_lap or interrupted) and proc.returncode == 130)
    rows = [json.loads(line) for line in metrics_path.open()] if metrics_path.exists() else []
    curve = [
        (r["env_steps"], r["return_test"], r.get("progress_test"), r.get("training_steps"))
        for r in rows
        if r.get("return_test") is not None
    ]
    finish = next((r["env_steps"] for r in rows if _finished(r)), None)
    timing = home / f"{name}-timing.jsonl"
    entries = [json.loads(line) for line in timing.open()] if timing.exists() else []
    steps = sum(e["steps"] for e in entries)
    late = sum(e["timed_out"] for e in entries)
    return {
        "algo": algo, "track": track, "seed": seed, "returncode": 0 if ok else proc.returncode, "seconds": seconds,
        "curve": curve, "first_finish": finish, "env_steps": rows[-1]["env_steps"] if rows else 0,
        "training_steps": rows[-1].get("training_steps", 0) if rows else 0,
        "update_to_data": rows[-1].get("update_to_data") if rows else None,
        "timed_out_share": late / steps if steps else None,
        "train_progress_last": next((r["progress_train"] for r in reversed(rows) if "progress_train" in r), None),
        "stderr_tail": "" if ok else (stdout + stderr)[-1500:],
        "stopped_at_lap": stopped_at_lap,
        "interrupted": interrupted,
    }


def _finished(row: dict) -> bool:
    """Whether this ``metrics.jsonl`` row reports a deterministic test episode that crossed the finish line."""
    return (row.get("finished_test") or 0.0) >= 1.0


class _LapWatch:
    """Reads the lines a run appends to its ``metrics.jsonl`` (each read goes on from where the last stopped) and
    says whether a test episode has finished a lap."""

    def __init__(self, metrics_path: Path) -> None:
        self.path = metrics_path
        self.offset = 0
        self.finished = False

    def __call__(self) -> bool:
        if self.finished or not self.path.exists():
            return self.finished
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                if not line.endswith(b"\n"):  # the line being written: read it whole next time
                    break
                self.offset += len(line)
                if _finished(json.loads(line)):
                    self.finished = True
                    break
        return self.finished


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="trackmania-lidar", help="the env: trackmania-lidar, -lidar-progress or -full")
    parser.add_argument("--algos", nargs="+", default=["sac", "redqsac"])
    parser.add_argument("--tracks", nargs="+", default=["default", "tight"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--env-steps", type=int, default=20000)
    parser.add_argument("--time-scale", type=float, default=4.0)
    parser.add_argument("--test-every", type=int, default=5, help="a test episode every N training episodes")
    parser.add_argument(
        "--end-of-track", type=float, default=None, help="the finish bonus (default: the env's)"
    )
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    parser.add_argument(
        "--until-lap", action="store_true", help="end each run at its first finished deterministic test lap"
    )
    parser.add_argument("--set", action="append", default=[], help="extra KEY=VALUE settings for every run")
    parser.add_argument("--out", type=Path, default=None, help="data folder (default: a temporary one)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the current run like Ctrl-C (above)
    signal.signal(signal.SIGINT, _interrupt)  # also where the shell that started us ignores Ctrl-C (`cmd &`)
    home = args.out or Path(tempfile.mkdtemp(prefix="tmrl-bench-tm-"))
    home.mkdir(parents=True, exist_ok=True)
    print(f"data folder: {home}; time scale {args.time_scale:g}; budget {args.env_steps} env steps", flush=True)
    results = []
    runs = [(algo, track, seed) for algo in args.algos for track in args.tracks for seed in args.seeds]
    for algo, track, seed in runs:
        r = run_once(algo, track, seed, args, home)
        results.append(r)
        late = "-" if r["timed_out_share"] is None else f"{r['timed_out_share']:.1%}"
        stopped = " (interrupted: the runs after it are not started)" if r["interrupted"] else ""
        print(f"\n== {algo} on {track}, seed {seed}{stopped}: exit {r['returncode']}, {r['seconds']:.0f} s, "
              f"{r['env_steps']} env steps, {r['training_steps']} training steps (update-to-data "
              f"{r['update_to_data'] or 0:.2f}), timed-out steps {late}")
        if r["stderr_tail"]:
            print(r["stderr_tail"])
        print("   env steps | test return | test progress")
        for steps, ret, progress, _ in r["curve"]:
            p = "-" if progress is None else f"{progress:.2f}"
            print(f"   {steps:9d} | {ret:11.1f} | {p}")
        first = r["first_finish"] or ("not before it was stopped" if r["interrupted"] else "not within the budget")
        print(f"   first finished deterministic lap: {first}", flush=True)
        if r["interrupted"]:
            break
    print("\nsummary: env steps to the first finished deterministic test lap")
    for r in results:
        print(f"  {r['algo']:8s} {r['track']:8s} seed {r['seed']}: {r['first_finish'] or 'not reached'} "
              f"(best test progress {max((p or 0.0) for _, _, p, _ in r['curve']) if r['curve'] else 0.0:.2f})")
    with open(home / "bench_trackmania_learning.json", "w") as f:
        json.dump(results, f)
    return 130 if results and results[-1]["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
