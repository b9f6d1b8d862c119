"""Learning curves from the runs' ``metrics.jsonl``: a PNG (matplotlib, headless; ``tmrl-core[plot]``), a plot in
the terminal (text, no dependency), and the sparkline of ``tmrl run``'s live display.

A curve is one metric of one run against env steps (or another counter). A group is several runs of one
configuration (e.g. seeds): drawn as their mean, with a band from ``mean - std`` to ``mean + std``, on the env steps
that every run of the group reached (each run's curve is interpolated linearly onto the same points).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmrl_core.errors import ConfigError, MissingExtraError
from tmrl_core.loggers import METRICS_FILE
from tmrl_core.runs import iter_records

PLOT_HINT = "pip install 'tmrl-core[plot]'"
DEFAULT_METRICS = ("return_test", "return_train")
SPARK = "▁▂▃▄▅▆▇█"


@dataclass
class Curve:
    """One line of a plot: ``x`` and ``y`` (mean, for a group), and ``low``/``high`` for a group's band."""

    label: str
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    runs: list[str] = field(default_factory=list)


def match_runs(patterns: Sequence[str], root: Path) -> list[tuple[str, list[Path]]]:
    """``[(pattern, run folders)]``: each pattern is a run name or a shell pattern (``sac-seed*``).

    Raises:
        ConfigError: a pattern that matches no run (the message lists the runs there are).
    """
    names = sorted(p.name for p in root.iterdir() if (p / METRICS_FILE).is_file()) if root.is_dir() else []
    matched = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            listing = ", ".join(names) if names else "none"
            raise ConfigError(
                f"no run matches {pattern!r} in {root}; runs with metrics: {listing}",
                hint="`tmrl runs` lists the runs of this data folder (set TMRL_HOME for another one)",
            )
        matched.append((pattern, [root / n for n in hits]))
    return matched


def series(folder: Path, metric: str, x_key: str = "env_steps") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``metric`` in a run's records where both are finite numbers, sorted by ``x``."""
    xs, ys = [], []
    for record in iter_records(folder / METRICS_FILE):
        x, y = record.get(x_key), record.get(metric)
        if _finite(x) and _finite(y):
            xs.append(float(x))
            ys.append(float(y))
    order = np.argsort(np.asarray(xs), kind="stable")
    return np.asarray(xs)[order], np.asarray(ys)[order]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def group_curve(label: str, runs: list[tuple[str, np.ndarray, np.ndarray]], points: int = 200) -> Curve | None:
    """Mean and ``mean ± std`` of several runs' curves on the x range they all cover (None if they share none)."""
    runs = [r for r in runs if len(r[1])]
    if not runs:
        return None
    if len(runs) == 1:
        name, x, y = runs[0]
        return Curve(label, x, y, runs=[name])
    lo = max(float(x[0]) for _, x, _ in runs)
    hi = min(float(x[-1]) for _, x, _ in runs)
    if hi < lo:
        return None
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for _, x, _ in runs]))
    if len(grid) > points:
        grid = np.linspace(lo, hi, points)
    stacked = np.stack([np.interp(grid, x, y) for _, x, y in runs])
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    return Curve(label, grid, mean, mean - std, mean + std, runs=[name for name, _, _ in runs])


def curves(
    matched: list[tuple[str, list[Path]]], metric: str, *, group: bool, x_key: str = "env_steps"
) -> list[Curve]:
    """The curves of ``metric``: one per run, or (``group``) one per pattern over the runs it matched."""
    out: list[Curve] = []
    for pattern, folders in matched:
        data = [(f.name, *series(f, metric, x_key)) for f in folders]
        if group:
            label = f"{pattern} (mean ± std of {len(folders)})" if len(folders) > 1 else pattern
            curve = group_curve(label, data)
            if curve is not None:
                out.append(curve)
        else:
            out.extend(Curve(name, x, y, runs=[name]) for name, x, y in data if len(x))
    return out


# -- PNG ---------------------------------------------------------------------------------------------------------------


