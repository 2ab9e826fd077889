"""One listing, reading and writing interface for local folders and filesystem URIs (s3://, gs://,
file://).

pyarrow's filesystems give seekable range reads, so a clip is read without copying its file.
Small state (run records, manifests, sweep state, best/) is written whole or not at all, so a crash
or a full disk leaves the previous version: a temporary sibling, fsync, then a rename. That is
written here (about 100 lines) rather than taken from a library: the one that did it (atomicwrites)
is archived and unmaintained, and none covers pyarrow's URIs or swapping a folder.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow.fs as pafs

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota spent


@dataclass(frozen=True, slots=True)  # slots: a listing holds one a file (millions)
class FileStat:
    size: int
    mtime_ns: int


@functools.lru_cache(maxsize=64)
def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    return fs, path.rstrip("/") or "/"


def join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}"


class Tree:
    """All files under a root, listed once: relative path -> size and modification time.
    FIFOs, sockets and devices are listed too (size 0), and named in `special`: never opened."""

    def __init__(self, root: str) -> None:
        self.root = root
        fs, base = resolve(root)
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{root}: no such folder")
        if info.type != pafs.FileType.Directory:
            raise NotADirectoryError(f"{root}: not a folder")
        self.fs, self.base = fs, base
        selector = pafs.FileSelector(base, recursive=True)
        self.files: dict[str, FileStat] = {}
        self.special: set[str] = set()  # FIFOs, sockets, devices: never opened (a FIFO blocks)
        for item in fs.get_file_info(selector):
            rel = item.path[len(base) :].lstrip("/")
            if item.type == pafs.FileType.File:
                mtime = item.mtime_ns if item.mtime_ns is not None else 0
                self.files[rel] = FileStat(int(item.size or 0), int(mtime))
            elif item.type == pafs.FileType.Unknown:  # listed like a file, so that a layout
                self.special.add(rel)  # names it and the manifest says what it is
                self.files[rel] = FileStat(0, int(item.mtime_ns or 0))
        self._lower: dict[str, str] | None = None

    def find(self, rel: str) -> str | None:
        """The stored relative path for `rel`, matching case-insensitively as a fallback; None
        for a FIFO, socket or device (a metadata file must be one to read).

        UCF101's split files spell some class folders with another case (HandStandPushups).
        The lower-cased index is built at the first such miss, not for every listing.
        """
        if rel in self.files:
            return None if rel in self.special else rel
        if self._lower is None:
            self._lower = {known.lower(): known for known in self.files}
        found = self._lower.get(rel.lower())
        return None if found in self.special else found

    def read_text(self, rel: str) -> str:
        """The text of the file `rel`; FileNotFoundError for a FIFO, socket or device (opening
        a FIFO blocks for ever)."""
        if rel in self.special:
            raise FileNotFoundError(
                f"{self.uri(rel)}: not a regular file (a FIFO, socket or device)"
            )
        with self.fs.open_input_stream(join(self.base, rel)) as stream:
            return stream.read().decode("utf-8-sig")

    def uri(self, rel: str) -> str:
        return join(self.root, rel)


def _fresh(parent: str, name: str, tag: str) -> str:
    """A new hidden sibling name for `name` in `parent` (`.name.tag-<random>`)."""
    return os.path.join(parent, f".{name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(path: str) -> None:
    """Make a rename in `path` durable; best effort (some filesystems cannot fsync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(uri: str) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces the file at `uri` only when the block ends
    without an error: a reader, or the next launch after a crash, sees the old file or the new.

    Local files: a temporary sibling, fsync, os.replace (removed again on any error). Other
    filesystems (s3://, gs://): the content is buffered and written at the end in one upload,
    since object stores make an object visible whole once its upload completes."""
    fs, inner = resolve(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        buffer = io.BytesIO()
        yield buffer
        fs.create_dir(inner.rpartition("/")[0] or "/", recursive=True)
        with fs.open_output_stream(inner) as stream:
            stream.write(buffer.getbuffer())
        return
    target = os.path.abspath(inner)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    temporary = _fresh(parent, name, "tmp")
    try:
        # O_EXCL with 0o666: a new file, with the permissions the umask gives (mkstemp's 0600)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(exc, OSError) and (named := naming_target(exc, temporary, target)):
            raise named from exc
        raise
    _fsync_dir(parent)


def naming_target(exc: OSError, temporary: str, target: str) -> OSError | None:
    """A full disk met while writing `temporary` (or with no file named) as the same error
    naming `target`, the file the user knows; None for any other error."""
    if exc.errno in NO_SPACE and exc.filename in (None, temporary):
        return OSError(exc.errno, os.strerror(exc.errno), target)
    return None


def atomic_write_bytes(uri: str, data: bytes) -> None:
    """Replace the file at `uri` (a local path or URI) with `data`, whole or not at all."""
    with atomic_output(uri) as stream:
        stream.write(data)


def atomic_write_text(uri: str, text: str) -> None:
    """Replace the file at `uri` with `text` (UTF-8), whole or not at all."""
    atomic_write_bytes(uri, text.encode("utf-8"))


def replace_folder(source: str, uri: str) -> None:
    """Copy the local folder `source` to `uri`, replacing the folder there.

    Local targets: the copy is made in a hidden sibling, fsynced, then swapped in by two renames,
    so a reader finds the old folder whole, the new one whole, or (between the renames, or after
    a crash there) none, never a mix. Object stores have no folders to rename: each object is
    copied whole, one by one."""
    fs, inner = resolve(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(inner, recursive=True)
        pafs.copy_files(source, inner, destination_filesystem=fs)
        return
    target = os.path.abspath(inner)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    for leftover in os.listdir(parent):  # what a crash in an earlier swap left behind
        if leftover.startswith((f".{name}.new-", f".{name}.old-")):
            shutil.rmtree(os.path.join(parent, leftover), ignore_errors=True)
    staging, old = _fresh(parent, name, "new"), _fresh(parent, name, "old")
    try:
        shutil.copytree(source, staging)
        _fsync_tree(staging)
        if os.path.lexists(target):
            os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            if os.path.lexists(old):
                os.rename(old, target)  # put the previous folder back
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: str) -> None:
    for folder, _, files in os.walk(root):
        for file in files:
            fd = os.open(os.path.join(folder, file), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(folder)
