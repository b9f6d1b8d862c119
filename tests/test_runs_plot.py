"""``tmrl runs`` and ``tmrl plot`` on real runs and real files: a finished, an interrupted (SIGINT), a killed and a
failed run reported as such; PNG curves checked pixel by pixel (size, not blank, axes drawn); groups drawn as mean
and spread; the terminal plot; matplotlib missing named as the extra to install; the live display's sparkline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import fast_sets, subprocess_env, wait_until

from tmrl_core.testing.pytest_plugin import tmrl_command

FAST = ["--workers", "1", *fast_sets(round_steps=20)]


def _env(home: Path) -> dict[str, str]:
    return subprocess_env(home, COLUMNS="200", NO_COLOR="1", TERM="dumb")


def _start(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*tmrl_command(), *args], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _records(home: Path, run: str) -> int:
    path = home / "runs" / run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _runs_json(run_tmrl) -> dict[str, dict]:
    result = run_tmrl("runs", "--json")
    assert result.returncode == 0, result
    return {r["name"]: r for r in json.loads(result.stdout)["runs"]}


@pytest.mark.slow
def test_runs_reports_finished_interrupted_killed_and_failed_runs(run_tmrl, tmrl_home: Path, tmp_path: Path) -> None:
    long = ["run", "--env", "pendulum", "--algo", "sac", "--env-steps", "100000", *FAST]

    # failed: the checkpoint cannot be written at the end of the first epoch (a file where its folder should be)
    tmrl_home.mkdir(parents=True, exist_ok=True)
    (tmrl_home / "checkpoints").write_text("not a folder")
    result = run_tmrl(
        "run", "--env", "pendulum", "--algo", "sac", "--epochs", "1", "--run-name", "broken", *FAST,
        "--set", "training.rounds_per_epoch=1", timeout=240,
    )  # fmt: skip
    assert result.returncode != 0, result
    (tmrl_home / "checkpoints").unlink()

    # interrupted: Ctrl-C (SIGINT) once it has logged a round; it checkpoints and exits 130. killed: SIGKILL leaves
    # "running" behind, with a process that no longer exists. Both at once: the suite is long enough.
    stopped = _start(tmrl_home, *long, "--run-name", "stopped")
    killed = _start(tmrl_home, *long, "--run-name", "killed")
    try:
        for name in ("stopped", "killed"):
            wait_until(lambda n=name: _records(tmrl_home, n) >= 1, 300, f"a first round of {name!r}")
        running = _runs_json(run_tmrl)
        assert running["stopped"]["status"] == running["killed"]["status"] == "running"
        assert (running["stopped"]["env"], running["stopped"]["algo"]) == ("pendulum", "sac")
        killed.kill()
        stopped.send_signal(signal.SIGINT)
        assert stopped.wait(120) == 130, stopped.stderr.read() if stopped.stderr else ""
    finally:
        for proc in (stopped, killed):
            proc.kill()
            proc.communicate()

    # finished: its budget spent
    result = run_tmrl("run", "--env", "pendulum", "--algo", "sac", "--env-steps", "400", "--run-name", "done", *FAST,
                      timeout=240)
    assert result.returncode == 0, result

    runs = _runs_json(run_tmrl)
    assert {name: r["status"] for name, r in runs.items()} == {
        "stopped": "interrupted",
        "killed": "failed",
        "broken": "failed",
        "done": "finished",
    }
    assert "killed, or crashed" in runs["killed"]["error"]
    assert "FileExistsError" in runs["broken"]["error"] or "NotADirectoryError" in runs["broken"]["error"]
    done = runs["done"]
    assert done["env_steps"] >= 400 and done["training_steps"] > 0
    assert (done["env"], done["algo"]) == ("pendulum", "sac")
    metrics = [json.loads(line) for line in (tmrl_home / "runs" / "done" / "metrics.jsonl").read_text().splitlines()]
    assert done["env_steps"] == metrics[-1]["env_steps"] and done["training_steps"] == metrics[-1]["training_steps"]
    tests = [m["return_test"] for m in metrics if m.get("return_test") is not None]
    assert done["best_test_return"] == (max(tests) if tests else None)
    assert done["last_test_return"] == (tests[-1] if tests else None)
    assert [r for r in runs] == sorted(runs, key=lambda n: runs[n]["updated"])  # oldest first

    table = run_tmrl("runs")
    assert table.returncode == 0, table
    for name, status in [("stopped", "interrupted"), ("killed", "failed"), ("broken", "failed"), ("done", "finished")]:
        assert any(name in line and status in line and "pendulum" in line for line in table.stdout.splitlines()), (
            table.stdout
        )

    # and the real runs plot: both panels, one curve per run that has values
    png = tmp_path / "real.png"
    result = run_tmrl("plot", "done", "stopped", "-m", "return_train", "-m", "loss_critic", "-o", str(png))
    assert result.returncode == 0, result
    assert f"wrote {png} (2 panels," in result.stdout
    check_png(png, (1280, 480))


def check_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The image is ``size``, not blank (many distinct colours), and has axes: long straight dark lines."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path).convert("RGB")
    assert image.size == size
    pixels = np.asarray(image).astype(int)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "a blank or nearly blank image"
    dark = pixels.sum(axis=2) < 200
    longest_row = max(_longest_run(row) for row in dark)
    longest_col = max(_longest_run(col) for col in dark.T)
    assert longest_row > size[0] * 0.25 and longest_col > size[1] * 0.5, "no axes drawn"
    return pixels


def _longest_run(line: np.ndarray) -> int:
    best = current = 0
    for value in line:
        current = current + 1 if value else 0
        best = max(best, current)
    return best


def write_run(home: Path, name: str, points: list[tuple[int, float]], key: str = "return_test") -> None:
    folder = home / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"env_steps": x, "training_steps": x // 2, key: y, "time": 1.0e9 + x}) for x, y in points]
    lines.insert(1, '{"env_steps": 5, "cut by a cra')  # a line a crash cut short is skipped
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_plot_groups_draw_mean_and_spread(run_tmrl, tmrl_home: Path, tmp_path: Path) -> None:
    from tmrl_core.plot import curves, match_runs

    write_run(tmrl_home, "sac-seed1", [(0, -1000.0), (100, -500.0), (200, -200.0), (300, -150.0)])
    write_run(tmrl_home, "sac-seed2", [(0, -1200.0), (100, -700.0), (200, -400.0)])
    write_run(tmrl_home, "redq-seed1", [(0, -900.0), (150, -300.0), (300, -100.0)])
    matched = match_runs(["sac-*", "redq-*"], tmrl_home / "runs")
    sac, redq = curves(matched, "return_test", group=True)
    assert sac.runs == ["sac-seed1", "sac-seed2"] and redq.runs == ["redq-seed1"]
    assert sac.label == "sac-* (mean ± std of 2)"
    # the range both runs reached, at every env step either of them logged
    assert list(sac.x) == [0.0, 100.0, 200.0]
    assert list(sac.y) == [-1100.0, -600.0, -300.0] and list(sac.high - sac.y) == [100.0, 100.0, 100.0]
    assert redq.low is None and list(redq.y) == [-900.0, -300.0, -100.0]

    png = tmp_path / "groups.png"
    result = run_tmrl("plot", "sac-*", "redq-*", "--group", "-o", str(png), "--title", "SAC vs REDQ")
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"wrote {png} (2 panels, 2 curves)"  # no return_train: an empty panel says so
    pixels = check_png(png, (1280, 480))
    left = pixels[:, :640]
    # the band (alpha 0.2 of the first colour, matplotlib's blue, over white) is drawn in the left panel
    band = (np.abs(left - np.array([210, 227, 240])).sum(axis=2) < 25).sum()
    assert band > 500, band

    result = run_tmrl("plot", "sac-*", "--group", "--terminal")
    assert result.returncode == 0, result
    out = result.stdout
    assert "return_test" in out and "• sac-* (mean ± std of 2)" in out and "░" in out
    assert "     -1200 ┤" in out and "      -200 ┤" in out  # the band's bottom and the mean's top
    assert not list(tmp_path.glob("curves.png")) and "wrote" not in out  # --terminal alone writes no PNG


def test_plot_errors_are_clear(run_tmrl, tmrl_home: Path) -> None:
    write_run(tmrl_home, "only", [(0, 1.0), (10, 2.0)])
    result = run_tmrl("plot", "nothing-*")
    assert result.returncode == 1 and "no run matches 'nothing-*'" in result.stderr and "only" in result.stderr
    result = run_tmrl("plot", "only", "-m", "loss_critic")
    assert result.returncode == 1 and "the runs have no values of loss_critic yet" in result.stderr
    assert "Internal error" not in result.stderr


def test_plot_without_matplotlib_names_the_extra(tmrl_home: Path, tmp_path: Path) -> None:
    write_run(tmrl_home, "only", [(0, 1.0), (10, 2.0)])
    # sys.modules["matplotlib"] = None: `import matplotlib` raises ImportError, as in a venv without it
    code = "import sys; sys.modules['matplotlib'] = None; from tmrl_core.cli import main; main(sys.argv[1:])"

    def plot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, "plot", "only", *args],
            env=_env(tmrl_home), capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip

    result = plot()
    assert result.returncode == 1, result
    assert "Error: tmrl plot needs matplotlib to draw a PNG" in result.stderr
    assert "Hint: pip install 'tmrl-core[plot]'" in result.stderr
    assert not (tmp_path / "curves.png").exists()
    result = plot("--terminal")  # text needs no extra
    assert result.returncode == 0 and "• only" in result.stdout, result


def test_runs_without_runs_and_old_runs(run_tmrl, tmrl_home: Path) -> None:
    result = run_tmrl("runs")
    assert result.returncode == 0 and "no runs yet" in result.stdout
    write_run(tmrl_home, "old", [(0, 1.0), (10, 3.0), (20, 2.0)])  # a run from before status files
    (runs,) = json.loads(run_tmrl("runs", "--json").stdout)["runs"]
    assert (runs["name"], runs["status"], runs["env_steps"], runs["training_steps"]) == ("old", "unknown", 20, 10)
    assert (runs["best_test_return"], runs["last_test_return"], runs["rounds"]) == (3.0, 2.0, 3)


def test_sparkline() -> None:
    from tmrl_core.plot import sparkline

    assert sparkline([]) == "" and sparkline([float("nan")]) == ""
    assert sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 5.0]) == "▅▅"
    assert sparkline(list(range(100)), width=10) == sparkline(list(range(90, 100)))


def test_the_live_display_shows_a_sparkline_of_test_returns(tmrl_home: Path) -> None:
    from rich.console import Console

    from tmrl_core.cli.run_cmd import ProgressDisplay
    from tmrl_core.pipeline import prepare

    console = Console(force_terminal=True, width=120, record=True, file=open(os.devnull, "w"))
    display = ProgressDisplay(console, prepare("pendulum", "sac"), 1)
    with display:
        for i, ret in enumerate([-1500.0, None, -1200.0, -800.0, -300.0, -150.0]):
            record = {"epoch": 0, "round": i, "env_steps": 200 * i, "training_steps": 100 * i}
            if ret is not None:
                record["return_test"] = ret
            display.update(record)
    text = console.export_text()
    assert "-150.0  ▁▃▅▇█" in text, text  # -1500, -1200, -800, -300, -150 on 8 levels
    console.file.close()
