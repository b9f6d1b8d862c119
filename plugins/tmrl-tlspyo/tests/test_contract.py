"""The tlspyo transport (TLS on, real relay and network processes on 127.0.0.1) against the TransportContract."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import pytest
from tmrl_tlspyo.transport import TlspyoTransport

from tmrl_core.testing import TransportContract
from tmrl_core.transport import Transport


def send_over_tls(transport: TlspyoTransport, data: bytes) -> None:
    """Open a TLS connection to the relay (trusting its certificate), write ``data``, close."""
    context = ssl.create_default_context(cafile=str(transport.keys_dir / "certificate.pem"))
    with socket.create_connection((transport.host, transport.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=transport.hostname) as tls:
            tls.sendall(data)


class TestTlspyoTransport(TransportContract):
    @pytest.fixture
    def make_transport(self, make_tlspyo: Callable[..., TlspyoTransport]) -> Callable[..., Transport]:
        return make_tlspyo

    def send_raw(self, transport: Transport, data: bytes) -> bool:
        assert isinstance(transport, TlspyoTransport)
        send_over_tls(transport, data)
        return True
