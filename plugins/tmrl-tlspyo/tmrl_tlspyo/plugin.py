"""Hook implementations of tmrl-tlspyo."""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import CommandSpec, TransportSpec, hookimpl


@hookimpl
def tmrl_register_transports(register: Callable[[TransportSpec], None]) -> None:
    register(
        TransportSpec(
            name="tlspyo",
            factory="tmrl_tlspyo.transport:TlspyoTransport",
            description="Across machines over TCP with tlspyo: password, optional TLS, weights signed by the trainer.",
        )
    )


@hookimpl
def tmrl_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(
        CommandSpec(
            name="tls",
            factory="tmrl_tlspyo.cli:app",
            description="Generate and inspect TLS credentials for the tlspyo transport.",
        )
    )
