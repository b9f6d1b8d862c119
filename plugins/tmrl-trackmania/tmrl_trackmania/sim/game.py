"""The simulated game: a car on a track, run in real time by a background thread, with an OpenPlanet-style telemetry
server on 127.0.0.1, a "screen" (:meth:`SimulatedGame.render`) and a "pad" (:meth:`SimulatedGame.set_controls`,
:meth:`SimulatedGame.press`).

The telemetry server speaks exactly the wire format of the TMRL OpenPlanet plugin (see
:mod:`tmrl_trackmania.telemetry`): it listens, accepts clients, and sends each of them one 44-byte record per physics
tick. :meth:`SimulatedGame.restart` closes every socket and listens again on the same port, as when the real game is
restarted, so that reconnection can be tested.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time

import numpy as np

from tmrl_trackmania.settings import SimSettings
from tmrl_trackmania.sim.car import Autopilot, Car
from tmrl_trackmania.sim.track import Track, build_track, rasterize
from tmrl_trackmania.telemetry import encode_record

log = logging.getLogger(__name__)

#: physics sub-step, in simulated seconds
PHYSICS_DT = 0.01
CAR_COLOUR = (230, 200, 60)  # BGR light blue, well above the LIDAR's black threshold


class TelemetryServer:
    """The OpenPlanet plugin's side of the telemetry link: listen on ``host:port``, stream records to clients."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        self._listener: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None
        self._closing = threading.Event()
        #: clients accepted so far
        self.accepted = 0

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # the port must be reusable at once after a restart, like the game's
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(4)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._closing.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="tmrl-sim-accept", daemon=True)
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._closing.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # a client that stops reading is dropped rather than allowed to stall the game
            client.settimeout(0.5)
            with self._lock:
                self._clients.append(client)
                self.accepted += 1

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def publish(self, record: bytes) -> None:
        with self._lock:
            clients = list(self._clients)
        dead = []
        for client in clients:
            try:
                client.sendall(record)
            except OSError:
                dead.append(client)
        if dead:
            with self._lock:
                for client in dead:
                    if client in self._clients:
                        self._clients.remove(client)
                    _close(client)

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            _close(self._listener)
            self._listener = None
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=2.0)
            self._accept_thread = None
        with self._lock:
            for client in self._clients:
                _close(client)
            self._clients.clear()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class SimulatedGame:
    """A running simulated TrackMania.

    Args:
        settings: the simulator's settings (track, speed of time, physics rate, countdown, autopilot).
        host, port: where the telemetry server listens (port 0: a free port, see :attr:`port`).
    """

    def __init__(self, settings: SimSettings | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings or SimSettings()
        self.track: Track = build_track(self.settings.track)
        self.raster = rasterize(self.track)
        self.car = Car(self.track, countdown=self.settings.countdown)
        autopilot = self.settings.autopilot
        self.autopilot = Autopilot(self.car, top_speed=self.settings.autopilot_speed) if autopilot else None
        self.server = TelemetryServer(host, port)
        self._lock = threading.Lock()
        self._controls = (0.0, 0.0, 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: physics ticks run so far
        self.ticks = 0
        #: respawns so far (pad button or :meth:`respawn`)
        self.respawns = 0

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> SimulatedGame:
        if self._thread is None:
            self.server.open()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tmrl-sim-game", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Quit the game: the physics stop and every telemetry connection closes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.server.close()

    def restart(self, downtime: float = 0.0) -> None:
        """Close the game and start it again on the same port (the car back at the start)."""
        self.stop()
        if downtime:
            time.sleep(downtime)
        with self._lock:
            self.car.respawn()
        self.start()

    def __enter__(self) -> SimulatedGame:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the pad ------------------------------------------------------------------------------------------------
    def set_controls(self, gas: float, brake: float, steer: float) -> None:
        """Analog inputs: gas and brake triggers in [0, 1], steering stick in [-1, 1] (right positive)."""
        with self._lock:
            self._controls = (float(gas), float(brake), float(steer))

    def press(self, button: str) -> None:
        """A pad button: ``"respawn"`` (B: back to the start) or ``"close_finish"`` (A: dismiss the finish screen)."""
        if button == "respawn":
            self.respawn()
        elif button == "close_finish":
            pass  # nothing pops up in the simulator
        else:
            raise ValueError(f"unknown button {button!r}")

    def respawn(self) -> None:
        with self._lock:
            self.car.respawn()
            self.respawns += 1

    def teleport(self, x: float, z: float, heading: float, velocity: float = 0.0) -> None:
        """Put the car somewhere (tests): position on the ground, heading in radians, velocity in m/s."""
        with self._lock:
            st = self.car.state
            st.x, st.z, st.heading, st.velocity = float(x), float(z), float(heading), float(velocity)
            st.track_index, _ = self.track.nearest(np.array([st.x, st.z]))

    # -- what the game shows --------------------------------------------------------------------------------------
    def snapshot(self) -> tuple[float, ...]:
        """The telemetry values of the current state, in wire order."""
        with self._lock:
            return self._record_values()

    def _record_values(self) -> tuple[float, ...]:
        st = self.car.state
        return (
            st.speed_kmh,
            st.distance,
            st.x,
            self.track.height,
            st.z,
            st.steer,
            st.gas,
            1.0 if st.brake > 0.0 else 0.0,
            1.0 if st.finished else 0.0,
            float(st.gear),
            st.rpm,
        )

    def render(self, width: int, height: int) -> np.ndarray:
        """What the game window shows: a top-down view that follows the car, as a ``(height, width, 4)`` BGRA frame
        (the layout screen grabbers return). The car sits at the bottom centre, facing up."""
        import cv2

        with self._lock:
            st = self.car.state
            x, z, theta = st.x, st.z, st.heading
        ppm_view = width / self.settings.view_width_m
        r = self.raster
        fx, fz = math.cos(theta), math.sin(theta)
        rx, rz = math.sin(theta), -math.cos(theta)
        car_row = height - 1
        # view pixel (u, v) -> world: car + forward * (car_row - v) / ppm + right * (u - width / 2) / ppm
        # world -> raster: ((x - x0) * ppm, (z1 - z) * ppm); the composition is affine in (u, v)
        k = r.pixels_per_m / ppm_view
        m = np.array(
            [
                [rx * k, -fx * k, (x - r.x0) * r.pixels_per_m + k * (fx * car_row - rx * width / 2)],
                [-rz * k, fz * k, (r.z1 - z) * r.pixels_per_m - k * (fz * car_row - rz * width / 2)],
            ]
        )
        view = cv2.warpAffine(
            r.image, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=(0, 0, 0)
        )
        # the car: 2 m x 4 m, so the LIDAR origin lies on the car, never on a wall
        half_w = max(1, int(round(1.0 * ppm_view)))
        length = max(2, int(round(4.0 * ppm_view)))
        cx = width // 2
        cv2.rectangle(view, (cx - half_w, height - length), (cx + half_w, height - 1), CAR_COLOUR, -1)
        return cv2.cvtColor(view, cv2.COLOR_BGR2BGRA)

    # -- the game loop ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        period = 1.0 / self.settings.physics_hz
        scale = self.settings.time_scale
        last = time.perf_counter()
        next_tick = last
        while not self._stop.is_set():
            now = time.perf_counter()
            # a stalled thread (a loaded machine) catches up at most 0.1 s of game time
            elapsed = min(now - last, 0.1) * scale
            last = now
            with self._lock:
                if self.autopilot is not None:
                    self.car.set_inputs(*self.autopilot.inputs())
                else:
                    gas, brake, steer = self._controls
                    self.car.set_inputs(gas, brake, steer)
                steps = max(1, int(round(elapsed / PHYSICS_DT)))
                for _ in range(steps):
                    self.car.step(elapsed / steps)
                record = encode_record(self._record_values())
                self.ticks += 1
            self.server.publish(record)
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_tick = time.perf_counter()