def write_png(
    panels: list[tuple[str, list[Curve]]], path: Path, *, x_label: str = "env steps", title: str = ""
) -> Path:
    """One panel per metric, side by side, to ``path`` (PNG, 100 dpi, headless)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError(f"tmrl plot needs matplotlib to draw a PNG ({exc})", hint=PLOT_HINT) from None
    matplotlib.use("Agg", force=True)  # headless: no display needed, none opened
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False, dpi=100)
    try:
        for ax, (metric, lines) in zip(axes[0], panels, strict=True):
            for curve in lines:
                # markers where points are few: a curve of one evaluation is a point, not an invisible line
                marker = "o" if len(curve.x) <= 30 else None
                (line,) = ax.plot(curve.x, curve.y, label=curve.label, linewidth=1.6, marker=marker, markersize=3)
                if curve.low is not None and curve.high is not None:
                    ax.fill_between(curve.x, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
            ax.set_title(metric)
            ax.grid(True, alpha=0.3)
            if lines:
                ax.legend(fontsize="small")
            else:
                ax.text(0.5, 0.5, f"no {metric} recorded", transform=ax.transAxes, ha="center", va="center")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


# -- text --------------------------------------------------------------------------------------------------------------

MARKERS = "•×+o#*"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def text_plot(metric: str, lines: list[Curve], *, width: int = 80, height: int = 14, x_label: str = "env steps") -> str:
    """A plot of ``lines`` in text: one marker per curve (the legend says which), ``░`` for a group's band."""
    if not lines:
        return f"{metric}: no values recorded"
    plot_w = max(width - 12, 20)
    xs = np.concatenate([c.x for c in lines])
    ys = np.concatenate([c.y for c in lines] + [c.low for c in lines if c.low is not None] +
                        [c.high for c in lines if c.high is not None])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    if y1 == y0:
        y0, y1 = y0 - 1.0, y1 + 1.0
    if x1 == x0:
        x1 = x0 + 1.0
    grid = [[" "] * plot_w for _ in range(height)]

    def row(y: float) -> int:
        return height - 1 - round((y - y0) / (y1 - y0) * (height - 1))

    columns = np.linspace(x0, x1, plot_w)
    for index, curve in enumerate(lines):
        inside = (columns >= curve.x[0]) & (columns <= curve.x[-1])
        if curve.low is not None and curve.high is not None:
            lows, highs = np.interp(columns, curve.x, curve.low), np.interp(columns, curve.x, curve.high)
            for col in np.flatnonzero(inside):
                for r in range(row(highs[col]), row(lows[col]) + 1):
                    if grid[r][col] == " ":
                        grid[r][col] = "░"
        values = np.interp(columns, curve.x, curve.y)
        for col in np.flatnonzero(inside):
            grid[row(values[col])][col] = MARKERS[index % len(MARKERS)]
        if len(curve.x) == 1:  # a single point: at its column
            col = round((curve.x[0] - x0) / (x1 - x0) * (plot_w - 1))
            grid[row(curve.y[0])][col] = MARKERS[index % len(MARKERS)]
    out = [metric]
    for r, cells in enumerate(grid):
        label = _fmt(y1) if r == 0 else _fmt(y0) if r == height - 1 else ""
        out.append(f"{label:>10} ┤{''.join(cells)}")
    out.append(" " * 11 + "└" + "─" * plot_w)
    left, right = _fmt(x0), _fmt(x1)
    out.append(" " * 12 + left + right.rjust(plot_w - len(left)))
    out.append(" " * 12 + x_label.center(plot_w).rstrip())
    for index, curve in enumerate(lines):
        out.append(f"  {MARKERS[index % len(MARKERS)]} {curve.label}")
    return "\n".join(out)


def sparkline(values: Sequence[float], width: int = 24) -> str:
    """The last ``width`` values as block characters, lowest to highest (empty for no values)."""
    finite = [float(v) for v in values if _finite(v)][-width:]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    if hi == lo:
        return SPARK[len(SPARK) // 2] * len(finite)
    scale = (len(SPARK) - 1) / (hi - lo)
    return "".join(SPARK[round((v - lo) * scale)] for v in finite)
