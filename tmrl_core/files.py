"""Files written atomically, and the temporary files a crash leaves behind.

Every file tmrl writes that a later start reads back (checkpoints, weights, the settings file, datasets, run
information) goes through :func:`atomic_write`: the content fills a temporary file in the same folder (named
``.<name>.<8 random characters>.tmp``), which is flushed, fsynced and then renamed over the target in one step. A
crash or a kill leaves either the old file or the new one, never half of one; what it can leave is the temporary
file, which :func:`remove_stale_temporaries` deletes at the next start of whoever owns the target.

This module imports neither torch nor numpy: the settings (and so ``tmrl --help``) use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

#: ``tempfile.mkstemp`` puts 8 characters from this alphabet between prefix and suffix
_RANDOM_PART = r"[a-z0-9_]{8}"
_SUFFIX = ".tmp"


def _prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], *, fsync: bool = True) -> Path:
    """Create or replace ``path`` atomically and return it.

    ``write(tmp_path)`` fills a temporary file in the same folder (same file system, so the rename is atomic); then
    the file is fsynced (when ``fsync``), renamed over ``path`` and, on POSIX, the folder is fsynced so that the
    rename itself survives a power loss. If ``write`` raises, the temporary file is removed and ``path`` is left as
    it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync and os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), fsync=fsync)


def temporaries_of(path: str | os.PathLike[str]) -> list[Path]:
    """The temporary files :func:`atomic_write` may have left beside ``path`` (exactly its naming, nothing else)."""
    path = Path(path)
    pattern = re.compile(re.escape(_prefix(path)) + _RANDOM_PART + re.escape(_SUFFIX))
    try:
        entries = list(path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(p for p in entries if pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink())


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` of ``path`` left; return what was removed.

    Call it only where nothing else can be writing ``path`` at the same moment (the trainer owns its checkpoint and
    weights files for the whole run).
    """
    removed = []
    for tmp in temporaries_of(path):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed
