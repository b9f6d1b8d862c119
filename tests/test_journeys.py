"""The user's journeys, each as the user types it: ``tmrl run`` and ``tmrl test`` in subprocesses (in a real
pseudo-terminal where the screen matters), with a third-party plugin whose components fail on purpose
(``tests/plugins/tmrl-faulty``, found through its entry point like any installed plugin).

What they hold: run names are validated before anything starts and default to ``<env>-<algo>``; ``tmrl test`` finds
the run's env and algorithm in its run.json; a budget ends the run within one episode (for an env with no pacing
defaults too) and a budget that cannot train says so; a failing worker's message and hint are the last thing on the
screen and in the run's log, with a non-zero exit status; an exception inside a plugin's component names the
component and the plugin.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import fast_sets

from tmrl_core.testing.pytest_plugin import TmrlResult, tmrl_command

FAULTY_PLUGIN = Path(__file__).parent / "plugins" / "tmrl-faulty"

#: these tests check journeys, not learning: a shorter warm-up
FAST = fast_sets(start_training=100)


def with_faulty_plugin() -> dict[str, str]:
    """The environment that makes tmrl-faulty visible, as if it were installed."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(FAULTY_PLUGIN), os.environ.get("PYTHONPATH", "")) if p)}


def run_faulty_env(run_tmrl: Callable[..., TmrlResult], *args: str) -> TmrlResult:
    """`tmrl run --env faulty-env ARGS` with tmrl-faulty visible and the fast settings."""
    return run_tmrl("run", "--env", "faulty-env", *args, *FAST, env=with_faulty_plugin(), timeout=300)


