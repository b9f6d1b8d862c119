"""The telemetry client against real TCP servers on 127.0.0.1: the simulated game's, and hand-written ones that
misbehave (split records, bad values, silence)."""

from __future__ import annotations

import math
import socket
import struct
import threading
import time

import pytest
from tmrl_trackmania.settings import SimSettings
from tmrl_trackmania.sim.game import SimulatedGame
from tmrl_trackmania.telemetry import (
    RECORD_FIELDS,
    RECORD_SIZE,
    TelemetryClient,
    TelemetryError,
    decode_record,
    encode_record,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OneShotServer:
    """Accepts one client and runs ``script(conn)`` on it in a thread."""

    def __init__(self, script) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()

        def run() -> None:
            conn, _ = self.listener.accept()
            try:
                script(conn)
            finally:
                self.done.wait(10)
                conn.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()


def test_record_layout_is_eleven_little_endian_floats():
    values = tuple(float(i) + 0.5 for i in range(11))
    data = encode_record(values)
    assert RECORD_SIZE == 44 == len(data)
    assert struct.unpack("<11f", data) == values
    assert decode_record(data) == values
    assert RECORD_FIELDS[0] == "speed" and RECORD_FIELDS[8] == "finished" and RECORD_FIELDS[-1] == "rpm"
    with pytest.raises(ValueError):
        encode_record(values[:10])


def test_client_reads_the_simulated_games_records():
    with SimulatedGame(SimSettings()) as game, TelemetryClient("127.0.0.1", game.port, timeout=10) as client:
        game.set_controls(1.0, 0.0, 0.0)
        first = client.latest()
        later = client.wait_next(first.seq + 20)
        assert later.seq > first.seq + 20
        assert later.distance > first.distance  # the car drives
        assert later.speed > 0 and later.gas == 1.0 and later.brake == 0.0 and later.finished == 0.0
        assert later.y == pytest.approx(game.track.height)
        assert later.gear >= 1 and later.rpm > 0


def test_records_split_across_packets_and_bad_values_are_handled():
    good = [encode_record([float(k)] * 11) for k in range(1, 4)]
    nan = encode_record([math.nan] * 11)

    def script(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = good[0] + good[1] + nan + good[2]
        for i in range(0, len(stream), 7):  # 7-byte pieces: records split anywhere
            conn.sendall(stream[i : i + 7])
            time.sleep(0.002)

    server = OneShotServer(script)
    try:
        with TelemetryClient("127.0.0.1", server.port, timeout=10) as client:
            deadline = time.monotonic() + 10
            while client.latest().speed != 3.0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.latest().values() == tuple([3.0] * 11)
            assert client.bad_records == 1  # the NaN record was dropped, the connection kept
            assert client.connections == 1
    finally:
        server.close()


def test_client_reconnects_after_the_game_restarts():
    game = SimulatedGame(SimSettings()).start()
    try:
        with TelemetryClient("127.0.0.1", game.port, timeout=10) as client:
            game.set_controls(1.0, 0.0, 0.0)
            before = client.wait_next(client.latest().seq + 30)
            assert before.distance > 0.5
            game.restart(downtime=0.3)  # closes every socket, listens again on the same port, car at the start
            deadline = time.monotonic() + 10
            while client.connections < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.connections == 2
            game.set_controls(0.0, 0.0, 0.0)
            after = client.wait_next()
            assert after.seq > before.seq
            assert after.distance < before.distance  # records of the restarted game
    finally:
        game.stop()


def test_nothing_listening_gives_an_actionable_error():
    port = _free_port()
    with TelemetryClient("127.0.0.1", port, timeout=0.5) as client:
        with pytest.raises(TelemetryError) as info:
            client.latest()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "is the game running" in message.lower()
    assert "openplanet" in message.lower() and "telemetry_port" in message


def test_silent_server_and_lost_game_are_told_apart():
    server = OneShotServer(lambda conn: None)  # accepts, then sends nothing
    try:
        with TelemetryClient("127.0.0.1", server.port, timeout=0.5) as client:
            with pytest.raises(TelemetryError, match="no record arrived") as info:
                client.latest()
            assert "map loaded" in info.value.hint
    finally:
        server.close()

    game = SimulatedGame(SimSettings()).start()
    with TelemetryClient("127.0.0.1", game.port, timeout=0.5) as client:
        client.latest(timeout=10)
        game.stop()
        time.sleep(0.3)
        with pytest.raises(TelemetryError, match="lost the telemetry connection"):
            client.wait_next()
