"""Fixtures of the tlspyo transport's tests: credentials generated once, free ports on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tmrl_tlspyo.credentials import generate
from tmrl_tlspyo.testing import TmrlProcess, server_settings
from tmrl_tlspyo.transport import TlspyoTransport


@pytest.fixture(scope="session")
def credentials_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TLS and signing credentials, as `tmrl tls generate` writes them."""
    directory = tmp_path_factory.mktemp("tls")
    generate(directory)
    return directory


@pytest.fixture
def make_tlspyo(tmrl_home: Path, credentials_dir: Path) -> Callable[..., TlspyoTransport]:
    """``make(**server_settings) -> TlspyoTransport`` with TLS on, a free port and the session's credentials."""

    def make(run_name: str = "contract", **overrides: Any) -> TlspyoTransport:
        return TlspyoTransport(server_settings(credentials_dir, **overrides), run_name=run_name, handshake_timeout=5.0)

    return make


@pytest.fixture
def spawn_tmrl(tmrl_home: Path, tmp_path: Path) -> Any:
    """``spawn_tmrl(name, *args) -> TmrlProcess``; every process started is stopped (by its pid) at the end."""
    started: list[TmrlProcess] = []

    def spawn(name: str, *args: str) -> TmrlProcess:
        process = TmrlProcess(list(args), tmrl_home, tmp_path / f"{name}-{len(started)}.log")
        started.append(process)
        return process

    yield spawn
    for process in reversed(started):
        process.stop()
