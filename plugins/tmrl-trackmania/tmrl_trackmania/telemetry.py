"""Telemetry from the game: a client for the TMRL OpenPlanet plugin (or the simulated game's identical server).

Wire format (version 1): the plugin listens on TCP ``127.0.0.1:<port>`` (9000 by default); once a client connects it
sends one fixed-size record per game frame, back to back, with no header. A record is 11 little-endian float32
values (44 bytes), in this order:

====  ==========  =========================================================
 #    field       meaning
====  ==========  =========================================================
 0    speed       speed of the car in km/h
 1    distance    distance driven since the start of the race, in m
 2    x           position (the game's y axis points up), in m
 3    y
 4    z
 5    steer       steering input, -1 (left) to 1 (right)
 6    gas         gas input, 0 to 1
 7    brake       1.0 while braking, else 0.0
 8    finished    1.0 once the finish line is crossed, else 0.0
 9    gear        current gear
 10   rpm         engine revolutions per minute
====  ==========  =========================================================

Each connection starts on a record boundary, so the client realigns itself by reconnecting. The client keeps only
the newest record: an agent acting in real time wants the present, not a queue of the past.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tmrl_core.errors import TmrlError

log = logging.getLogger(__name__)

RECORD_FIELDS: tuple[str, ...] = (
    "speed",
    "distance",
    "x",
    "y",
    "z",
    "steer",
    "gas",
    "brake",
    "finished",
    "gear",
    "rpm",
)
RECORD_STRUCT = struct.Struct("<" + "f" * len(RECORD_FIELDS))
#: Bytes per record on the wire.
RECORD_SIZE = RECORD_STRUCT.size


class TelemetryError(TmrlError):
    """No usable telemetry: the game is not running, the plugin is not loaded, or the port is wrong."""


@dataclass(frozen=True)
class TelemetryRecord:
    """One decoded record, plus when it arrived (``time.perf_counter()``) and its arrival number."""

    speed: float
    distance: float
    x: float
    y: float
    z: float
    steer: float
    gas: float
    brake: float
    finished: float
    gear: float
    rpm: float
    received_at: float = field(default=0.0, compare=False)
    seq: int = field(default=0, compare=False)

    @property
    def position(self) -> np.ndarray:
        """``(x, y, z)`` as float32."""
        return np.array((self.x, self.y, self.z), dtype=np.float32)

    @property
    def is_finished(self) -> bool:
        return self.finished >= 0.5

    def values(self) -> tuple[float, ...]:
        """The 11 wire values in wire order."""
        return tuple(getattr(self, name) for name in RECORD_FIELDS)


def encode_record(values: Sequence[float]) -> bytes:
    """The wire bytes of one record (``values`` in :data:`RECORD_FIELDS` order)."""
    if len(values) != len(RECORD_FIELDS):
        raise ValueError(f"a telemetry record has {len(RECORD_FIELDS)} values, got {len(values)}")
    return RECORD_STRUCT.pack(*(float(v) for v in values))


def decode_record(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[float, ...]:
    """The 11 values of the record starting at ``offset``."""
    return RECORD_STRUCT.unpack_from(data, offset)


class TelemetryClient:
    """Connects to the telemetry server, keeps the newest record, and reconnects when the game restarts.

    A background thread does the networking; :meth:`latest` and :meth:`wait_next` read what it received.

    Args:
        host, port: where the plugin (or the simulator) listens.
        timeout: default seconds :meth:`latest` and :meth:`wait_next` wait before raising :class:`TelemetryError`.
        retry_interval: seconds between connection attempts while nothing listens.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9000, *, timeout: float = 10.0, retry_interval: float = 0.1
    ):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._cond = threading.Condition()
        self._latest: TelemetryRecord | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        #: connections established so far (more than one: the client reconnected)
        self.connections = 0
        #: records dropped because a value was not finite
        self.bad_records = 0
        self._connected = False
        self._last_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> TelemetryClient:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"tmrl-telemetry-{self.port}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> TelemetryClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected

    # -- reading --------------------------------------------------------------------------------------------------
    def latest(self, timeout: float | None = None, *, max_age: float | None = None) -> TelemetryRecord:
        """The newest record, waiting up to ``timeout`` s for a first one (or for one younger than ``max_age`` s)."""
        deadline = time.perf_counter() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while True:
                rec = self._latest
                now = time.perf_counter()
                if rec is not None and (max_age is None or now - rec.received_at <= max_age):
                    return rec
                if now >= deadline:
                    raise self._timeout_error(self.timeout if timeout is None else timeout, stale=rec is not None)
                self._cond.wait(deadline - now)

    def wait_next(self, after: int | None = None, timeout: float | None = None) -> TelemetryRecord:
        """The first record whose ``seq`` is greater than ``after`` (default: the newest one now)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.perf_counter() + limit
        with self._cond:
            threshold = self._seq if after is None else after
            while self._seq <= threshold or self._latest is None:
                now = time.perf_counter()
                if now >= deadline:
                    raise self._timeout_error(limit, stale=self._latest is not None)
                self._cond.wait(deadline - now)
            return self._latest

    @property
    def seq(self) -> int:
        """Number of records received so far."""
        return self._seq

    def _timeout_error(self, waited: float, *, stale: bool) -> TelemetryError:
        where = f"{self.host}:{self.port}"
        if not self._connected and self.connections == 0:
            return TelemetryError(
                f"no telemetry from TrackMania: nothing accepted a connection on {where} within {waited:g} s"
                + (f" ({self._last_error})" if self._last_error else ""),
                hint="is the game running? Is the TMRL OpenPlanet plugin installed (`tmrl trackmania install-plugin`) "
                "and loaded (OpenPlanet menu > Developer > Load plugin > TMRL)? Does trackmania.telemetry_port match "
                "the plugin's port (9000 unless you changed it in the plugin's settings)?",
            )
        if not self._connected:
            return TelemetryError(
                f"lost the telemetry connection to {where} and could not reconnect within {waited:g} s",
                hint="did the game close or crash? Restart it; the client reconnects by itself once the TMRL "
                "OpenPlanet plugin listens again.",
            )
        return TelemetryError(
            f"connected to the telemetry server on {where}, but no {'new ' if stale else ''}record arrived "
            f"within {waited:g} s",
            hint="is a map loaded with the car on the track? The plugin only sends while you are driving. Is the "
            "game paused or minimised?",
        )

    # -- the background thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
            except OSError as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(self.retry_interval)
                continue
            self._sock = sock
            self.connections += 1
            self._connected = True
            log.debug("telemetry connected to %s:%s", self.host, self.port)
            try:
                self._receive(sock)
            finally:
                self._connected = False
                self._sock = None
                try:
                    sock.close()
                except OSError:
                    pass
                with self._cond:
                    self._cond.notify_all()
            if not self._stop.is_set():
                log.info("telemetry connection to %s:%s closed; reconnecting", self.host, self.port)

    def _receive(self, sock: socket.socket) -> None:
        sock.settimeout(0.5)
        pending = bytearray()
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                return
            if not chunk:  # the game closed the connection
                return
            pending += chunk
            complete = len(pending) // RECORD_SIZE
            if complete == 0:
                continue
            values = decode_record(pending, (complete - 1) * RECORD_SIZE)
            del pending[: complete * RECORD_SIZE]
            if not all(math.isfinite(v) for v in values):
                self.bad_records += 1
                continue
            now = time.perf_counter()
            with self._cond:
                self._seq += 1
                self._latest = TelemetryRecord(*values, received_at=now, seq=self._seq)
                self._cond.notify_all()
