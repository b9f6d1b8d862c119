"""Fixtures of the tlspyo transport's tests: credentials generated once, free ports on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tmrl_tlspyo.credentials import generate
from tmrl_tlspyo.transport import TlspyoTransport

from tmrl_core.settings import ServerSettings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def credentials_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TLS and signing credentials, as `tmrl tls generate` writes them."""
    directory = tmp_path_factory.mktemp("tls")
    generate(directory)
    return directory


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_settings(credentials_dir: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "transport": "tlspyo",
        "host": "127.0.0.1",
        "bind": "127.0.0.1",
        "port": free_port(),
        "password": PASSWORD,
        "tls": True,
        "tls_credentials_directory": credentials_dir,
    }
    values.update(overrides)
    return ServerSettings(**values)


@pytest.fixture
def make_tlspyo(tmrl_home: Path, credentials_dir: Path) -> Callable[..., TlspyoTransport]:
    """``make(**server_settings) -> TlspyoTransport`` with TLS on, a free port and the session's credentials."""

    def make(run_name: str = "contract", **overrides: Any) -> TlspyoTransport:
        return TlspyoTransport(server_settings(credentials_dir, **overrides), run_name=run_name, handshake_timeout=5.0)

    return make
