"""What a client holding bad credentials, or the password but bad intentions, can do to a tlspyo server: nothing.

The server runs as a real `tmrl server` process (TLS on, 127.0.0.1) so its log can be read; trainers and workers are
transport clients in this process (each with its own tlspyo network process).
"""

from __future__ import annotations

import pickle
import re
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from tmrl_tlspyo.credentials import WeightsSigner, generate
from tmrl_tlspyo.endpoint import TmrlEndpoint
from tmrl_tlspyo.relay import HEADER_SIZE
from tmrl_tlspyo.testing import PASSWORD, TmrlProcess, server_args, server_settings
from tmrl_tlspyo.transport import TlspyoTrainer, TlspyoTransport, TlspyoWorker, _signed_bytes

from tmrl_core import codec
from tmrl_core.errors import CodecError, TransportError
from tmrl_core.testing import make_buffer, make_weights, wait_for, weights_version

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, credentials_dir: Path) -> Any:
    """A `tmrl server` process shared by the tests of this module (each closes its clients), and its settings."""
    home = tmp_path_factory.mktemp("home")
    settings = server_settings(credentials_dir, max_message_bytes=1 << 20)
    server = TmrlProcess(["server", "-v", *server_args(settings)], home, home / "server.log")
    try:
        server.wait_for("listening on")
        yield {"settings": settings, "server": server, "transport": TlspyoTransport(settings, run_name="sec")}
    finally:
        server.stop()


@pytest.fixture
def clients() -> Any:
    opened: list[Any] = []
    yield opened
    for client in reversed(opened):
        client.close(timeout=1.0)


def connect(transport: TlspyoTransport, clients: list, *workers: str) -> tuple[TlspyoTrainer, list[TlspyoWorker]]:
    trainer = transport.trainer()
    clients.append(trainer)
    connected = []
    for name in workers:
        worker = transport.worker(name)
        clients.append(worker)
        connected.append(worker)
    for client in (trainer, *connected):
        assert client.wait_connected(TIMEOUT), f"{client.role} did not connect"
    return trainer, connected


def send_weights_until(trainer: TlspyoTrainer, workers: list[TlspyoWorker], version: int) -> None:
    """Send weights ``version``; every worker gets them (after, maybe, the relay's previous newest ones: tests use
    versions of their own, since they share one server)."""
    trainer.send_weights(make_weights(version))
    for worker in workers:

        def arrived(worker: TlspyoWorker = worker) -> bool:
            weights = worker.receive_weights(blocking=True, timeout=1.0)
            return weights is not None and weights_version(weights) == version

        wait_for(arrived, TIMEOUT, f"weights version {version} at {worker.name}")


def collect(trainer: TlspyoTrainer, count: int) -> list:
    received: list = []

    def enough() -> bool:
        received.extend(trainer.receive_samples())
        return sum(len(b) for b in received) >= count

    wait_for(enough, TIMEOUT, f"{count} samples")
    return received


def tls_connection(settings: Any) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(Path(settings.tls_credentials_directory) / "certificate.pem"))
    raw = socket.create_connection((settings.host, settings.port), timeout=10)
    return context.wrap_socket(raw, server_hostname=settings.tls_hostname)


def frame(body: bytes, password: str = PASSWORD) -> bytes:
    """A tlspyo frame: the length header, the password, the body."""
    return f"{len(body):<{HEADER_SIZE}}{password}".encode() + body


def closed_by_server(connection: ssl.SSLSocket, timeout: float = 20.0) -> bool:
    """Whether the server closes ``connection`` within ``timeout`` seconds (reading until EOF or a reset)."""
    connection.settimeout(timeout)
    try:
        while connection.recv(65536):
            pass
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def rogue_endpoint(settings: Any, credentials_dir: Path, group: str) -> TmrlEndpoint:
    """A bare tlspyo endpoint with the password and certificate, sending whatever it likes."""
    return TmrlEndpoint(
        host=settings.host,
        port=settings.port,
        password=PASSWORD,
        group=group,
        security="TLS",
        keys_dir=str(credentials_dir),
        hostname=settings.tls_hostname,
        max_frame=1 << 22,
    )


def send_raw_object(endpoint: TmrlEndpoint, obj: bytes, destination: dict[str, int]) -> None:
    """Make ``endpoint`` send ``obj`` as the object bytes themselves (bypassing the codec on this side)."""
    endpoint.send_encoded(obj, destination)


class _CreatesFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


# -- authentication -----------------------------------------------------------------------------------------------


