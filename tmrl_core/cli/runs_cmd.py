"""``tmrl runs`` (the runs of the data folder) and ``tmrl plot`` (their learning curves).

Neither imports torch; ``tmrl plot`` imports numpy, and matplotlib only for a PNG.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Optional

import typer

from tmrl_core.errors import ConfigError
from tmrl_core.paths import subdir

OptPath = Optional[Path]  # noqa: UP045 - typer needs Optional on python 3.10


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
    app.command("plot")(plot)


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _ret(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


STATUS_STYLE = {"running": "cyan", "finished": "green", "interrupted": "yellow", "failed": "red"}


def runs(
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON (for scripts)."),
) -> None:
    """List the runs of the data folder: env, algo, status, env and training steps, best and last test return."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tmrl_core.runs import list_runs

    found = list_runs()
    if as_json:
        typer.echo(json.dumps({"runs": [r.to_json() for r in found]}, indent=2))
        return
    console = Console()
    if not found:
        console.print("no runs yet in this data folder (`tmrl run` makes one)")
        return
    table = Table(show_edge=False)
    for column in ("run", "env", "algo", "status", "env steps", "training steps", "best test", "last test", "when"):
        table.add_column(column, justify="right" if column in {"env steps", "training steps"} else "left")
    for r in found:
        status = f"[{STATUS_STYLE.get(r.status, 'white')}]{r.status}[/]"
        table.add_row(
            escape(r.name), escape(r.env or "-"), escape(r.algo or "-"), status, str(r.env_steps),
            str(r.training_steps), _ret(r.best_test_return), _ret(r.last_test_return), _when(r.updated),
        )  # fmt: skip
    console.print(table)
    for r in found:
        if r.error:
            console.print(f"{escape(r.name)}: {escape(r.error)}", highlight=False)


def plot(
    run_names: list[str] = typer.Argument(..., metavar="RUN...", help="Runs to draw: names or patterns (sac-*)."),
    metrics: list[str] = typer.Option(
        [], "--metric", "-m", help="Metric to draw (repeatable; default return_test and return_train)."
    ),
    group: bool = typer.Option(
        False, "--group", help="Each RUN pattern is one configuration: draw its runs' mean and spread (± std)."
    ),
    terminal: bool = typer.Option(
        False, "--terminal", "-t", help="Draw in the terminal (a PNG is then written only with --output)."
    ),
    output: OptPath = typer.Option(None, "--output", "-o", help="The PNG to write (default: curves.png)."),
    x_key: str = typer.Option("env_steps", "--x", help="What the x axis counts: env_steps or training_steps."),
    title: str = typer.Option("", "--title", help="A title above the panels."),
) -> None:
    """Draw learning curves from the runs' metrics: a PNG (needs tmrl-core[plot]), or text with --terminal."""
    from tmrl_core.plot import DEFAULT_METRICS, curves, match_runs, text_plot, write_png

    if x_key not in {"env_steps", "training_steps", "episodes", "time"}:
        raise ConfigError(f"--x {x_key!r} is not a counter", hint="use env_steps, training_steps, episodes or time")
    matched = match_runs(run_names, subdir("runs", create=False))
    chosen = list(dict.fromkeys(metrics)) or list(DEFAULT_METRICS)
    panels = [(metric, curves(matched, metric, group=group, x_key=x_key)) for metric in chosen]
    if not any(lines for _, lines in panels):
        raise ConfigError(
            f"the runs have no values of {', '.join(chosen)} yet",
            hint="pick another --metric (any numeric key of metrics.jsonl), or wait for episodes to end",
        )
    x_label = x_key.replace("_", " ")
    if terminal:
        width = min(max(shutil.get_terminal_size((100, 24)).columns, 40), 160)
        for metric, lines in panels:
            typer.echo(text_plot(metric, lines, width=width, x_label=x_label))
            typer.echo("")
    if output is not None or not terminal:
        path = write_png(panels, output or Path("curves.png"), x_label=x_label, title=title)
        drawn = sum(len(lines) for _, lines in panels)
        typer.echo(f"wrote {path} ({len(panels)} panels, {drawn} curves)")
