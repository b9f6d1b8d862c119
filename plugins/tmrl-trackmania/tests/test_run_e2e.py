"""`tmrl run` end to end on the simulated game: a worker process drives the car in real time (50 ms steps) while the
trainer learns, and fewer than 1% of the time steps time out.

The timed-out steps are counted by the environment itself (``trackmania.timing_log``: it replays rtgym's elastic
clock at every control, see ``StepTiming``), in the worker process, over every step of the run.
"""

from __future__ import annotations

import json

import pytest


def _run(run_tmrl, tmrl_home, env: str, algo: str, env_steps: int):
    timing = tmrl_home / "timing.jsonl"
    result = run_tmrl(
        "run", "--env", env, "--algo", algo, "--env-steps", str(env_steps), "--run-name", f"e2e-{env}-{algo}",
        "--set", "trackmania.backend=simulated",
        "--set", "trackmania.sleep_time_at_reset=0",
        "--set", "trackmania.ep_max_length=100",  # whole episodes reach the trainer: keep them short
        "--set", f"trackmania.timing_log={timing}",
        "--set", "training.start_training=100",
        "--set", "training.batch_size=32",
        "--set", "training.steps_per_round=10",
        "--set", "training.update_buffer_interval=10",
        "--set", "training.update_model_interval=10",
        env={"PYTHONWARNINGS": "ignore"},
        timeout=240,
    )
    assert result.returncode == 0, str(result)
    entries = [json.loads(line) for line in timing.read_text().splitlines()]
    steps = sum(e["steps"] for e in entries)
    timed_out = sum(e["timed_out"] for e in entries)
    metrics = [json.loads(line) for line in (tmrl_home / "runs" / f"e2e-{env}-{algo}" / "metrics.jsonl").open()]
    return result, steps, timed_out, metrics


@pytest.mark.slow
@pytest.mark.parametrize("env, algo", [("trackmania-lidar", "sac"), ("trackmania-full", "redqsac")])
def test_tmrl_run_on_the_simulated_game_keeps_real_time(run_tmrl, tmrl_home, env, algo):
    result, steps, timed_out, metrics = _run(run_tmrl, tmrl_home, env, algo, env_steps=300)
    assert steps >= 300
    assert max(m.get("training_steps", 0) for m in metrics) > 0  # training ran while the car drove
    assert timed_out < 0.01 * steps, f"{timed_out} of {steps} time steps timed out\n{result}"
    assert (tmrl_home / "weights" / f"e2e-{env}-{algo}.safetensors").is_file()