def test_a_wrong_password_delivers_nothing_and_the_log_says_why_without_it(
    setup: dict[str, Any], clients: list
) -> None:
    settings = setup["settings"]
    trainer, _ = connect(setup["transport"], clients)
    wrong = "hunter2-is-not-it"
    intruder = TlspyoTransport(settings.model_copy(update={"password": wrong}), run_name="sec").worker("intruder")
    clients.append(intruder)
    for first in range(0, 30, 10):
        intruder.send_samples(make_buffer(0, first, 10))
    assert not intruder.wait_connected(3.0)
    assert trainer.receive_samples() == []
    log = setup["server"].wait_for("wrong password")
    assert wrong not in log and PASSWORD not in log
    assert re.search(r"closing the connection from 127\.0\.0\.1:\d+: wrong password", log)  # who, not what


def test_silent_connections_are_closed_after_the_handshake_timeout(tmrl_home: Path, credentials_dir: Path) -> None:
    settings = server_settings(credentials_dir)
    server = TlspyoTransport(settings, run_name="sec", handshake_timeout=2.0).server()
    server.start()
    try:
        with tls_connection(settings) as connection:
            started = time.monotonic()
            assert closed_by_server(connection, timeout=30.0)
            assert time.monotonic() - started >= 1.5
    finally:
        server.stop()


def test_hundreds_of_idle_connections_cost_little_and_are_closed_while_honest_clients_work(
    setup: dict[str, Any], clients: list
) -> None:
    from tmrl_tlspyo.testing import tree_rss

    settings = setup["settings"]
    server_pid = setup["server"].pid
    baseline = tree_rss(server_pid)
    idle = []
    try:
        for _ in range(300):
            idle.append(tls_connection(settings))  # TLS up, then silence
        peak = tree_rss(server_pid)
        # honest clients connect and work meanwhile
        trainer, (worker,) = connect(setup["transport"], clients, "honest")
        worker.send_samples(make_buffer(0, 0, 5))
        assert sum(len(b) for b in collect(trainer, 5)) == 5
        send_weights_until(trainer, [worker], 51)
        assert peak - baseline < 100 * 1024 * 1024, f"300 idle connections took {(peak - baseline) >> 20} MiB"
        # and every idle one is closed by the server once its handshake time is up (10 s)
        assert all(closed_by_server(connection, timeout=60.0) for connection in idle)
    finally:
        for connection in idle:
            connection.close()


# -- hostile payloads ---------------------------------------------------------------------------------------------


def test_garbage_oversized_and_pickle_payloads_are_refused_and_honest_clients_keep_working(
    setup: dict[str, Any], clients: list, tmp_path: Path, credentials_dir: Path
) -> None:
    settings = setup["settings"]
    trainer, (worker,) = connect(setup["transport"], clients, "honest")
    send_weights_until(trainer, [worker], 31)
    target = tmp_path / "created-by-unpickling"
    payloads = {
        "garbage": b"\x00\xff" * 100,
        "oversized": f"{10**9:<{HEADER_SIZE}}{PASSWORD}".encode() + b"\x00" * 1024,
        "pickle": frame(pickle.dumps((1, "HELLO", None, _CreatesFile(target)))),
        "pickle in a tlspyo envelope": frame(
            codec.encode((1, "OBJ", {"trainer": 1}, pickle.dumps(_CreatesFile(target))))
        ),
    }
    for name, data in payloads.items():
        with tls_connection(settings) as connection:
            connection.sendall(data)
            assert closed_by_server(connection), f"the server kept a connection that sent {name}"
    log = setup["server"].log()
    assert "malformed frame header" in log
    assert "over the limit" in log
    assert "undecodable frame" in log
    assert "'OBJ' before hello" in log
    # a password holder gets a pickle through the relay to the trainer: it is refused there, never unpickled
    rogue = rogue_endpoint(settings, credentials_dir, "workers")
    try:
        send_raw_object(rogue, pickle.dumps(_CreatesFile(target)), {"trainer": 1})
        wait_for(lambda: trainer.rejected >= 1, TIMEOUT, "the trainer to refuse the pickle")
    finally:
        rogue.stop()
    assert not target.exists()
    # the honest ones noticed nothing
    worker.send_samples(make_buffer(0, 0, 5))
    assert sum(len(b) for b in collect(trainer, 5)) == 5
    send_weights_until(trainer, [worker], 32)
    assert trainer.rejected == 1 and worker.rejected == 0


def test_a_worker_cannot_broadcast_to_the_workers(setup: dict[str, Any], clients: list, credentials_dir: Path) -> None:
    settings = setup["settings"]
    trainer, (worker,) = connect(setup["transport"], clients, "honest")
    send_weights_until(trainer, [worker], 41)
    rogue = rogue_endpoint(settings, credentials_dir, "workers")
    try:
        rogue.send_object(
            ("weights", "sec", 2**62, b"\x00" * 64, codec.encode_weights(make_weights(666))), {"workers": -1}
        )
        setup["server"].wait_for("a workers may not send to 'workers'")
    finally:
        rogue.stop()
    assert worker.receive_weights(blocking=True, timeout=2.0) is None


