"""tmrl_core.files: atomic writes and the temporary files a killed write leaves behind (real files, real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tmrl_core.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    temporaries_of,
)


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.json"
    atomic_write_text(path, "one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_a_failing_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "f", "old")

    def failing(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from tmrl_core.files import atomic_write

def write(tmp):
    Path(tmp).write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)

atomic_write(sys.argv[1], write)
"""


def test_a_killed_writer_leaves_a_temporary_that_is_found_and_removed(tmp_path: Path) -> None:
    target = tmp_path / "run.safetensors"
    target.write_bytes(b"previous checkpoint")
    # files that look alike but are not this file's temporaries: never touched
    bystanders = [
        tmp_path / ".other.safetensors.abcd1234.tmp",
        tmp_path / ".run.safetensors.abcd1234.tmp.keep",
        tmp_path / "run.safetensors.tmp",
        tmp_path / ".run.safetensors.toolongname.tmp",
    ]
    for p in bystanders:
        p.write_bytes(b"keep me")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    leftovers = temporaries_of(target)
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 1000
    assert target.read_bytes() == b"previous checkpoint"

    assert remove_stale_temporaries(target) == leftovers
    assert temporaries_of(target) == []
    assert target.read_bytes() == b"previous checkpoint"
    assert all(p.read_bytes() == b"keep me" for p in bystanders)
    assert remove_stale_temporaries(tmp_path / "missing-folder" / "x") == []


def test_atomic_write_is_importable_without_torch() -> None:
    code = "import sys, tmrl_core.files; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_temporaries_are_named_after_their_target(tmp_path: Path) -> None:
    seen: list[str] = []
    atomic_write(tmp_path / "a.b", lambda tmp: seen.append(Path(tmp).name) or Path(tmp).write_text("z"))
    assert seen[0].startswith(".a.b.") and seen[0].endswith(".tmp")
    # the pattern temporaries_of looks for is exactly what atomic_write creates
    stale = tmp_path / seen[0]
    stale.write_text("left by a crash")
    assert temporaries_of(tmp_path / "a.b") == [stale]
