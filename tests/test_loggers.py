"""Metrics sinks (``tmrl_register_loggers``): the hook, the core's jsonl / tensorboard / wandb loggers, a third-party
logger (tmrl-example's) receiving every record of a real ``tmrl run``, a broken logger that does not stop the run,
and wandb refused with what to do before training starts when its package or a login is missing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import FAST

from tmrl_core import LoggerSpec, hookimpl
from tmrl_core.errors import ConfigError, MissingExtraError, PluginError, UnknownComponentError
from tmrl_core.metrics import MetricsLogger, read_metrics
from tmrl_core.settings import Settings
from tmrl_core.testing.pytest_plugin import tmrl_command


class ListLogger:
    """Keeps what it receives in class attributes (the test reads them after the MetricsLogger is gone)."""

    started: list[Any] = []
    records: list[dict[str, Any]] = []
    closed = 0

    def __init__(self, run: Any, settings: Any = None) -> None:
        ListLogger.started.append(run)

    def log(self, record: Mapping[str, Any]) -> None:
        ListLogger.records.append(dict(record))

    def close(self) -> None:
        ListLogger.closed += 1


class RaisingLogger:
    def __init__(self, run: Any, settings: Any = None) -> None:
        pass

    def log(self, record: Mapping[str, Any]) -> None:
        raise OSError("disk gone")

    def close(self) -> None:
        raise OSError("still gone")


class StartFails:
    def __init__(self, run: Any, settings: Any = None) -> None:
        raise RuntimeError("no endpoint")


class LoggersPlugin:
    @hookimpl
    def tmrl_register_loggers(self, register):
        register(LoggerSpec(name="list", factory=ListLogger, description="in memory"))
        register(LoggerSpec(name="raising", factory=RaisingLogger))
        register(LoggerSpec(name="start-fails", factory=StartFails))


@pytest.fixture
def loggers_plugin(plugin_manager, tmrl_home: Path):
    ListLogger.started, ListLogger.records, ListLogger.closed = [], [], 0
    return plugin_manager(("loggers-plugin", LoggersPlugin()))


def test_hook_tmrl_register_loggers(loggers_plugin, tmrl_home: Path) -> None:
    spec = loggers_plugin.get("logger", "list")
    assert isinstance(spec, LoggerSpec) and spec.plugin == "loggers-plugin"
    assert {"jsonl", "tensorboard", "wandb", "list"} <= set(loggers_plugin.registry("logger").names())
    settings = Settings(logging={"loggers": ["list"]})
    metrics = MetricsLogger("hooked", settings=settings, env="pendulum", algo="sac")
    assert metrics.names == ["list", "jsonl"]
    (run,) = ListLogger.started
    assert (run.name, run.env, run.algo, run.folder) == ("hooked", "pendulum", "sac", tmrl_home / "runs" / "hooked")
    assert run.config["training"]["batch_size"] == settings.training.batch_size
    records = [{"env_steps": i * 10, "training_steps": i, "loss": 1.0 / (i + 1), "complete": True} for i in range(5)]
    for record in records:
        metrics.log(record)
    metrics.log({"env_steps": 60, "return_test": float("nan"), "value": __import__("numpy").float32(2.5)})
    metrics.close()
    metrics.close()
    assert ListLogger.closed == 1
    written = read_metrics("hooked")
    assert ListLogger.records == written and len(written) == 6
    assert all(isinstance(r["time"], float) for r in written)
    assert written[-1]["return_test"] is None and written[-1]["value"] == 2.5


def test_a_logger_that_raises_is_disabled_with_its_plugins_name(loggers_plugin, caplog) -> None:
    metrics = MetricsLogger("faulty", settings=Settings(logging={"loggers": ["raising", "list"]}))
    with caplog.at_level("ERROR", logger="tmrl.metrics"):
        for i in range(3):
            metrics.log({"env_steps": i})
        metrics.close()
    assert metrics.failures == [
        "error in logger 'raising' from plugin 'loggers-plugin' (log): OSError: disk gone"
    ]  # reported once, then disabled: close() is not called on it any more
    disabled = metrics.failures[0] + "; the logger is disabled, the run goes on"
    assert [r.message for r in caplog.records].count(disabled) == 1
    assert len(ListLogger.records) == 3 and len(read_metrics("faulty")) == 3 and ListLogger.closed == 1


def test_a_logger_that_cannot_start_stops_before_training_naming_its_plugin(loggers_plugin, tmrl_home: Path) -> None:
    with pytest.raises(PluginError, match="logger 'start-fails' from plugin 'loggers-plugin' failed to start: "
                       "RuntimeError: no endpoint") as info:
        MetricsLogger("nostart", settings=Settings(logging={"loggers": ["list", "start-fails"]}))
    assert "TMRL_DISABLE_PLUGINS=loggers-plugin" in info.value.hint
    assert ListLogger.closed == 1  # what had started is closed again
    with pytest.raises(UnknownComponentError, match="(?s)unknown logger 'tensorbord'.*did you mean 'tensorboard'"):
        MetricsLogger("typo", settings=Settings(logging={"loggers": ["tensorbord"]}))


def test_wandb_checks_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tmrl_core.loggers import check_wandb
    from tmrl_core.settings import WandbSettings

    for key in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="needs a wandb login") as info:
        check_wandb(WandbSettings())
    assert "wandb login" in info.value.hint and "WANDB_MODE=offline" in info.value.hint
    check_wandb(WandbSettings(mode="offline"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_wandb(WandbSettings())
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    check_wandb(WandbSettings())  # what `wandb login` writes
    monkeypatch.setitem(sys.modules, "wandb", None)  # what importing a package that is not installed does
    with pytest.raises(MissingExtraError) as info:
        check_wandb(WandbSettings(mode="offline"))
    assert info.value.hint == "pip install 'tmrl-core[wandb]'"


# -- real runs --------------------------------------------------------------------------------------------------------


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files, read back with tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_a_run_reaches_tensorboard_and_a_third_party_logger_and_survives_a_broken_one(run_tmrl, tmrl_home) -> None:
    pytest.importorskip("tensorboard")
    result = run_tmrl(
        "run", "--env", "pendulum", "--algo", "sac", "--workers", "1", "--env-steps", "600", "--run-name", "sinks",
        "--log", "tensorboard", "--log", "example-recorder", "--log", "example-faulty",
        "--set", "example_faulty.fail_after=0", *FAST, "--set", "training.steps_per_round=10",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result
    folder = tmrl_home / "runs" / "sinks"
    records = read_metrics("sinks")
    assert records  # how many rounds fit in 600 env steps depends on the load

    # the third-party logger: the run's info once, every record as the JSONL has it, closed at the end
    info = json.loads((folder / "example-info.json").read_text())
    assert (info["name"], info["env"], info["algo"], info["closed"]) == ("sinks", "pendulum", "sac", True)
    assert info["config"]["logging"]["loggers"] == ["tensorboard", "example-recorder", "example-faulty"]
    received = [json.loads(line) for line in (folder / "example-records.jsonl").read_text().splitlines()]
    assert received == records

    # the broken one: reported once, as its plugin's error; the run went on to its budget
    message = (
        "error in logger 'example-faulty' from plugin 'example' (log): RuntimeError: boom: the example sink is gone"
    )
    output = " ".join((result.stdout + result.stderr).split())  # the log handler may wrap long lines
    assert output.count(message) == 1, result
    assert records[-1]["env_steps"] >= 600
    assert all(r["samples_dropped"] == 0 for r in records)  # one machine: the worker never lost its server

    # tensorboard: every numeric JSONL key is a scalar of the same name, at the record's env steps and time, with
    # the same value (TensorBoard keeps float32)
    scalars = tensorboard_scalars(folder)
    numeric_keys = {k for r in records for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert set(scalars) == numeric_keys - {"time"} and {"loss_critic", "return_train", "env_steps"} <= set(scalars)
    for key, points in scalars.items():
        expected = [(r["env_steps"], float(r[key]), r["time"]) for r in records if isinstance(r.get(key), (int, float))]
        assert [p[0] for p in points] == [e[0] for e in expected], key
        for (_, got, got_time), (_, want, want_time) in zip(points, expected, strict=True):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6), (key, got, want)
            assert got_time == pytest.approx(want_time, abs=1e-3)


def test_tensorboard_hyperparameters_are_the_settings(tmrl_home: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    settings = Settings(training={"batch_size": 77}, logging={"loggers": ["tensorboard"]})
    metrics = MetricsLogger("hp", settings=settings, env="pendulum", algo="sac")
    metrics.log({"env_steps": 5, "return_test": -3.0})
    metrics.close()
    acc = EventAccumulator(str(tmrl_home / "runs" / "hp"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["training.batch_size"].number_value == 77
    assert start.hparams["env"].string_value == "pendulum"
    assert set(tensorboard_scalars(tmrl_home / "runs" / "hp")) == {"env_steps", "return_test"}


def run_blocking(home: Path, blocked: str, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``tmrl ARGS`` with the module ``blocked`` made unimportable, as if its package were not installed.

    ``sys.modules[name] = None`` makes ``import name`` raise ImportError and ``importlib.util.find_spec`` return None,
    exactly what a venv without the package gives; building a second venv without wandb (and torch) for one message
    would cost minutes of the suite.
    """
    code = f"import sys; sys.modules[{blocked!r}] = None; from tmrl_core.cli import main; main(sys.argv[1:])"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TMRL_", "WANDB_"))}
    full_env.update({"TMRL_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **env})
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True, timeout=120
    )


RUN = ["run", "--env", "pendulum", "--algo", "sac", "--env-steps", "400", "--run-name", "wb", *FAST]


@pytest.mark.parametrize("flag", [["--wandb"], ["--log", "wandb"]])
def test_wandb_not_installed_says_which_extra_before_training(tmrl_home: Path, flag: list[str]) -> None:
    result = run_blocking(tmrl_home, "wandb", *RUN, *flag, env={"WANDB_MODE": "offline"})
    assert result.returncode == 1, result
    assert "Error: logging to wandb needs the wandb package, which is not installed" in result.stderr
    assert "Hint: pip install 'tmrl-core[wandb]'" in result.stderr
    assert "Internal error" not in result.stderr + result.stdout
    assert not (tmrl_home / "checkpoints").exists() and not (tmrl_home / "runs" / "wb" / "run.json").exists()


def test_wandb_without_a_login_says_what_to_do_before_training(tmrl_home: Path, tmp_path: Path) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TMRL_", "WANDB_")) and k != "NETRC"}
    full_env.update({"TMRL_HOME": str(tmrl_home), "HOME": str(tmp_path), "COLUMNS": "200", "NO_COLOR": "1"})
    result = subprocess.run(
        [*tmrl_command(), *RUN, "--wandb"], env=full_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result
    assert "Error: logging to wandb online needs a wandb login, and none was found" in result.stderr
    assert "wandb login" in result.stderr and "WANDB_MODE=offline" in result.stderr
    assert "Internal error" not in result.stderr + result.stdout
    assert not (tmrl_home / "checkpoints").exists() and not (tmrl_home / "runs" / "wb" / "run.json").exists()


def test_tensorboard_not_installed_says_which_extra(tmrl_home: Path) -> None:
    result = run_blocking(tmrl_home, "tensorboard", *RUN, "--log", "tensorboard", env={})
    assert result.returncode == 1, result
    assert "Hint: pip install 'tmrl-core[tensorboard]'" in result.stderr
    assert "Internal error" not in result.stderr


def test_worker_figures_reach_every_sink(tmrl_home: Path, one_torch_thread) -> None:
    """What a worker reports in its buffers (episode return and length, samples it had to drop while the server was
    unreachable: see the transport contract) is in the round's record, so in every logger."""
    import numpy as np

    from tmrl_core.buffer import Buffer
    from tmrl_core.pipeline import build_training, prepare

    p = prepare("pendulum", "sac", overrides={
        "training": {"start_training": 1, "steps_per_round": 1, "batch_size": 2},
        "sac": {"hidden_sizes": [8]},
    })  # fmt: skip
    training = build_training(p)()

    class Received:
        def __init__(self, buffers: list[Buffer]) -> None:
            self.buffers = buffers

        def retrieve_buffers(self) -> list[Buffer]:
            out, self.buffers = self.buffers, []
            return out

        def broadcast_model(self, actor: Any) -> None:
            pass

    buffer = Buffer()
    obs = np.zeros(3, dtype=np.float32)
    buffer.append_sample((np.zeros(1, np.float32), obs, 0.0, False, False, {}))
    for step in range(4):
        buffer.append_sample((np.zeros(1, np.float32), obs, -1.0, False, step == 3, {}))
    buffer.stat_train_return, buffer.stat_train_steps = -4.0, 4
    buffer.worker = "worker-3"
    buffer.count_dropped("unsent", 7)  # what its transport dropped while disconnected
    record = training.run_round(Received([buffer]))
    assert (record["return_train"], record["episode_length_train"], record["samples_dropped"]) == (-4.0, 4.0, 7)
    assert (record["samples_dropped/worker-3"], record["samples_dropped/worker-3/unsent"]) == (7, 7)
    empty = training.run_round(Received([]))  # counted once, in the round it arrived; then 0 for that worker
    assert (empty["samples_dropped"], empty["samples_dropped/worker-3"]) == (0, 0)
    assert "samples_dropped/worker-3/unsent" not in empty
    anonymous = Buffer()  # a buffer that does not say who sent it nor where its drops happened
    anonymous.dropped = 2
    other = training.run_round(Received([anonymous]))
    assert (other["samples_dropped/unnamed"], other["samples_dropped/unnamed/unspecified"]) == (2, 2)
    assert (other["samples_dropped"], other["samples_dropped/worker-3"]) == (2, 0)

    metrics = MetricsLogger("worker-figures", settings=Settings(logging={"loggers": ["tensorboard"]}))
    metrics.log(record)
    metrics.close()
    (written,) = read_metrics("worker-figures")
    assert written["samples_dropped"] == 7 and written["return_train"] == -4.0
    assert written["samples_dropped/worker-3/unsent"] == 7
    scalars = tensorboard_scalars(tmrl_home / "runs" / "worker-figures")
    assert scalars["samples_dropped"][0][:2] == (4, 7.0) and scalars["episode_length_train"][0][:2] == (4, 4.0)
    assert scalars["samples_dropped/worker-3/unsent"][0][:2] == (4, 7.0)


def test_tensorboard_logdir_runs_shows_every_run(tmrl_home: Path) -> None:
    """``tensorboard --logdir <data>/runs`` names each run after its folder (TensorBoard's own multiplexer)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    for name, value in (("first", -900.0), ("second", -300.0)):
        metrics = MetricsLogger(name, settings=Settings(logging={"loggers": ["tensorboard"]}))
        metrics.log({"env_steps": 100, "return_test": value})
        metrics.close()
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(tmrl_home / "runs"))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["first", "second"]
    scalar_tags = multiplexer.PluginRunToTagToContent("scalars")
    assert {run: sorted(tags) for run, tags in scalar_tags.items()} == {
        "first": ["env_steps", "return_test"],
        "second": ["env_steps", "return_test"],
    }
