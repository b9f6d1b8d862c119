"""Sessions: ``nox -s tests`` (the Win32 type-check, then every test suite), ``nox -s typecheck_win32`` (that check
alone), ``nox -s wheels`` (the five distributions built, checked and installed from wheels into a fresh venv),
``nox -s scaffold`` (a generated plugin in a fresh venv), ``nox -s lint`` (ruff), ``nox -s bench`` (benchmarks).

CI runs ``nox -s tests wheels scaffold``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "wheels", "scaffold"]
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


# The TrackMania plugin's Win32 layer and the code that calls it. No Windows machine runs CI: mypy with the platform
# set to win32 checks them as Windows would import them, so a misspelt ctypes/wintypes name or a wrong call fails.
WIN32_CHECKED = [
    "plugins/tmrl-trackmania/tmrl_trackmania/win32.py",
    "plugins/tmrl-trackmania/tmrl_trackmania/capture.py",
    "plugins/tmrl-trackmania/tmrl_trackmania/control.py",
]


def _typecheck_win32(session: nox.Session) -> None:
    session.run(
        "mypy", "--platform", "win32", "--python-version", "3.10", "--ignore-missing-imports",
        "--follow-imports=silent", "--no-incremental", *WIN32_CHECKED,
        env={"MYPYPATH": "plugins/tmrl-trackmania"},
    )


@nox.session
def typecheck_win32(session: nox.Session) -> None:
    """mypy --platform win32 on the TrackMania plugin's Win32 layer (capture, keyboard) and its callers."""
    session.install("mypy", "numpy")
    _typecheck_win32(session)


@nox.session
def tests(session: nox.Session) -> None:
    """Install the five packages (editable) and the test plugins into a fresh venv; type-check the Win32 layer; run
    every test suite."""
    _install_all(session, *TEST_PLUGINS, "mypy")
    _typecheck_win32(session)
    session.run("pytest", *TEST_PATHS, *session.posargs, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})


@nox.session
def wheels(session: nox.Session) -> None:
    """Build the five wheels and sdists, ``twine check`` them, install them (not editable) into a fresh venv the way a
    user does, and use them there (tests/test_wheels.py; several minutes: it installs torch and the rest afresh)."""
    session.install("pytest>=8", "pytest-timeout>=2.3", "build>=1.2", "twine>=5", "hatchling>=1.24")
    session.run(
        "pytest", "tests/test_wheels.py", "-p", "no:cacheprovider", "--timeout=1800", "-s", *session.posargs,
        env={"TMRL_TEST_WHEELS": "1"},
    )  # fmt: skip


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


@nox.session
def scaffold(session: nox.Session) -> None:
    """A third-party author's journey in a fresh venv: tmrl-core alone (and the pinned torch), `tmrl plugin new` of
    every kind, `pip install -e` of the result, its generated tests, and a short `tmrl run` with its env and agent."""
    import pathlib
    import tempfile

    session.install("-c", "constraints.txt", "-e", ".[test]", "torch==2.13.0")
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        flags = ["--env", "--agent", "--memory", "--transport", "--command"]
        session.run("tmrl", "plugin", "new", "journey", *flags, "--dir", str(work))
        package = work / "tmrl-journey"
        session.install("-c", "constraints.txt", "-e", str(package))
        session.run("tmrl", "plugins")
        session.run("pytest", "-q", "-p", "no:cacheprovider", str(package / "tests"))
        session.run(
            "tmrl", "run", "--env", "journey-env", "--algo", "journey-agent", "--env-steps", "300",
            "--set", "journey_agent.hidden_sizes=[16,16]", "--set", "training.start_training=100",
            env={"TMRL_HOME": str(work / "home")},
        )  # fmt: skip
