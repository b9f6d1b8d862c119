"""pytest plugin shipped with tmrl-core (entry point ``pytest11``): fixtures for tmrl and its plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture
def tmrl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty data folder (``TMRL_HOME``) for one test; no ``TMRL_*`` setting leaks in from outside."""
    import os

    for key in list(os.environ):
        if key.startswith("TMRL_"):
            monkeypatch.delenv(key)
    home = tmp_path / "TmrlData"
    monkeypatch.setenv("TMRL_HOME", str(home))
    from tmrl_core.plugins import reset_plugin_manager

    reset_plugin_manager()
    yield home
    reset_plugin_manager()
