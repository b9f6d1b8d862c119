"""Building the transport named in the settings (``server.transport``), for the worker, the server and the trainer."""

from __future__ import annotations

from typing import Any

from tmrl_core.plugins import get_component
from tmrl_core.settings import ServerSettings, Settings
from tmrl_core.transport.base import Transport


def make_transport(
    settings: Settings,
    *,
    server_ip: str | None = None,
    server_port: int | None = None,
    password: str | None = None,
    security: str | None = None,
    transport: str | None = None,
    **server_overrides: Any,
) -> Transport:
    """Build the transport named by ``transport`` (default ``server.transport``), with the ``server`` section
    updated by the legacy arguments (``security="TLS"`` turns ``server.tls`` on)."""
    updates: dict[str, Any] = dict(server_overrides)
    if server_ip is not None:
        updates["host"] = server_ip
    if server_port is not None:
        updates["port"] = int(server_port)
    if password is not None:
        updates["password"] = password
    if security is not None:
        updates["tls"] = str(security).upper() == "TLS"
    server_settings = settings.server
    if updates:
        server_settings = ServerSettings.model_validate({**server_settings.model_dump(), **updates})
    spec = get_component("transport", transport or server_settings.transport)
    transport_cls = spec.load()
    return transport_cls(server_settings, run_name=settings.run.name)
