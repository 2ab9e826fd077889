"""A full disk at each small-state write (an injected ENOSPC): the previous state stays whole,
nothing half-written is left beside it, and the command ends with one sentence that names the
file. The run record and the sweep record: tests/platform/pretrain/test_run_record.py; the
atomic writers themselves and best/: tests/datasets/test_fs.py."""

from __future__ import annotations

import errno
import os
import shutil

import pyarrow as pa
import pytest

from crisscross.datasets.manifest import build_manifest, read_manifest, write_manifest
from crisscross.platform.lease import LEASE_FILE, Lease
from crisscross.platform.pretrain.resume_check import DATA_ROWS, record_data


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_manifest_and_names_it(tmp_path, monkeypatch, synthetic):
    path = tmp_path / "m.parquet"
    built = build_manifest("esc50", str(synthetic["esc50"]), out=str(path)).manifest
    before = path.read_bytes()
    shorter = type(built)(built.table.slice(0, 3), built.dataset, built.root, built.classes, 1.0)
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match=f"No space left on device: '{path}'"):
        write_manifest(shorter, str(path))
    assert path.read_bytes() == before
    assert read_manifest(str(path)).table.num_rows == built.table.num_rows
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_a_full_disk_keeps_the_rows_a_run_started_on(tmp_path, monkeypatch):
    first = pa.table({"path": ["a.mp4", "b.mp4"], "size_bytes": [1, 2]})
    record_data(str(tmp_path), first)
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        record_data(str(tmp_path), pa.table({"path": ["c.mp4"], "size_bytes": [3]}))
    assert pa.parquet.read_table(tmp_path / DATA_ROWS).equals(first)
    assert [p.name for p in tmp_path.iterdir()] == [DATA_ROWS]


def test_a_lease_not_written_for_a_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    real_open = open

    def full_on_write(file, mode="r", *args, **kwargs):
        if "w" in mode and LEASE_FILE in str(file):
            handle = real_open(file, mode, *args, **kwargs)
            handle.write = disk_full  # the file is created, its content does not fit
            return handle
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_on_write)
    with pytest.raises(OSError, match="No space left"):
        Lease(str(tmp_path), what="pretraining").acquire()
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    with Lease(str(tmp_path), what="pretraining"):  # space again: the next launch takes it
        assert (tmp_path / LEASE_FILE).is_file()


def test_the_manifest_command_ends_with_a_sentence_and_keeps_what_it_had(
    run_cli, synthetic, tmp_path, monkeypatch
):
    root, path = tmp_path / "esc50", tmp_path / "m.parquet"
    shutil.copytree(synthetic["esc50"], root)
    ok = run_cli("manifest", "esc50", "--root", str(root), "--out", str(path))
    assert ok.exit_code == 0, ok.output
    before = path.read_bytes()
    os.utime(next(root.rglob("*.wav")))  # one file changed: probed again
    monkeypatch.setattr(os, "fsync", disk_full)
    full = run_cli("manifest", "esc50", "--root", str(root), "--out", str(path))
    assert full.exit_code == 1, full.output
    # the first write that did not fit: the part that keeps the new probe
    assert f"Error: no space left on the device: {path}.parts/part-" in full.output
    assert "free some space and run the same command again" in full.output
    assert "Traceback" not in full.output
    assert path.read_bytes() == before


def test_a_full_disk_stops_prepare_instead_of_calling_sources_unreadable(
    tmp_path, monkeypatch, local_ray
):
    """A copy that does not fit is the disk's fault, not the source's: prepare_file raises it
    (naming the copy) rather than marking the source unreadable, and the driver gets that
    OSError back from its Ray task, which the command turns into its sentence."""
    import numpy as np
    import ray

    from crisscross.datasets import prepare
    from crisscross.datasets.media import write_av
    from crisscross.datasets.probe import probe

    source = tmp_path / "v.mp4"
    write_av(source, np.zeros((16, 48, 64, 3), np.uint8), fps=8.0)
    row = {"path": str(source), "rel": "v.mp4", "has_video": True, "has_audio": False}
    row["duration"] = probe(str(source))["duration"]
    spec = prepare.PrepareSpec(short_side=32)
    video_out, _ = prepare.prepared_paths(str(tmp_path / "out"), "v.mp4", spec)
    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match=f"No space left on device: '{video_out}'"):
        prepare.prepare_file(row, str(tmp_path / "out"), spec)
    monkeypatch.undo()

    @ray.remote
    def full_in_a_task() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/out/v.mp4")

    def tasks(*_args, **_kwargs):
        yield 0, ray.get(full_in_a_task.remote())

    monkeypatch.setattr(prepare, "chunked_on_ray", tasks)
    with pytest.raises(OSError) as raised:
        list(prepare._on_ray([row], str(tmp_path / "out"), spec))
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, "/out/v.mp4")
