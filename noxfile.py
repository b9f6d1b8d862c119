"""Sessions: ``nox -s tests`` (every test suite), ``nox -s lint`` (ruff), ``nox -s bench`` (benchmarks)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = False

PLUGINS = ["plugins/tmrl-sac", "plugins/tmrl-redq", "plugins/tmrl-tlspyo", "plugins/tmrl-trackmania"]
# Third-party test plugins: installed like any user's plugin, to test discovery through entry points.
TEST_PLUGINS = ["tests/plugins/tmrl-example", "tests/plugins/tmrl-broken", "tests/plugins/tmrl-duplicate"]
TEST_PATHS = ["tests", *(f"{p}/tests" for p in PLUGINS)]


def _install_all(session: nox.Session, *extra: str) -> None:
    # torch is pinned by constraints.txt to the CPU build that lies on this machine.
    editable = []
    # the optional sinks and plots too: their tests read back what they wrote
    for path in [".[test,wandb,tensorboard,plot]", *PLUGINS]:
        editable += ["-e", path]
    session.install("-c", "constraints.txt", *editable, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Install the five packages (editable) and the test plugins into a fresh venv; run every test suite."""
    _install_all(session, *TEST_PLUGINS)
    session.run("pytest", *TEST_PATHS, *session.posargs, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark in benchmarks/ and print their figures (long: learning curves included)."""
    _install_all(session, "stable-baselines3")
    import pathlib

    for script in sorted(pathlib.Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
