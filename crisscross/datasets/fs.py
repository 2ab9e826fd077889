"""One listing and reading interface for local folders and filesystem URIs (s3://, gs://, file://).

pyarrow's filesystems give seekable range reads, so a clip is read without copying its file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pyarrow.fs as pafs


@dataclass(frozen=True)
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
    """All files under a root, listed once: relative path -> size and modification time."""

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
        for item in fs.get_file_info(selector):
            if item.type == pafs.FileType.File:
                rel = item.path[len(base) :].lstrip("/")
                mtime = item.mtime_ns if item.mtime_ns is not None else 0
                self.files[rel] = FileStat(int(item.size or 0), int(mtime))
        self._lower = {rel.lower(): rel for rel in self.files}

    def find(self, rel: str) -> str | None:
        """The stored relative path for `rel`, matching case-insensitively as a fallback.

        UCF101's split files spell some class folders with another case (HandStandPushups).
        """
        return rel if rel in self.files else self._lower.get(rel.lower())

    def read_text(self, rel: str) -> str:
        with self.fs.open_input_stream(join(self.base, rel)) as stream:
            return stream.read().decode("utf-8-sig")

    def uri(self, rel: str) -> str:
        return join(self.root, rel)