def assert_the_one_error(result: TmrlResult, error_line: str) -> None:
    """A failed run that says ``error_line`` as its only 'Error:' line, and nothing of an internal error."""
    assert result.returncode == 1, result
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [error_line], result
    assert "Internal error" not in result.stderr and "please report" not in result.stderr, result


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def last_metrics(home: Path, run: str) -> dict:
    lines = (home / "runs" / run / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


# -- run names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../evilrun", "", "a" * 300, ".hidden", "a/b"])
def test_a_bad_run_name_is_refused_before_anything_starts(run_tmrl, tmrl_home: Path, name: str) -> None:
    result = run_tmrl("run", "--env", "pendulum", "--run-name", name, "--env-steps", "100")
    assert result.returncode == 1, result
    assert "run.name" in result.stderr and "letters, digits" in result.stderr, result
    assert "Traceback" not in result.stderr and "Internal error" not in result.stderr, result
    assert files_under(tmrl_home) == [], "a refused run name wrote files"
    assert not (tmrl_home.parent / "evilrun.safetensors").exists()
    tested = run_tmrl("test", "--run-name", name)
    assert tested.returncode == 1 and "Internal error" not in tested.stderr, tested


@pytest.mark.slow
@pytest.mark.timeout(900)  # two runs and three tmrl test commands: minutes on a loaded machine
def test_budgets_default_run_name_and_test_from_run_json(run_tmrl, tmrl_home: Path) -> None:
    """One data folder, as a user goes: a budget below start_training says so and leaves no checkpoint; the next run
    (the docs' next command) does not trip over that run: with an env that has no pacing defaults and two workers,
    it stops within one episode (30 steps) of its budget, is named faulty-env-sac, and `tmrl test` needs nothing but
    the name (or only the env). (Two tests before, each with its own training run: one run now serves both.)"""
    short = run_faulty_env(run_tmrl, "--env-steps", "60")
    assert short.returncode == 0, short
    out = " ".join(short.stdout.split())  # the console wraps long lines
    assert "this run will not train" in out and "training.start_training=100" in out, short
    assert "without training: 60 env steps collected" in out, short
    assert "test it" not in out and "weights:" not in out, short
    assert not (tmrl_home / "checkpoints").exists() or files_under(tmrl_home / "checkpoints") == []
    assert not (tmrl_home / "weights" / "faulty-env-sac.safetensors").exists()

    result = run_faulty_env(run_tmrl, "--workers", "2", "--env-steps", "300")
    assert result.returncode == 0 and "resuming" not in result.stdout, result
    assert "run faulty-env-sac finished" in result.stdout, result
    assert "test it: tmrl test --run-name faulty-env-sac" in result.stdout, result
    assert (tmrl_home / "checkpoints" / "faulty-env-sac.safetensors").exists()
    record = last_metrics(tmrl_home, "faulty-env-sac")
    assert 300 <= record["env_steps"] < 300 + 30, record
    assert record["training_steps"] > 0
    info = json.loads((tmrl_home / "runs" / "faulty-env-sac" / "run.json").read_text())
    assert (info["env"], info["algo"]) == ("faulty-env", "sac")

    tested = run_tmrl("test", "--run-name", "faulty-env-sac", env=with_faulty_plugin())
    assert tested.returncode == 0, tested
    assert "mean return over 1 episodes" in tested.stdout, tested
    by_env = run_tmrl("test", "--env", "faulty-env", "--episodes", "2", env=with_faulty_plugin())
    assert by_env.returncode == 0 and "mean return over 2 episodes" in by_env.stdout, by_env
    wrong = run_tmrl("test", "--run-name", "faulty-env-sac", "--env", "pendulum", env=with_faulty_plugin())
    assert wrong.returncode == 1 and "trained on env 'faulty-env'" in wrong.stderr, wrong


# -- errors are the plugin's, and never hidden -------------------------------------------------------------------


@pytest.mark.slow
def test_an_env_factory_error_names_the_plugin_and_is_in_the_log(run_tmrl, tmrl_home: Path) -> None:
    result = run_faulty_env(run_tmrl, "--set", "faulty_env.fail=factory")
    expected = "error in env 'faulty-env' from plugin tmrl-faulty: OSError: cannot open /dev/faulty-device"
    assert_the_one_error(result, f"Error: worker-0 failed: {expected}: no such device")
    log = (tmrl_home / "runs" / "faulty-env-sac" / "run.log").read_text()
    assert expected in log and "Traceback" in log and "make_faulty_env" in log
    assert "test it" not in result.stdout
    assert files_under(tmrl_home / "checkpoints") == []


@pytest.mark.slow
def test_an_agent_train_error_names_the_plugin(run_tmrl, tmrl_home: Path) -> None:
    result = run_faulty_env(run_tmrl, "--algo", "boom", "--env-steps", "400")
    assert result.returncode == 1, result
    assert "Error: error in agent 'boom' from plugin tmrl-faulty: RuntimeError: boom" in result.stderr, result
    assert "Hint:" in result.stderr
    assert "Internal error" not in result.stderr and "please report" not in result.stderr, result
    assert "error in agent 'boom'" in (tmrl_home / "runs" / "faulty-env-boom" / "run.log").read_text()


@pytest.mark.slow
def test_an_actor_that_cannot_be_built_stops_the_warm_up_and_names_the_plugin(run_tmrl, tmrl_home: Path) -> None:
    """The worker builds its actor in a thread during the warm-up: a build that fails ends the worker at the next
    warm-up step or test episode (a warm-up of a million steps is not waited for), blamed on the plugin like any
    other error."""
    record = tmrl_home / "faulty-env.jsonl"
    result = run_tmrl(
        "run", "--env", "faulty-env", "--algo", "boom-actor", *FAST, "--set", f"faulty_env.record={record}",
        "--set", "training.random_steps=1000000", "--set", "training.start_training=1000000",
        "--env-steps", "2000000", env=with_faulty_plugin(), timeout=300,
    )  # fmt: skip
    expected = "error in agent 'boom-actor' from plugin tmrl-faulty: RuntimeError: the boom actor cannot be built"
    assert_the_one_error(result, f"Error: worker-0 failed: {expected}")
    log = (tmrl_home / "runs" / "faulty-env-boom-actor" / "run.log").read_text()
    assert expected in log and "tmrl_faulty/agent.py" in log and "Traceback" in log
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines[0]["event"] == "first_step" and lines[-1]["event"] == "close", lines
    assert 0 < lines[-1]["total_steps"] < 1_000_000, lines  # stopped during the warm-up


def run_in_terminal(args: list[str], env: dict[str, str], *, columns: int = 120, rows: int = 60, timeout: float = 300):
    """Run ``args`` on a real pseudo-terminal of ``columns`` x ``rows``; returns (exit status, the screen's lines as
    a terminal emulator shows them at the end)."""
    import pyte

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s:\n" + "\n".join(screen.display))
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not data:
                    break
                stream.feed(data)
            elif proc.poll() is not None:
                break
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, [line.rstrip() for line in screen.display]


def unwrap(lines: list[str], columns: int) -> str:
    """The text of screen lines, a line that fills the width continuing on the next one (the terminal wrapped it)."""
    text = ""
    for line in lines:
        text += line if len(line) >= columns else line + " "
    return text.strip()


@pytest.mark.slow
def test_a_failing_worker_is_the_last_thing_on_the_screen(tmrl_home: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TMRL_")}
    env.update({"TMRL_HOME": str(tmrl_home), "TERM": "xterm-256color", **with_faulty_plugin()})
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    status, screen = run_in_terminal(
        [
            *tmrl_command(), "run", "--env", "faulty-env", "--set", "faulty_env.fail=step",
            "--set", "faulty_env.fail_after=150", *FAST,
        ],
        env,
    )  # fmt: skip
    text = "\n".join(screen)
    assert status == 1, text
    lines = [line for line in screen if line.strip()]
    error_at = next(i for i, line in enumerate(lines) if line.startswith("Error: worker-0 failed"))
    tail = unwrap(lines[error_at:], 120)
    assert tail.startswith(
        "Error: worker-0 failed: error in env 'faulty-env' from plugin tmrl-faulty: RuntimeError: the faulty env "
        "broke at step 151 Hint: this is a problem of the plugin tmrl-faulty"
    ), text
    assert lines[-1] == "(run with --debug for the traceback)", text
    assert "interrupted" not in text and "test it" not in text, text
    # the live display is drawn once, whole: one title, one closed table, and nothing of it after the summary
    assert sum("tmrl run faulty-env-sac" in line for line in lines) == 1, text
    table = [line for line in lines if line.lstrip().startswith(("┏", "┃", "┡", "│", "└", "╭", "╰"))]
    assert table and table[-1].lstrip().startswith("└"), text
    summary_at = next(i for i, line in enumerate(lines) if line.startswith("run faulty-env-sac failed"))
    assert all("│" not in line for line in lines[summary_at:]), text
    log = (tmrl_home / "runs" / "faulty-env-sac" / "run.log").read_text()
    assert "RuntimeError: the faulty env broke at step 151" in log


# -- start-up ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_first_env_step_does_not_wait_for_torch(run_tmrl, tmrl_home: Path) -> None:
    """`tmrl run`'s worker process takes its first (warm-up) env step before torch or the actor's plugin is imported:
    they load in a thread meanwhile (docs/benchmarks.md, start-up). The run then trains as usual."""
    record = tmrl_home / "faulty-env.jsonl"
    result = run_tmrl(
        "run", "--env", "faulty-env", "--env-steps", "300", *FAST, "--set", f"faulty_env.record={record}",
        env=with_faulty_plugin(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result
    first = json.loads(record.read_text().splitlines()[0])
    assert first == {
        "event": "first_step",
        "loaded": {"torch": False, "gymnasium": True, "tmrl_core.agents": False, "tmrl_sac.agent": False},
    }
    record_ = last_metrics(tmrl_home, "faulty-env-sac")
    assert 300 <= record_["env_steps"] < 300 + 30 and record_["training_steps"] > 0, record_


# -- real-time warnings ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_timed_out_time_steps_are_counted_not_printed(run_tmrl, tmrl_home: Path) -> None:
    """2 ms time steps with no elasticity: nearly every step of the real-time drone is late."""
    result = run_tmrl(
        "run", "--env", "rc-drone", "--env-steps", "200", *FAST,
        "--set", "rc_drone.time_step_duration=0.002", "--set", "rc_drone.start_obs_capture=0.002",
        "--set", "rc_drone.time_step_timeout_factor=0.001", "--set", "rc_drone.ep_max_length=50",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result
    output = result.stdout + result.stderr
    assert "Time-step timed out" not in output, result
    assert " ".join(output.split()).count("time steps timed out in this episode") == 0  # INFO: in the log only
    readable = [line for line in output.splitlines() if "of an episode timed out" in line]
    assert len(readable) == 1, result
    metrics = (tmrl_home / "runs" / "rc-drone-sac" / "metrics.jsonl").read_text()
    records = [json.loads(line) for line in metrics.splitlines()]
    counted = [r["time_step_timeouts_train"] for r in records if "time_step_timeouts_train" in r]
    assert counted and max(counted) > 10, records
    shares = [r["time_step_timeout_share_train"] for r in records if "time_step_timeout_share_train" in r]
    assert shares and all(0.0 <= share <= 1.0 for share in shares)


# -- config init --------------------------------------------------------------------------------------------------


def test_config_init_plugins_marks_a_setting_without_default(run_tmrl, tmrl_home: Path) -> None:
    result = run_tmrl("config", "init", "--plugins", env=with_faulty_plugin())
    assert result.returncode == 0, result
    assert "needs_key_env.api_key has no default: it is written as null" in result.stderr, result
    data = json.loads((tmrl_home / "config" / "config.json").read_text())
    assert data["needs_key_env"] == {"api_key": None, "episode_steps": 30}
    assert data["faulty_env"]["fail"] == "none"
    # the file is usable: other components work, and the one that needs the key says which key
    assert run_tmrl("config", "show", env=with_faulty_plugin()).returncode == 0
    refused = run_tmrl("run", "--env", "needs-key-env", "--env-steps", "10", env=with_faulty_plugin())
    assert refused.returncode == 1 and "needs_key_env.api_key" in refused.stderr, refused
    assert "Internal error" not in refused.stderr
