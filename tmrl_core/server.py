"""The Server: the rendezvous point that relays sample buffers from the workers to the trainer and the trainer's
weights to every worker. It is the only part that a transport may expose to the network.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tmrl_core.settings import Settings, settings_or_load
from tmrl_core.transport.base import Transport
from tmrl_core.transport.factory import make_transport

log = logging.getLogger("tmrl.server")

#: Keyword arguments of the original tmrl Server that have no effect here (kept so that old scripts still run).
_IGNORED_LEGACY = ("min_samples_per_server_packet", "local_port", "header_size")


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
        settings: Settings | None = None,
        transport: Transport | str | None = None,
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
