"""Files written so that a crash never leaves a torn one: the one home of ``write_atomic``.

Every small state file the loop keeps (store shards, registry pointers and ``meta.json``, the
replay reservoir, drift series and reports, the spool's acknowledged mark, generated secrets) is
written to a temporary name in the same folder, fsynced and ``os.replace``d (atomic on POSIX), so a
reader sees the old file or the new one. ``sync_dir`` also fsyncs the folder, so that the rename
itself survives a power cut (needed where the file is the only record, e.g. the spool mark).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int | None = None, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a torn one;
    ``mode`` sets its permissions before it appears (0o600 for a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            if mode is not None:
                os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_frame(path: Path, frame: Any) -> None:
    """A pandas DataFrame as Parquet (no index), written with ``write_atomic``."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_atomic(path, buffer.getvalue())