def test_forged_and_replayed_weights_are_neither_kept_by_the_relay_nor_loaded_by_workers(
    setup: dict[str, Any], clients: list, credentials_dir: Path, tmp_path: Path
) -> None:
    settings = setup["settings"]
    trainer, workers = connect(setup["transport"], clients, "w0", "w1")
    send_weights_until(trainer, workers, 11)
    trainer.close()  # the trainer's slot is free: a password holder can take it
    # the rogue has the password and the server's certificate, but not the trainer's signing key
    rogue_dir = tmp_path / "rogue"
    generate(rogue_dir)
    shutil.copy(credentials_dir / "certificate.pem", rogue_dir / "certificate.pem")
    rogue_settings = settings.model_copy(update={"tls_credentials_directory": rogue_dir})
    rogue = TlspyoTransport(rogue_settings, run_name="sec").trainer()
    clients.append(rogue)
    assert rogue.wait_connected(TIMEOUT)
    rogue.send_weights(make_weights(666))
    setup["server"].wait_for("the signature does not verify")  # the relay refused them and closed the rogue
    for worker in workers:
        assert worker.receive_weights(blocking=True, timeout=1.0) is None
    rogue.close()
    # the relay's latest weights are still the genuine ones: a worker joining now gets those
    late = setup["transport"].worker("late")
    clients.append(late)
    assert weights_version(late.receive_weights(blocking=True, timeout=TIMEOUT)) == 11
    # a genuine trainer again: new weights are accepted
    genuine = setup["transport"].trainer()
    clients.append(genuine)
    send_weights_until(genuine, [*workers, late], 12)
    genuine.close()
    # replaying an older genuine message (validly signed, as a captured one would be) is refused by the relay...
    signer = WeightsSigner(credentials_dir)
    payload = codec.encode_weights(make_weights(11))
    old = ("weights", "sec", 1, signer.sign(_signed_bytes("sec", 1, payload)), payload)
    replay = rogue_endpoint(settings, credentials_dir, "trainer")
    try:
        replay.send_object(old, {"workers": -1})
        setup["server"].wait_for("older than the latest ones")
    finally:
        replay.stop()
    for worker in workers:
        assert worker.receive_weights(blocking=True, timeout=1.0) is None
    # ...and by every worker too, should a relay ever pass it on (the worker's own check, called directly)
    forged = ("weights", "sec", 2**62, b"\x00" * 64, payload)
    for message, why in ((old, "older than the current ones"), (forged, "does not verify")):
        with pytest.raises(CodecError, match=why):
            workers[0]._on_message(message)


def test_weights_of_another_run_are_refused(setup: dict[str, Any], clients: list) -> None:
    settings = setup["settings"]
    trainer, (worker,) = connect(setup["transport"], clients, "w0")
    send_weights_until(trainer, [worker], 21)
    trainer.close()
    other = TlspyoTransport(settings, run_name="another-run").trainer()
    clients.append(other)
    assert other.wait_connected(TIMEOUT)
    other.send_weights(make_weights(7))
    wait_for(lambda: worker.rejected >= 1, TIMEOUT, "the worker to refuse another run's weights")
    assert worker.receive_weights() is None


# -- limits and credentials ---------------------------------------------------------------------------------------


def test_max_workers_is_enforced(tmrl_home: Path, credentials_dir: Path, spawn_tmrl: Any, clients: list) -> None:
    settings = server_settings(credentials_dir, max_workers=1)
    server = spawn_tmrl("server", "server", "-v", *server_args(settings))
    server.wait_for("listening on")
    transport = TlspyoTransport(settings, run_name="sec")
    first = transport.worker("first")
    clients.append(first)
    assert first.wait_connected(TIMEOUT)
    second = transport.worker("second")
    clients.append(second)
    assert not second.wait_connected(3.0)
    server.wait_for("the server accepts at most 1 workers")
    first.close()
    assert second.wait_connected(TIMEOUT)  # it retries, and gets in once there is room


