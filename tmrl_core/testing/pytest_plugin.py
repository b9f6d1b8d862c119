"""pytest plugin shipped with tmrl-core (entry point ``pytest11``): fixtures for tmrl and its plugins.

Loaded by every pytest run in an environment where tmrl-core is installed, so it imports nothing heavy at import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tmrl_core.plugins import PluginManager


def pytest_configure(config: pytest.Config) -> None:
    # the contracts mark their long checks (learning) as slow; a plugin's suite need not declare the marker itself
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture
def tmrl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty data folder (``TMRL_HOME``) for one test; no ``TMRL_*`` setting leaks in from outside."""
    for key in list(os.environ):
        if key.startswith("TMRL_"):
            monkeypatch.delenv(key)
    home = tmp_path / "TmrlData"
    monkeypatch.setenv("TMRL_HOME", str(home))
    from tmrl_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    yield home
    reset_plugin_manager()


@pytest.fixture
def plugin_manager() -> Iterator[Callable[..., PluginManager]]:
    """A factory of isolated plugin managers: ``plugin_manager(*plugins, entry_points=False, builtins=True,
    install=True)``.

    ``plugins`` are modules, classes or instances with ``@hookimpl`` functions, or ``(name, obj)`` pairs. With
    ``install=True`` the manager also becomes the process-wide one (``get_component``, ``load_settings``) until the
    test ends.

    Example::

        class MyPlugin:
            @hookimpl
            def tmrl_register_envs(self, register):
                register(EnvSpec(name="mine", factory="my_pkg.env:make"))

        def test_mine(plugin_manager):
            manager = plugin_manager(MyPlugin())
            assert manager.get("env", "mine").plugin == "MyPlugin"
    """
    from tmrl_core.plugins import PluginManager, set_plugin_manager

    installed = False
    previous: PluginManager | None = None

    def make(*plugins: Any, entry_points: bool = False, builtins: bool = True, install: bool = True) -> PluginManager:
        nonlocal installed, previous
        manager = PluginManager(entry_points=entry_points, plugins=plugins, builtins=builtins)
        if install:
            old = set_plugin_manager(manager)
            if not installed:
                previous, installed = old, True
        return manager

    yield make
    if installed:
        set_plugin_manager(previous)


@dataclass
class TmrlResult:
    """What a ``tmrl`` subprocess did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ tmrl {' '.join(self.args)}\n[exit status {self.returncode}]\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def tmrl_command() -> list[str]:
    """How to start ``tmrl`` with this interpreter: the console script beside it, else ``python -m tmrl_core``."""
    script = shutil.which("tmrl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "tmrl_core"]


@pytest.fixture
def run_tmrl(tmrl_home: Path) -> Callable[..., TmrlResult]:
    """Run ``tmrl ARGS...`` as a subprocess in the test's data folder: ``run_tmrl("plugins", "--json")``.

    Keyword arguments: ``env`` (extra environment variables, e.g. ``{"TMRL_TRAINING__BATCH_SIZE": "64"}``),
    ``timeout`` (seconds, default 120), ``input`` (text for stdin), ``cwd``, ``only_plugins`` (entry-point or
    distribution names: the installed plugins that load besides the core, e.g. ``("my-plugin", "sac")``, so that
    another broken plugin in the same environment cannot disturb the test). ``TMRL_*`` variables of the calling
    environment do not leak in; the output is plain text, 200 columns wide.
    """

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        input: str | None = None,
        cwd: str | Path | None = None,
        only_plugins: Sequence[str] | None = None,
    ) -> TmrlResult:
        full_env = {key: value for key, value in os.environ.items() if not key.startswith("TMRL_")}
        full_env.update({"TMRL_HOME": str(tmrl_home), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
        if only_plugins is not None:
            from tmrl_core.plugins import ONLY_ENV

            full_env[ONLY_ENV] = ",".join(only_plugins)
        full_env.update(env or {})
        proc = subprocess.run(
            [*tmrl_command(), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            cwd=cwd,
        )
        return TmrlResult(list(args), proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch limited to one intra-op thread for one test: on a small shared machine, small tensors and a worker
    thread beside the trainer only fight over the cores with more."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
