"""Where model versions live: a folder on any fsspec filesystem, and local copies to load from.

The store is named by a local path or an fsspec URL (``file:///shared/registry``,
``s3://bucket/prefix``, ``gs://bucket/prefix``, ``memory://name`` in tests); a pyarrow
filesystem can be handed in directly and is wrapped for fsspec. ``training.registry`` keeps its
layout here (``versions/NNNNNN/`` with ``meta.json``, pointer files, ``history.jsonl``). What
each kind of filesystem guarantees, and what is built on it:

- **Local disk or a shared POSIX mount** (a plain path or ``file://``, e.g. NFS seen by every
  node): a file is written to a temporary name, fsynced and ``os.replace``d, so a reader sees the
  old file or the new one. A version folder is staged under a temporary name and renamed to its
  number; the rename fails if that number exists, so two writers (processes or nodes on the same
  mount) never take one number. Appends to ``history.jsonl`` are ``O_APPEND`` + fsync.
- **Object stores and other fsspec filesystems** (s3, gs, az, memory, ...): no rename and no
  directories, but one object put is atomic: pointer files and ``meta.json`` are one put each.
  A version's number is taken by creating ``versions/NNNNNN/.claim`` exclusively (``mode="xb"``;
  the claim stays, so a writer with an older listing cannot take the number again). That is
  atomic where the store checks it server-side: S3 ``If-None-Match`` in s3fs (for small objects
  since fsspec/s3fs#974, July 2025), GCS ``ifGenerationMatch=0`` in gcsfs, Azure in adlfs.
  Where it is a check-then-write (memory, some others) or unsupported (pyarrow: check, then
  write), two writers in the same instant could take one number, so such a store must have one
  writer (the scheduler actor). The model files are uploaded first and ``meta.json`` last: a
  folder without ``meta.json`` is incomplete, invisible to readers and never downloaded.
  ``history.jsonl`` is read, extended and put back: two concurrent writers can lose a line.
  S3, GCS and Azure list what was written (strongly consistent), which numbering relies on.

``local_copy`` gives ``from_pretrained`` a local folder: the version's own folder on a local
store, else a copy downloaded once into a cache folder, to a temporary folder renamed into place
(``meta.json`` fetched last), so a copy is complete or absent. Copies are not evicted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from distillery.files import write_atomic

MARKER = "meta.json"  # written last: a version folder holding it is complete
CLAIM = ".claim"  # on non-local stores: the object that takes a version number


def version_folder(version: int) -> str:
    """A version's folder, relative to the store's root."""
    return f"versions/{version:06d}"


def _as_fsspec(filesystem: Any) -> fsspec.AbstractFileSystem:
    """``filesystem`` for fsspec: as it is, or a ``pyarrow.fs.FileSystem`` wrapped."""
    if isinstance(filesystem, fsspec.AbstractFileSystem):
        return filesystem
    from fsspec.implementations.arrow import ArrowFSWrapper

    return ArrowFSWrapper(filesystem)


class ModelStore:
    """A folder on a filesystem; every path below is relative to it, ``/``-separated."""

    def __init__(self, location: str | Path, filesystem: Any = None) -> None:
        """``location``: a local path or an fsspec URL; with ``filesystem`` (fsspec or pyarrow),
        a path on that filesystem."""
        if filesystem is None:
            self.fs, base = fsspec.core.url_to_fs(str(location))
        else:
            self.fs = _as_fsspec(filesystem)
            base = self.fs._strip_protocol(str(location))
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = Path(location) if isinstance(location, Path) else Path(base)
        self.base = str(self.root) if self.local else base.rstrip("/")
        if "://" in str(location):
            self.url = str(location)  # what another node opens
        elif self.local:
            self.url = str(self.root)
        else:  # a handed-in filesystem: a name for messages, not one another node can open
            self.url = self.fs.unstrip_protocol(self.base)

    def __repr__(self) -> str:
        return f"ModelStore({self.url!r})"

    def full(self, rel: str) -> str:
        """``rel`` as a path on the filesystem."""
        return posixpath.join(self.base, rel)

    def read(self, rel: str) -> bytes | None:
        """The file's bytes; None when it is not there."""
        if self.local:
            path = self.root / rel
            return path.read_bytes() if path.is_file() else None
        try:
            data: bytes = self.fs.cat_file(self.full(rel))
        except FileNotFoundError:
            return None
        return data

    def write(self, rel: str, data: bytes) -> None:
        """Replace the file whole: atomic rename on local disk, one put elsewhere."""
        if self.local:
            write_atomic(self.root / rel, data)
        else:
            self._with_parents(self.fs.pipe_file, self.full(rel), data)

    def remove(self, rel: str) -> None:
        """Delete the file if it is there."""
        if self.local:
            (self.root / rel).unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.full(rel))

    def remove_tree(self, rel: str) -> None:
        """Delete a folder and everything in it, if it is there."""
        if self.local:
            shutil.rmtree(self.root / rel, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.full(rel), recursive=True)

    def append_line(self, rel: str, line: str) -> None:
        """Add ``line`` (no newline) to a text file: an fsynced append on local disk; elsewhere
        read, extend and put back (not safe against a concurrent writer)."""
        if self.local:
            with open(self.root / rel, "a") as out:
                out.write(line + "\n")
                out.flush()
                os.fsync(out.fileno())
            return
        self.write(rel, (self.read(rel) or b"") + line.encode() + b"\n")

    def names(self, rel: str) -> list[str]:
        """Names of what the folder holds; [] when it is not there."""
        if self.local:
            folder = self.root / rel
            return [p.name for p in folder.iterdir()] if folder.is_dir() else []
        self.fs.invalidate_cache(self.full(rel))
        try:
            listed = self.fs.ls(self.full(rel), detail=False)
        except FileNotFoundError:
            return []
        return [posixpath.basename(str(p).rstrip("/")) for p in listed]

    def holding(self, rel: str, name: str) -> list[str]:
        """Names of the sub-folders of ``rel`` that hold a file ``name``."""
        if self.local:
            return [n for n in self.names(rel) if (self.root / rel / n / name).is_file()]
        self.fs.invalidate_cache(self.full(rel))
        found = self.fs.glob(posixpath.join(self.full(rel), "*", name))
        return [posixpath.basename(posixpath.dirname(str(p))) for p in found]

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create the file only if it is not there; False when it was. Atomic where the
        filesystem checks ``mode="xb"`` itself (see the module docstring)."""
        path = self.full(rel)
        try:
            self._with_parents(self._put_new, path, data)
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # no "xb" here: check, then write
            if self.fs.exists(path):
                return False
            self._with_parents(self.fs.pipe_file, path, data)
        return True

    def _put_new(self, path: str, data: bytes) -> None:
        with self.fs.open(path, "xb") as out:
            out.write(data)

    def _with_parents(self, put: Any, path: str, data: bytes | Path) -> None:
        """``put(path, data)`` (bytes, or a local file), making the parent folders first on
        filesystems that need them (object stores do not; creating one there could even create
        a bucket)."""
        try:
            put(path, data)
        except FileNotFoundError:
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            put(path, data)

    def upload(self, source: Path, rel: str, skip: frozenset[str] = frozenset()) -> None:
        """Copy every file under the local folder ``source`` into ``rel``, except ``skip``."""
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            name = path.relative_to(source).as_posix()
            if name not in skip:
                self._with_parents(self._put_file, self.full(f"{rel}/{name}"), path)

    def _put_file(self, target: str, source: Path) -> None:
        self.fs.put_file(str(source), target)

    def download(self, rel: str, dest: Path, last: str) -> None:
        """Copy every file under ``rel`` into the local folder ``dest``, ``last`` after the
        others; FileNotFoundError (naming the folder) when ``rel`` has no ``last``."""
        source = self.full(rel)
        self.fs.invalidate_cache(source)
        names = sorted(posixpath.relpath(str(p), source) for p in self.fs.find(source))
        if last not in names:
            raise FileNotFoundError(f"{self.url}/{rel} has no {last}: missing or incomplete")
        for name in [n for n in names if n not in (last, CLAIM)] + [last]:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(posixpath.join(source, name), str(target))

    def cache_name(self) -> str:
        """A folder name for this store's copies: readable, and distinct per store URL."""
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        readable = re.sub(r"[^A-Za-z0-9]+", "-", self.url).strip("-")[-48:]
        return f"{readable}-{digest}"


def local_copy(store: ModelStore, version: int, cache_dir: Path) -> Path:
    """A local folder holding ``version``'s files, for ``from_pretrained``: its own folder on a
    local store, else ``cache_dir/<store>/NNNNNN``, downloaded the first time (atomically).
    FileNotFoundError, naming the store, when the version is not there complete."""
    if store.local:
        folder = store.root / version_folder(version)
        if not (folder / MARKER).is_file():
            raise FileNotFoundError(f"v{version} is not in the model store at {store.url}")
        return folder
    target = cache_dir / store.cache_name() / f"{version:06d}"
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        store.download(version_folder(version), partial, MARKER)
        try:
            partial.rename(target)
        except OSError:  # another process finished the same copy first
            if not (target / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
