"""The built-in ``local`` transport against the TransportContract."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from tmrl_core.settings import ServerSettings
from tmrl_core.testing import TransportContract
from tmrl_core.transport.base import Transport
from tmrl_core.transport.local import LocalTransport

_ports = itertools.count(40000 + os.getpid() % 1000)


class TestLocalTransport(TransportContract):
    @pytest.fixture
    def make_transport(self, tmrl_home: Path) -> Callable[..., Transport]:
        def make(**server_settings: object) -> Transport:
            settings = ServerSettings(**{"port": next(_ports), "password": "contract", **server_settings})
            return LocalTransport(settings, run_name="contract")

        return make

    def send_raw(self, transport: Transport, data: bytes) -> bool:
        assert isinstance(transport, LocalTransport)
        conn = Client(transport.address, transport.family)
        try:
            conn.send_bytes(data)
        finally:
            conn.close()
        return True