def test_missing_credentials_are_clear_errors(tmrl_home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    transport = TlspyoTransport(server_settings(empty), run_name="sec")
    with pytest.raises(TransportError, match="key.pem") as info:
        transport.server().start()
    assert "tmrl tls generate" in str(info.value)
    with pytest.raises(TransportError, match="certificate.pem"):
        transport.worker("w")
    (empty / "certificate.pem").write_text("")
    with pytest.raises(TransportError, match="weights-signing-public.pem"):
        transport.worker("w")
    with pytest.raises(TransportError, match="weights-signing-key.pem"):
        transport.trainer()


# -- TLS and credentials ------------------------------------------------------------------------------------------


def test_clients_trust_only_the_servers_certificate_and_check_its_host_name(
    setup: dict[str, Any], clients: list, tmp_path: Path, credentials_dir: Path
) -> None:
    """A server presenting another certificate than the clients hold (an impostor), or a certificate for another host
    name, gets no connection: nothing is sent to it, not even the password."""
    settings = setup["settings"]
    other = tmp_path / "other"
    generate(other)  # another certificate, with the same host name
    shutil.copy(credentials_dir / "weights-signing-public.pem", other / "weights-signing-public.pem")
    impostor_certificate = TlspyoTransport(
        settings.model_copy(update={"tls_credentials_directory": other}), run_name="sec"
    )
    wrong_host = TlspyoTransport(settings.model_copy(update={"tls_hostname": "another-host"}), run_name="sec")
    refused = [impostor_certificate.worker("impostor-cert"), wrong_host.worker("wrong-host")]
    clients.extend(refused)
    genuine = setup["transport"].worker("genuine")  # the same settings otherwise: it connects
    clients.append(genuine)
    assert genuine.wait_connected(TIMEOUT)
    for worker in refused:
        assert not worker.wait_connected(5.0), f"{worker.name} connected to a server it must not trust"
    # the same checks with the standard library: the handshake itself fails
    for directory, hostname in ((other, settings.tls_hostname), (credentials_dir, "another-host")):
        context = ssl.create_default_context(cafile=str(directory / "certificate.pem"))
        with socket.create_connection((settings.host, settings.port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                context.wrap_socket(raw, server_hostname=hostname)


def test_tls_generate_keeps_secrets_private_and_never_overwrites_silently(tmrl_home: Path, tmp_path: Path) -> None:
    import os
    import stat
    import subprocess

    from tmrl_core.testing import tmrl_command

    folder = tmp_path / "creds"
    env = {**os.environ, "TMRL_HOME": str(tmrl_home)}
    first = subprocess.run([*tmrl_command(), "tls", "generate", "--dir", str(folder)], env=env, capture_output=True)
    assert first.returncode == 0, first.stderr
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert modes["key.pem"] == 0o600 and modes["weights-signing-key.pem"] == 0o600, modes
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    again = subprocess.run([*tmrl_command(), "tls", "generate", "--dir", str(folder)], env=env, capture_output=True)
    assert again.returncode != 0
    assert b"credentials already exist" in again.stderr and b"--force" in again.stderr, again.stderr
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    forced = subprocess.run(
        [*tmrl_command(), "tls", "generate", "--dir", str(folder), "--force"], env=env, capture_output=True
    )
    assert forced.returncode == 0, forced.stderr
    assert (folder / "key.pem").read_bytes() != before["key.pem"]


def test_a_server_without_tls_beyond_loopback_warns(
    tmrl_home: Path, credentials_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="tmrl.transport.tlspyo")
    for bind, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        server = TlspyoTransport(server_settings(credentials_dir, tls=False, bind=bind), run_name="sec").server()
        server.start()
        server.stop()
        assert ("TLS is off" in caplog.text) is warned, (bind, caplog.text)


def test_the_trainer_refuses_a_buffer_announced_over_the_limit_before_receiving_it(
    setup: dict[str, Any], clients: list
) -> None:
    trainer, _ = connect(setup["transport"], clients)
    limit = setup["settings"].max_message_bytes
    with pytest.raises(CodecError, match="announced, over server.max_message_bytes"):
        trainer._on_message(("chunk", "big", 1, 0, 1000, limit + 1, b"\x00" * 10))
    assert trainer._partial_bytes == 0 and not trainer._partial  # nothing kept of it


def test_a_worker_hands_at_most_two_unconfirmed_buffers_to_its_network_process(
    tmrl_home: Path, credentials_dir: Path, clients: list
) -> None:
    """No server: the worker's network process cannot deliver, so the worker keeps the rest in its bounded queue."""
    settings = server_settings(credentials_dir, local_buffer_max_samples=35, connect_timeout=0)
    worker = TlspyoTransport(settings, run_name="sec").worker("alone")
    clients.append(worker)
    for first in (0, 10):
        worker.send_samples(make_buffer(0, first, 10))
    wait_for(lambda: worker.sent_buffers == TlspyoWorker.window, TIMEOUT, "two buffers handed over")
    for first in range(20, 60, 10):
        worker.send_samples(make_buffer(0, first, 10))
    time.sleep(2.0)
    assert worker.sent_buffers == TlspyoWorker.window  # no more: nothing was confirmed
    # then 4 buffers of 10: 3 kept (35 samples at most), the oldest dropped and counted
    assert (worker.pending_samples, worker.dropped_samples) == (30, 10)
