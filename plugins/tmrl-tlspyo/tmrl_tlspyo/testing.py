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
        return self.proc.wait(timeout)

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
