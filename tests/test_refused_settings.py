"""Settings that cannot work are refused by the real ``tmrl run`` before anything starts (issue 15): one clear error
naming the key, a hint, exit status 1, and no process, checkpoint, weights or run folder left behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pydantic import ValidationError

from tmrl_core.preflight import available_memory, batch_bytes, transition_bytes_lower_bound
from tmrl_core.settings import RtgymTiming
from tmrl_core.specs import resolve

#: A run that would end quickly if it started: the refusals below must come before any of it.
RUN = ["run", "--env", "pendulum", "--env-steps", "10", "--run-name", "refused"]


def files_under(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def assert_refused(result, home: Path, *fragments: str, allowed: tuple[str, ...] = ()) -> None:
    """One clean error (every fragment in it), exit status 1, and nothing written in the data folder."""
    assert result.returncode == 1, result
    error = result.stderr
    assert error.startswith("Error: "), result
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert "Hint: " in error
    assert "Traceback" not in error + result.stdout
    assert "resuming" not in result.stdout and "finished after" not in result.stdout
    assert files_under(home) == sorted(allowed), "the refused run wrote files"


def cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize(
    ("setting", "fragments"),
    [
        (
            "training.memory_size=10000000000",
            ["training.memory_size=10000000000 (from --set) needs at least 290.0 GB for the replay memory",
             "(29 bytes per transition of env 'pendulum')", "of memory available on this machine"],
        ),
        (
            "training.batch_size=100000000",
            ["training.batch_size (100000000) cannot exceed training.memory_size (1000000)", "(from --set)"],
        ),
        ("training.device=banana", ["bad value for training.device: 'banana' (from --set)", "cuda:N"]),
        ("run.seed=-1", ["bad value for run.seed: -1 (from --set)", "greater than or equal to 0"]),
        (
            "worker.buffers_maxlen=1",
            ["worker.buffers_maxlen (1) must hold a whole episode", "worker.max_samples_per_episode + 1 = 1001"],
        ),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_are_refused_before_the_run_starts(
    run_tmrl, tmrl_home: Path, setting: str, fragments: list[str]
) -> None:
    if setting.startswith("training.memory_size") and (available_memory() or 0) > 300e9:
        pytest.skip("this machine has room for a 290 GB replay memory")
    assert_refused(run_tmrl(*RUN, "--set", setting), tmrl_home, *fragments)


def test_a_batch_that_cannot_fit_in_memory_is_refused_with_its_size(run_tmrl, tmrl_home: Path) -> None:
    result = run_tmrl(*RUN, "--set", "training.memory_size=20000000000", "--set", "training.batch_size=10000000000")
    # 10^10 x (two observations of 3 float32, one action, the scalars) = 410 GB
    assert_refused(result, tmrl_home, "training.batch_size=10000000000 (from --set) needs about 410.0 GB for one batch")
    assert re.search(r"Hint: lower training.batch_size: about \d+ fit", result.stderr)


def test_a_cuda_device_this_machine_lacks_is_refused(run_tmrl, tmrl_home: Path) -> None:
    count = cuda_devices()
    result = run_tmrl(*RUN, "--set", "training.device=cuda:7")
    if count == 0:
        expected = "training.device is 'cuda:7' (from --set), but CUDA is not available on this machine"
    elif count <= 7:
        expected = f"training.device is 'cuda:7' (from --set), but this machine has {count} CUDA device"
    else:
        pytest.skip("this machine has a cuda:7")
    assert_refused(result, tmrl_home, expected)


@pytest.mark.skipif(cuda_devices() > 0, reason="this machine has CUDA: worker.device=cuda works here")
def test_a_cuda_worker_without_cuda_is_refused(run_tmrl, tmrl_home: Path) -> None:
    result = run_tmrl(*RUN, env={"TMRL_WORKER__DEVICE": "cuda"})
    assert_refused(
        result, tmrl_home, "worker.device is 'cuda' (from environment variable TMRL_WORKER__DEVICE), but CUDA is not"
    )


def test_a_section_that_is_not_an_object_is_refused_by_run_as_by_config_show(run_tmrl, tmrl_home: Path) -> None:
    config = tmrl_home / "config" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"version": 1, "training": 5}))
    message = f"bad value for training: 5 (from {config}); expected an object of keys and values"
    # --env-steps sets a key of the same section: it must not hide the bad value by replacing it
    assert_refused(run_tmrl(*RUN), tmrl_home, message, allowed=("config/config.json",))
    shown = run_tmrl("config", "show")
    assert shown.returncode == 1 and f"Error: {message}" in shown.stderr, shown


def test_the_memory_estimates_are_lower_bounds_of_what_is_stored() -> None:
    # rtgym observation: a 4-frame image history, a speed, then the action buffer (2 actions), rebuilt from actions
    image = spaces.Box(0, 255, shape=(4, 64, 64), dtype=np.uint8)
    speed = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    observation = spaces.Tuple((image, speed, action, action))
    # one 64x64 frame, the speed, the action, reward/terminated/truncated as float32 and the episode-start flag
    assert transition_bytes_lower_bound(observation, action, act_buf_len=2) == 64 * 64 + 4 + 12 + 13
    # a batch holds both observations in full, as float32
    assert batch_bytes(observation, action, 2) == 2 * (2 * 4 * (4 * 64 * 64 + 1 + 3 + 3) + 12 + 13)


def test_rtgym_timing_that_contradicts_itself_is_refused_for_a_real_time_env(run_tmrl, tmrl_home: Path) -> None:
    result = run_tmrl(
        "run", "--env", "rc-drone", "--env-steps", "10", "--run-name", "refused",
        "--set", "rc_drone.start_obs_capture=0.2",
    )  # fmt: skip
    assert_refused(
        result,
        tmrl_home,
        "invalid settings in rc_drone (from --set): start_obs_capture (0.2) must not exceed time_step_duration (0.05)",
    )


@pytest.mark.parametrize("model", ["tmrl_core.envs:RcDroneSettings", "tmrl_trackmania.settings:TrackmaniaSettings"])
def test_every_real_time_env_shares_one_timing_validation(model: str) -> None:
    # one RtgymTiming section: the same bounds and the same cross-check for the core's drone and for TrackMania
    settings_model = resolve(model, what="settings model")
    assert issubclass(settings_model, RtgymTiming)
    with pytest.raises(ValidationError, match="greater than 0"):
        settings_model(time_step_timeout_factor=0)
    with pytest.raises(ValidationError, match="must not exceed time_step_duration"):
        settings_model(time_step_duration=0.02, start_obs_capture=0.03)
    timing = settings_model(time_step_duration=0.02, start_obs_capture=0.02).rtgym_timing()
    assert set(timing) == set(RtgymTiming.model_fields) and timing["time_step_duration"] == 0.02
