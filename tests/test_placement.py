"""Where the trainer runs: thread plans, the thread tuner's choices, denormal flushing, and the update-to-data ratio
of real-time runs (logged per round; held at its target with ``training.when_behind=wait``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tmrl_core.placement import MAX_TUNED_THREADS, ThreadTuner, configure_torch, plan_trainer_threads


@pytest.fixture
def restore_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


# -- plans -------------------------------------------------------------------------------------------------------------


def test_lockstep_workers_leave_every_core_to_the_trainer_and_free_running_ones_keep_one_each() -> None:
    lockstep = plan_trainer_threads(2, 1, lockstep=True, realtime=False)
    assert (lockstep.threads, lockstep.reserved_for_workers, lockstep.adaptive) == (2, 0, True)
    free = plan_trainer_threads(16, 4, lockstep=False, realtime=False)
    assert (free.threads, free.reserved_for_workers) == (12, 4)
    # a real-time worker gets its core even when its steps are bounded per model (training.when_behind=wait)
    realtime = plan_trainer_threads(2, 1, lockstep=True, realtime=True)
    assert (realtime.threads, realtime.reserved_for_workers) == (1, 1)
    assert plan_trainer_threads(2, 8, lockstep=False, realtime=True).threads == 1  # never below one
    assert plan_trainer_threads(64, 1, lockstep=True, realtime=False, requested=3).threads == 3
    assert not plan_trainer_threads(64, 1, lockstep=True, realtime=False, requested=3).adaptive
    assert plan_trainer_threads(64, 1, lockstep=True, realtime=False, device="cuda:0").threads == 1


def test_the_tuner_tries_powers_of_two_up_to_the_plan_and_the_cap() -> None:
    assert plan_trainer_threads(6, 0, lockstep=True, realtime=False).tuner().candidates == [1, 2, 4, 6]
    assert plan_trainer_threads(64, 0, lockstep=True, realtime=False).tuner().candidates == [1, 2, 4, MAX_TUNED_THREADS]
    assert plan_trainer_threads(1, 0, lockstep=True, realtime=False).tuner() is None  # nothing to choose
    assert plan_trainer_threads(8, 0, lockstep=True, realtime=False, requested=4).tuner() is None


# -- the tuner ---------------------------------------------------------------------------------------------------------


def _feed(tuner: ThreadTuner, seconds_for: dict[int, float], steps: int) -> list[int]:
    """Report ``steps`` training steps, each taking ``seconds_for[threads in use]``; returns the threads used."""
    used = []
    for _ in range(steps):
        used.append(tuner.current)
        assert torch.get_num_threads() == tuner.current
        tuner.record(seconds_for[tuner.current])
    return used


def test_the_tuner_keeps_the_fastest_count_and_stops_escalating_once_slower(restore_torch: None) -> None:
    tuner = ThreadTuner([1, 2, 4, 8], probe_steps=3, settle_steps=1, exploit_steps=100)
    used = _feed(tuner, {1: 0.010, 2: 0.006, 4: 0.008, 8: 0.001}, 12)
    assert not tuner.probing and tuner.current == 2
    assert 8 not in used  # 4 was slower than 2: 8 is never tried
    assert tuner.step_seconds == {1: 0.010, 2: 0.006, 4: 0.008}


def test_the_tuner_drops_a_crawling_count_after_one_step_and_measures_again_when_steps_slow_down(
    restore_torch: None,
) -> None:
    tuner = ThreadTuner([1, 2], probe_steps=3, settle_steps=1, exploit_steps=1000, give_up=2.0)
    used = _feed(tuner, {1: 0.010, 2: 0.5}, 6)  # a busy machine: spinning threads crawl
    assert used.count(2) == 2  # the first step after a switch is not judged, the second gives up
    assert tuner.current == 1 and not tuner.probing
    # the load changes: single-threaded steps get 3x slower, the tuner measures again and now prefers 2
    _feed(tuner, {1: 0.030, 2: 0.012}, 40)
    assert tuner.probes == 2 and tuner.current == 2


def test_the_tuner_measures_again_after_its_exploit_steps(restore_torch: None) -> None:
    tuner = ThreadTuner([1, 2], probe_steps=2, settle_steps=0, exploit_steps=5)
    _feed(tuner, {1: 0.01, 2: 0.02}, 4)
    assert tuner.probes == 1 and tuner.current == 1
    _feed(tuner, {1: 0.01, 2: 0.02}, 5)
    assert tuner.probes == 2 and tuner.probing


def test_the_first_choice_is_measured_again_soon_then_less_and_less_often(restore_torch: None) -> None:
    """The first measurement happens while the run starts and can be wrong: it is redone after 200 steps, the next
    after 800, then every 3,000."""
    tuner = ThreadTuner([1, 2], probe_steps=2, settle_steps=0)
    starting = {1: 0.01, 2: 0.02}  # two threads look slow while a worker imports torch beside the trainer
    _feed(tuner, starting, 4)
    assert tuner.probes == 1 and tuner.current == 1 and not tuner.probing
    _feed(tuner, {1: 0.01, 2: 0.005}, 199)
    assert tuner.probes == 1
    _feed(tuner, {1: 0.01, 2: 0.005}, 1 + 4)  # the 200th step ends the first choice; 2 threads win now
    assert tuner.probes == 2 and tuner.current == 2 and not tuner.probing
    _feed(tuner, {1: 0.01, 2: 0.005}, 799)
    assert tuner.probes == 2
    _feed(tuner, {1: 0.01, 2: 0.005}, 1 + 4)
    assert tuner.probes == 3 and not tuner.probing
    _feed(tuner, {1: 0.01, 2: 0.005}, 2999)
    assert tuner.probes == 3
    _feed(tuner, {1: 0.01, 2: 0.005}, 1)
    assert tuner.probes == 4


def test_configure_torch_flushes_denormals_in_the_training_thread(restore_torch: None) -> None:
    tiny = torch.tensor([1e-40])  # a float32 denormal
    assert (tiny * 1.0).item() != 0.0
    configure_torch(plan_trainer_threads(2, 1, lockstep=True, realtime=False))
    assert (tiny * 1.0).item() == 0.0
    assert torch.get_num_threads() == 1  # adaptive plans start at the tuner's first candidate


# -- the update-to-data ratio of real-time runs --------------------------------------------------------------------


FAST_DRONE = [
    "rc_drone.time_step_duration=0.01",
    "rc_drone.start_obs_capture=0.01",
    "rc_drone.ep_max_length=20",
    "training.start_training=40",
    "training.steps_per_round=20",
    "training.update_model_interval=20",
    "training.update_buffer_interval=5",
    "training.max_training_steps_per_env_step=4.0",
    "training.threads=1",
    "sac.hidden_sizes=[32,32]",
    "training.batch_size=32",
    "worker.test_episode_interval=0",
]


@pytest.mark.parametrize("when_behind", ["wait", "continue"])
def test_rc_drone_rounds_log_the_update_to_data_ratio_and_wait_holds_it(tmrl_home: Path, when_behind: str) -> None:
    from tmrl_core.pipeline import prepare, run_local

    p = prepare(
        "rc-drone",
        "sac",
        overrides={"run": {"name": f"utd-{when_behind}", "seed": 0}, "training": {"max_env_steps": 160}},
        sets=[*FAST_DRONE, f"training.when_behind={when_behind}"],
    )
    assert p.synchronous == (when_behind == "wait")
    result = run_local(p)
    history = result.history
    assert history and history[-1]["env_steps"] >= 160
    for record in history:
        assert record["update_to_data_target"] == 4.0
        expected = record["training_steps"] / record["env_steps"] if record["env_steps"] else 0.0
        assert record["update_to_data"] == pytest.approx(expected)
    logged = [json.loads(line) for line in (tmrl_home / "runs" / p.settings.run.name / "metrics.jsonl").open()]
    assert [r["update_to_data"] for r in logged] == [r["update_to_data"] for r in history]
    if when_behind == "wait":
        # Once training runs, a worker starts an episode (20 steps) only when training has caught up with 4 steps
        # per env step: at any round end, at most one episode was collected beyond what the training steps stand
        # for, or beyond what the worker was let collect before training started: what the first round had, plus
        # one episode still arriving (before training starts the trainer sends weights at every batch, so a fast
        # worker runs up to two episodes ahead; on an idle machine the first round ends before the second arrives).
        first = history[0]["env_steps"]
        for record in history[1:]:
            assert record["env_steps"] <= max(record["training_steps"] / 4.0, first + 20) + 20 + 1, record
        assert history[-1]["training_steps"] >= 4.0 * (history[-1]["env_steps"] - 20 - 1)


# -- start-up ------------------------------------------------------------------------------------------------------


def test_preparing_a_run_imports_no_torch_so_workers_start_first(tmrl_home: Path) -> None:
    """``tmrl run`` spawns its workers right after ``prepare``: torch imported there would come before them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tmrl_core.pipeline import prepare\n"
        "for env, algo in (('pendulum', 'sac'), ('rc-drone', 'redqsac'), ('trackmania-full', 'sac')):\n"
        "    prepare(env, algo)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr
