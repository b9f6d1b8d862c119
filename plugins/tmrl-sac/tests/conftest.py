"""Fixtures of this plugin's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every test here on one torch thread (the fixture comes with tmrl-core's pytest plugin)."""
