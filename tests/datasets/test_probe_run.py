"""Probing with progress and parts: an interrupted manifest build resumes from the probes it
had written, merges them, and leaves no parts behind."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from crisscross.datasets import probe_run
from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.probe_run import parts_folder


def _counting(monkeypatch, *, fail_at: int | None = None) -> list[str]:
    """Count the probes (and raise KeyboardInterrupt at probe `fail_at`, a Ctrl-C)."""
    calls: list[str] = []
    real = probe_run.probe

    def probe(uri, size=None):
        calls.append(uri)
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(uri, size)

    monkeypatch.setattr(probe_run, "probe", probe)
    return calls


def test_an_interrupted_build_resumes_from_its_parts(synthetic, tmp_path, monkeypatch):
    root = str(synthetic["esc50"])
    whole = build_manifest("esc50", root, out=str(tmp_path / "whole.parquet")).manifest.table
    out = str(tmp_path / "m.parquet")
    monkeypatch.setattr(probe_run, "PART_ROWS", 2)
    calls = _counting(monkeypatch, fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        build_manifest("esc50", root, out=out, workers=1)
    assert not (tmp_path / "m.parquet").exists()
    parts = sorted((tmp_path / "m.parquet.parts").glob("*.parquet"))
    assert len(parts) == 3  # 2 + 2 written as they came, the fifth when interrupted
    assert sum(pq.read_table(p).num_rows for p in parts) == 5
    calls = _counting(monkeypatch)
    report = build_manifest("esc50", root, out=out, workers=1)
    assert len(calls) == whole.num_rows - 5  # only the files not probed before
    assert report.probed == whole.num_rows  # all needed probing; 5 came from the parts
    assert report.manifest.table.equals(whole)
    assert not (tmp_path / "m.parquet.parts").exists()  # merged, then removed


def test_parts_of_another_root_are_not_used(synthetic, tmp_path, monkeypatch):
    out = str(tmp_path / "m.parquet")
    _counting(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        build_manifest("esc50", str(synthetic["esc50"]), out=out, workers=1)
    found = probe_run.read_parts(parts_folder(out), {"dataset": "esc50", "root": "/elsewhere"})
    assert found == {}
    mine = probe_run.read_parts(
        parts_folder(out), {"dataset": "esc50", "root": str(synthetic["esc50"])}
    )
    assert len(mine) == 2


def test_the_progress_bar_counts_each_status(synthetic, tmp_path, capsys):
    report = build_manifest(
        "esc50", str(synthetic["esc50"]), out=str(tmp_path / "m.parquet"), progress=True
    )
    n = report.manifest.table.num_rows
    err = capsys.readouterr().err
    assert "probing" in err and f"{n}/{n}" in err and f"ok {n}" in err
    assert "file/s" in err


def test_probes_as_ray_tasks_give_the_local_manifest(synthetic, tmp_path, monkeypatch, local_ray):
    root = str(synthetic["esc50"])
    here = build_manifest("esc50", root, out=str(tmp_path / "here.parquet"), workers=2)
    monkeypatch.setattr(probe_run, "RAY_CHUNK", 4)  # several tasks for the small set
    monkeypatch.setattr(probe_run, "PART_ROWS", 4)
    calls = _counting(monkeypatch)  # the driver's probe: Ray tasks must not use it
    report = build_manifest("esc50", root, out=str(tmp_path / "ray.parquet"), on="ray")
    assert calls == []
    assert report.probed == here.probed > 4
    assert report.manifest.table.equals(here.manifest.table)
    assert not (tmp_path / "ray.parquet.parts").exists()


def test_a_probe_that_raises_marks_its_file_and_the_build_goes_on(synthetic, tmp_path, monkeypatch):
    real = probe_run.probe
    broken: list[str] = []

    def probe(uri, size=None):
        if not broken:
            broken.append(uri)
            raise RuntimeError("a decoder bug\nwith a second line")
        return real(uri, size)

    monkeypatch.setattr(probe_run, "probe", probe)
    table = build_manifest("esc50", str(synthetic["esc50"]), out=str(tmp_path / "m.parquet"),
                           workers=1).manifest.table  # fmt: skip
    rows = [r for r in table.to_pylist() if r["path"] == broken[0]]
    assert len(rows) == 1 and rows[0]["status"] != "ok"
    assert rows[0]["error"] == "RuntimeError: a decoder bug"
    assert sum(r["status"] == "ok" for r in table.to_pylist()) == table.num_rows - 1


def test_an_unknown_place_is_refused(tmp_path):
    with pytest.raises(ValueError, match="probes run on one of local, ray, not 'gpu'"):
        probe_run.probe_files([], needs=None, parts=str(tmp_path / "p"), schema=None, meta={},
                              on="gpu")  # fmt: skip
