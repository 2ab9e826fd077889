"""Atomic writes of small state: a failure mid-write keeps the previous file or folder whole."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from crisscross.datasets import fs as cfs
from crisscross.datasets.fs import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    replace_folder,
)


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def leftovers(folder: Path, keep: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - keep


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "deep" / "state.json"
    atomic_write_text(str(path), "first")
    atomic_write_text(str(path), "second")
    assert path.read_text() == "second"
    assert leftovers(path.parent, {"state.json"}) == set()
    atomic_write_bytes(f"file://{path}", b"third")  # a file:// URI is a local file too
    assert path.read_bytes() == b"third"


def test_new_files_get_the_umask_permissions_not_mkstemp_0600(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_text(str(path), "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("where", ["fsync", "write", "replace"])
def test_a_failed_write_keeps_the_previous_content_and_no_temporary(tmp_path, monkeypatch, where):
    path = tmp_path / "crisscross_run.json"
    atomic_write_text(str(path), '{"mlflow_run_id": "old"}')
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", disk_full)
    if where == "replace":
        monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"), atomic_output(str(path)) as stream:
        stream.write(b'{"mlflow_run_id": "new", "half')
        if where == "write":
            disk_full()
    assert path.read_text() == '{"mlflow_run_id": "old"}'
    assert leftovers(tmp_path, {"crisscross_run.json"}) == set()


def test_object_stores_get_one_whole_upload_or_none():
    fs, _ = cfs.resolve("mock:///bucket/state.json")
    assert not isinstance(fs, pafs.LocalFileSystem)
    with pytest.raises(RuntimeError), atomic_output("mock:///bucket/state.json") as stream:
        stream.write(b"half")
        raise RuntimeError("crash mid-write")
    assert fs.get_file_info("bucket/state.json").type == pafs.FileType.NotFound
    atomic_write_text("mock:///bucket/state.json", "whole")
    with fs.open_input_stream("bucket/state.json") as stream:
        assert stream.read() == b"whole"


def folder_with(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_replace_folder_swaps_in_the_new_folder_whole(tmp_path):
    run = tmp_path / "run"
    folder_with(run / "best", {"state.pt": "old", "progress.json": "old"})
    new = folder_with(tmp_path / "new", {"state.pt": "new"})
    replace_folder(str(new), str(run / "best"))
    assert {p.name: p.read_text() for p in (run / "best").iterdir()} == {"state.pt": "new"}
    assert leftovers(run, {"best"}) == set()
    replace_folder(str(new), str(tmp_path / "fresh" / "best"))  # nothing there before
    assert (tmp_path / "fresh" / "best" / "state.pt").read_text() == "new"


def test_a_failed_folder_copy_keeps_the_previous_folder_whole(tmp_path, monkeypatch):
    run = tmp_path / "run"
    folder_with(run / "best", {"state.pt": "old", "progress.json": "old"})
    new = folder_with(tmp_path / "new", {"state.pt": "new", "progress.json": "new"})
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        replace_folder(str(new), str(run / "best"))
    assert {p.name: p.read_text() for p in (run / "best").iterdir()} == {
        "state.pt": "old",
        "progress.json": "old",
    }
    assert leftovers(run, {"best"}) == set()


def test_a_failed_swap_puts_the_previous_folder_back(tmp_path, monkeypatch):
    run = tmp_path / "run"
    folder_with(run / "best", {"state.pt": "old"})
    new = folder_with(tmp_path / "new", {"state.pt": "new"})
    real_rename = os.rename
    calls = []

    def second_rename_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new folder into place
            disk_full()
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError):
        replace_folder(str(new), str(run / "best"))
    assert (run / "best" / "state.pt").read_text() == "old"
    assert leftovers(run, {"best"}) == set()


def test_leftovers_of_a_crashed_swap_are_cleared_by_the_next(tmp_path):
    run = tmp_path / "run"
    folder_with(run / ".best.new-1-dead", {"state.pt": "half"})
    folder_with(run / ".best.old-1-dead", {"state.pt": "old"})
    replace_folder(str(folder_with(tmp_path / "new", {"state.pt": "new"})), str(run / "best"))
    assert leftovers(run, {"best"}) == set()
