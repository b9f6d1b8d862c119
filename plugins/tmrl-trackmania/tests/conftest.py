"""Fixtures for tests that need a real X display: a private Xvfb server, and the simulated game in a real window.

Tests that need them skip with the reason when Xvfb cannot be started, unless ``TMRL_REQUIRE_DISPLAY=1`` (set by
``.ci/run``, which installs Xvfb and xdotool): then they fail, so CI never passes by skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCREEN = "1024x768x24"


def _unavailable(reason: str) -> None:
    if os.environ.get("TMRL_REQUIRE_DISPLAY") == "1":
        pytest.fail(f"{reason} (TMRL_REQUIRE_DISPLAY=1: the display tests must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def xvfb() -> Iterator[str]:
    """A private Xvfb server for this test session; yields its DISPLAY (e.g. ``":5"``)."""
    if sys.platform != "linux":
        pytest.skip("X11 tests run on Linux")
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        _unavailable(f"{' and '.join(missing)} not installed (Debian: apt-get install xvfb xdotool)")
    read, write = os.pipe()
    # -displayfd: Xvfb picks a free display number and writes it when it is ready to accept clients
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", SCREEN, "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    number = b""
    deadline = time.monotonic() + 20
    import select

    while time.monotonic() < deadline and not number.endswith(b"\n"):
        ready, _, _ = select.select([read], [], [], 0.5)
        if ready:
            chunk = os.read(read, 16)
            if not chunk:
                break
            number += chunk
    os.close(read)
    if not number.strip():
        proc.kill()
        err = proc.communicate(timeout=5)[1].decode(errors="replace")[-500:]
        _unavailable(f"Xvfb did not start: {err}")
    display = f":{number.decode().strip()}"
    try:
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Simulator:
    """The simulated game running in its own process, in a real window on :attr:`display`."""

    proc: subprocess.Popen
    port: int
    display: str
    dump: Path

    def shown_frame(self, timeout: float = 10.0):
        """The frame the window shows now, as the simulator rendered it (BGRA)."""
        import cv2

        self.dump.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not self.dump.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the simulator did not write its frame")
            time.sleep(0.02)
        return cv2.imread(str(self.dump), cv2.IMREAD_UNCHANGED)

    def env(self) -> dict[str, str]:
        """Environment variables for a process that drives this simulator."""
        return {"DISPLAY": self.display}


def start_simulator(display: str, tmp_path: Path, *args: str) -> Simulator:
    env = {**os.environ, "DISPLAY": display}
    env = {k: v for k, v in env.items() if not k.startswith("TMRL_") or k == "TMRL_HOME"}
    dump = tmp_path / "shown.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmrl_core", "trackmania", "simulator", "--port", "0", "--dump", str(dump), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    import select

    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        raise RuntimeError(f"the simulator did not start: {proc.communicate(timeout=10)[1][-2000:]}")
    info = json.loads(line)
    return Simulator(proc=proc, port=int(info["port"]), display=display, dump=dump)


def stop_simulator(sim: Simulator) -> None:
    sim.proc.terminate()
    try:
        sim.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        sim.proc.wait()


@pytest.fixture
def simulator(xvfb, tmp_path) -> Iterator[Simulator]:
    """The simulated game's window on the private display, deliberately at the wrong place and size (tmrl must
    place it), its telemetry on a free port."""
    sim = start_simulator(xvfb, tmp_path, "--size", "300x200", "--at", "333,222")
    try:
        yield sim
    finally:
        stop_simulator(sim)
