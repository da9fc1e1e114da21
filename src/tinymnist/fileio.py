"""Atomic file writes: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``.

    The rename is atomic on POSIX and Windows, so an interrupted write (Ctrl-C, a full
    disk, a crash) leaves at most a stray ``.tmp`` file, never a truncated ``path``.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def os_errors_as(error: type[Exception], message: str, note: str = ""):
    """An OSError inside (a full disk, a folder that cannot be made, a port in use) becomes
    ``error("message: reason" + note)``: the one clear line the user sees, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise error(f"{message}: {exc.strerror or exc}{note}") from None
