"""The Server: the rendezvous point that relays sample buffers from the workers to the trainer and the trainer's
weights to every worker. It is the only part that a transport may expose to the network.

Also the small helpers that the worker, the server and the trainer share: :func:`settings_or_load`,
:func:`make_transport` and :func:`resolve_device`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("tmrl.server")

#: Keyword arguments of the original tmrl Server that have no effect here (kept so that old scripts still run).
_IGNORED_LEGACY = ("min_samples_per_server_packet", "local_port", "header_size")


def settings_or_load(settings: Any = None) -> Any:
    """``settings``, or the effective settings (config file, ``TMRL_*`` variables) when it is None."""
    if settings is not None:
        return settings
    from tmrl_core.settings import load_settings

    return load_settings()


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def make_transport(
    settings: Any,
    *,
    server_ip: str | None = None,
    server_port: int | None = None,
    password: str | None = None,
    security: str | None = None,
    transport: str | None = None,
    **server_overrides: Any,
) -> Any:
    """Build the transport named by ``transport`` (default ``server.transport``), with the ``server`` section
    updated by the legacy arguments (``security="TLS"`` turns ``server.tls`` on)."""
    from tmrl_core.plugins import get_component
    from tmrl_core.settings import ServerSettings

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
    return spec.load()(server_settings, run_name=settings.run.name)


class Server:
    """Relays buffers from any number of workers to the trainer, and weights from the trainer to every worker.

    It starts listening at once (as in the original tmrl) and relays in background threads; use it as a context
    manager, or call :meth:`stop`. :meth:`run` blocks until Ctrl-C (``tmrl server``).

    Args:
        port, password, security: override ``server.port``, ``server.password``; ``security="TLS"`` sets
            ``server.tls``.
        max_workers: override ``server.max_workers``.
        keys_dir: override ``server.tls_credentials_directory``.
        settings: the settings (default :func:`~tmrl_core.settings.load_settings`).
        transport: a ready :class:`~tmrl_core.transport.Transport`, or a transport name.
    """

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        security: str | None = None,
        max_workers: int | None = None,
        keys_dir: str | None = None,
        *,
        settings: Any = None,
        transport: Any = None,
        **legacy: Any,
    ) -> None:
        unknown = set(legacy) - set(_IGNORED_LEGACY)
        if unknown:
            raise TypeError(f"Server() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        self.settings = settings_or_load(settings)
        if transport is None or isinstance(transport, str):
            overrides: dict[str, Any] = {}
            if max_workers is not None:
                overrides["max_workers"] = max_workers
            if keys_dir is not None:
                overrides["tls_credentials_directory"] = keys_dir
            transport = make_transport(
                self.settings, server_port=port, password=password, security=security, transport=transport, **overrides
            )
        self.transport = transport
        self.endpoint = transport.server()
        self.endpoint.start()
        self._stopped = threading.Event()
        log.info("server: listening on %s", self.endpoint.address)

    @property
    def address(self) -> str:
        """Where clients reach this server."""
        return self.endpoint.address

    def run(self) -> None:
        """Block until :meth:`stop` is called or Ctrl-C, then stop."""
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            log.info("server: interrupted")
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop relaying and release the address; idempotent."""
        self._stopped.set()
        self.endpoint.stop()

    close = stop

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
