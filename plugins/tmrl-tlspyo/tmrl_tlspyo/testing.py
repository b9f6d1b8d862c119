"""Helpers for tests of the tlspyo transport (this plugin's and others'): settings for a relay on 127.0.0.1 with TLS,
and ``tmrl`` commands run in the background with their output in a file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tmrl_core.settings import ServerSettings

PASSWORD = "correct horse battery staple"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_settings(credentials_dir: Path, **overrides: Any) -> ServerSettings:
    """``server`` settings for the tlspyo transport on 127.0.0.1 with TLS on, a free port and these credentials."""
    values: dict[str, Any] = {
        "transport": "tlspyo",
        "host": "127.0.0.1",
        "bind": "127.0.0.1",
        "port": free_port(),
        "password": PASSWORD,
        "tls": True,
        "tls_credentials_directory": credentials_dir,
    }
    values.update(overrides)
    return ServerSettings(**values)


class TmrlProcess:
    """A ``tmrl`` command running in the background, its output in a log file."""

    def __init__(self, args: list[str], home: Path, log_path: Path) -> None:
        from tmrl_core.testing import tmrl_command

        env = {key: value for key, value in os.environ.items() if not key.startswith("TMRL_")}
        env.update({"TMRL_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen([*tmrl_command(), *args], env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        """Wait until ``text`` appears in the output (fails if the process ends first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.log()
            if text in output:
                return output
            if self.proc.poll() is not None:
                raise AssertionError(f"tmrl {' '.join(self.args)} ended ({self.proc.returncode}):\n{output}")
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} after {timeout:.0f} s in the output of tmrl {self.args[0]}:\n{self.log()}")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        """The exit status; a process still running after ``timeout`` seconds fails the test with its threads'
        stacks (``tmrl`` prints them on SIGUSR1) and its output."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGUSR1)
            time.sleep(3.0)
            raise AssertionError(
                f"tmrl {' '.join(self.args)} still runs after {timeout:.0f} s; its stacks and output:\n{self.log()}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._log.close()


def server_args(settings: ServerSettings) -> list[str]:
    """``--set`` options that give a ``tmrl`` command these server settings."""
    values = settings.model_dump(mode="json")
    values["password"] = settings.password.get_secret_value()
    args = []
    for key in (
        "transport",
        "host",
        "bind",
        "port",
        "password",
        "tls",
        "tls_credentials_directory",
        "max_message_bytes",
        "max_workers",
    ):
        value = values[key]
        args += ["--set", f"server.{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of process ``pid`` and all its descendants (Linux ``/proc``; 0 once it is gone):
    the server's relay and the clients' network processes are children of the process that started them."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        pending.extend(int(child) for child in children)
    return total


class RawClient:
    """A client that speaks tlspyo's protocol itself over TLS, holding the password: it sends whatever a test asks,
    as fast as the relay reads it, and reads the relay's replies only if told to (``read``)."""

    def __init__(self, settings: ServerSettings, group: str, *, read: bool = True) -> None:
        import ssl
        import threading

        context = ssl.create_default_context(cafile=str(Path(settings.tls_credentials_directory) / "certificate.pem"))
        raw = socket.create_connection((settings.host, settings.port), timeout=30)
        self.sock = context.wrap_socket(raw, server_hostname=settings.tls_hostname)
        self.password = settings.password.get_secret_value().encode()
        self.stamp = 0
        self.sent_bytes = 0
        self._read_frame()  # the relay's hello
        self.sock.settimeout(None)  # from now on, blocked is what the relay decides (it may stop reading us)
        self.send("HELLO", None, (group,))
        self.closed = threading.Event()
        self.echoed: set[bytes] = set()
        if read:
            threading.Thread(target=self._drain, daemon=True).start()

    def _read_frame(self) -> bytes:
        from tmrl_tlspyo.link import HEADER_SIZE

        header = self._read_exactly(HEADER_SIZE)
        return self._read_exactly(int(header))

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            part = self.sock.recv(size - len(data))
            if not part:
                raise ConnectionError("the relay closed the connection")
            data += part
        return data

    def _drain(self) -> None:
        from tmrl_core import codec

        try:
            while True:
                stamp, cmd, obj = codec.decode(self._read_frame())
                if cmd == "OBJ" and isinstance(obj, bytes):
                    self.echoed.add(obj)
        except (OSError, ConnectionError):
            pass
        self.closed.set()

    def sync(self, timeout: float = 120.0) -> None:
        """Return once the relay has read everything sent so far (it echoes a marker sent after it; needs ``read``)."""
        marker = f"sync-{self.stamp}".encode()
        self.send("OBJ", {"echo": -1}, marker)
        deadline = time.monotonic() + timeout
        while marker not in self.echoed:
            if time.monotonic() > deadline or self.closed.is_set():
                raise AssertionError("the relay did not read everything this client sent")
            time.sleep(0.05)

    def send(self, cmd: str, destination: Any, obj: Any) -> None:
        """One tlspyo frame ``(stamp, cmd, destination, obj)``; blocks while the relay does not read."""
        from tmrl_core import codec
        from tmrl_tlspyo.link import HEADER_SIZE

        self.stamp += 1
        body = codec.encode((self.stamp, cmd, destination, obj))
        self.sock.sendall(f"{len(body):<{HEADER_SIZE}}".encode() + self.password + body)
        self.sent_bytes += len(body)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def pendulum_buffer(samples: int = 1000, episode: int = 200) -> Any:
    """A :class:`~tmrl_core.buffer.Buffer` shaped like a pendulum worker's (reset sample, then steps; episodes of
    ``episode`` steps truncated), with plausible random values."""
    import numpy as np

    from tmrl_core import Buffer

    rng = np.random.default_rng(0)
    buffer = Buffer(maxlen=samples)
    step = 0
    for _ in range(samples):
        obs = rng.uniform(-1, 1, 3).astype(np.float32)
        if step == 0:
            buffer.append_sample((np.zeros(1, np.float32), obs, 0.0, False, False, {}))
        else:
            act = rng.uniform(-2, 2, 1).astype(np.float32)
            buffer.append_sample((act, obs, float(rng.uniform(-16, 0)), False, step == episode, {}))
        step = 0 if step == episode else step + 1
    buffer.stat_train_return, buffer.stat_train_steps = -1000.0, episode
    return buffer


def flood(config_json: str) -> None:
    """Run as a process: a password holder sending valid 1,000-sample buffers (one chunk each) to the trainer as
    fast as the relay reads them, for ``seconds``; writes ``{"sent_bytes", "sent_buffers"}`` to ``report``."""
    from tmrl_core import codec

    config = json.loads(config_json)
    settings = ServerSettings(**config["settings"])
    data = codec.encode_buffer(pendulum_buffer())
    chunk = codec.encode(("chunk", "flooder", 1, 0, 1, len(data), data))  # a whole buffer in one chunk
    client = RawClient(settings, "workers")
    deadline = time.monotonic() + float(config["seconds"])
    sent = 0
    try:
        while time.monotonic() < deadline and not client.closed.is_set():
            sent += 1
            client.send("OBJ", {"trainer": 1}, chunk)
        client.sync()  # what was sent reached the relay: it goes on to the trainer unless a drop is reported
    finally:
        client.close()
        Path(config["report"]).write_text(json.dumps({"sent_bytes": client.sent_bytes, "sent_buffers": sent}))
