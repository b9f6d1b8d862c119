"""``tmrl run`` and ``tmrl test`` as real subprocesses: they end by themselves, leave no process behind, resume after
SIGKILL, stop cleanly on SIGINT, and refuse damaged checkpoints without touching them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tmrl_core.testing.pytest_plugin import tmrl_command

#: Small networks and short rounds: these tests check the pipeline's behaviour, not learning.
FAST = [
    "--set", "sac.hidden_sizes=[16,16]",
    "--set", "training.batch_size=16",
    "--set", "training.start_training=200",
    "--set", "training.steps_per_round=40",
    "--set", "training.update_model_interval=40",
]  # fmt: skip


def processes_of(home: Path) -> list[int]:
    """Every live process started for this data folder (workers, wandb services...), found through /proc."""
    pids = []
    marker = f"TMRL_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def metrics(home: Path, run: str) -> list[dict]:
    path = home / "runs" / run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start(home: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    full_env.update({"TMRL_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **env})
    return subprocess.Popen(
        [*tmrl_command(), *args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def no_leftovers(tmrl_home: Path):
    yield
    leftovers = processes_of(tmrl_home)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.mark.slow
def test_run_ends_by_itself_then_test_runs_the_policy(run_tmrl, tmrl_home: Path, no_leftovers) -> None:
    result = run_tmrl(
        "run", "--env", "pendulum", "--algo", "sac", "--workers", "2", "--env-steps", "600", "--run-name", "cli",
        "--seed", "1", "--wandb", *FAST,
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr
    assert "run cli finished" in result.stdout
    records = metrics(tmrl_home, "cli")
    assert records and records[-1]["env_steps"] >= 600
    assert all(r["training_steps"] <= r["env_steps"] + 1 for r in records)  # pendulum: one step per env step
    assert re.search(r"epoch 0 round \d+ \| env steps \d+", result.stdout)  # progress, one line per round
    assert (tmrl_home / "weights" / "cli.safetensors").is_file()
    assert (tmrl_home / "checkpoints" / "cli.safetensors").is_file()
    assert json.loads((tmrl_home / "runs" / "cli" / "run.json").read_text())["algo"] == "sac"
    assert list((tmrl_home / "runs" / "cli" / "wandb").glob("offline-run-*")), "wandb logged offline"
    wait_until(lambda: not processes_of(tmrl_home), 15, "every child process to be gone")

    tested = run_tmrl("test", "--env", "pendulum", "--run-name", "cli", "--episodes", "2", timeout=180)
    assert tested.returncode == 0, tested
    assert re.findall(r"episode \d: return -?\d+\.\d+", tested.stdout) and len(tested.stdout.splitlines()) == 3
    assert "mean return over 2 episodes" in tested.stdout

    unknown = run_tmrl("test", "--env", "pendulum", "--run-name", "nope", timeout=120)
    assert unknown.returncode == 1 and "Error: no run named 'nope'" in unknown.stderr, unknown


@pytest.mark.slow
def test_sigkill_then_restart_resumes_and_sigint_stops_cleanly(tmrl_home: Path, no_leftovers) -> None:
    from tmrl_core.checkpoint import load_state

    args = ["run", "--env", "pendulum", "--run-name", "resume", "--seed", "2", *FAST,
            "--set", "training.rounds_per_epoch=1"]  # fmt: skip
    checkpoint = tmrl_home / "checkpoints" / "resume.safetensors"

    first = start(tmrl_home, *args, "--epochs", "1000")
    try:
        wait_until(lambda: checkpoint.exists() and load_state(checkpoint)["training"]["epoch"] >= 2, 300, "epoch 2")
        first.send_signal(signal.SIGKILL)  # mid-epoch, no chance to checkpoint
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    wait_until(lambda: not processes_of(tmrl_home), 20, "the killed run's workers to end (parent-death signal)")
    saved = load_state(checkpoint)["training"]
    before = len(metrics(tmrl_home, "resume"))

    second = start(tmrl_home, *args, "--epochs", "1000")
    try:
        wait_until(lambda: len(metrics(tmrl_home, "resume")) > before, 300, "a round after resuming")
        t0 = time.monotonic()
        second.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = second.communicate(timeout=60)
        stop_seconds = time.monotonic() - t0
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert stop_seconds < 30, stop_seconds
    resumed = re.search(r"resuming run resume at epoch (\d+) round (\d+) \((\d+) env steps, (\d+) transitions", out)
    assert resumed, out
    epoch, rnd, env_steps, transitions = map(int, resumed.groups())
    assert (epoch, rnd, env_steps) == (saved["epoch"], saved["round"], saved["env_steps"])
    assert transitions == saved["env_steps"]  # pendulum: every env step of a whole episode is a transition
    assert metrics(tmrl_home, "resume")[before]["epoch"] == epoch  # the restarted run's first round
    assert "interrupted" in out
    final = load_state(checkpoint)["training"]  # written on Ctrl-C
    assert final["total_updates"] > saved["total_updates"]
    assert not processes_of(tmrl_home)


def test_a_damaged_checkpoint_is_refused_and_kept(run_tmrl, tmrl_home: Path, no_leftovers) -> None:
    checkpoint = tmrl_home / "checkpoints" / "bad.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    result = run_tmrl("run", "--env", "pendulum", "--run-name", "bad", "--env-steps", "200", timeout=120)
    assert result.returncode == 1, result
    assert "Error: checkpoint" in result.stderr and "corrupted or truncated" in result.stderr
    assert "Hint:" in result.stderr and "Traceback" not in result.stderr
    assert checkpoint.read_bytes() == b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"
    assert not (tmrl_home / "runs" / "bad" / "run.json").exists()  # nothing was started


@pytest.mark.slow
def test_rc_drone_runs_and_ends_by_itself(run_tmrl, tmrl_home: Path, no_leftovers) -> None:
    result = run_tmrl(
        "run", "--env", "rc-drone", "--algo", "sac", "--env-steps", "300", "--run-name", "drone", *FAST,
        "--set", "training.start_training=100",
        "--set", "rc_drone.time_step_duration=0.02", "--set", "rc_drone.start_obs_capture=0.02",
        "--set", "rc_drone.time_step_timeout_factor=5", "--set", "rc_drone.ep_max_length=50",
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result
    records = metrics(tmrl_home, "drone")
    assert records and records[-1]["env_steps"] >= 300 and records[-1]["training_steps"] > 0
