"""`crisscross synth`, `manifest` and `prepare` as a user runs them, bad input included."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest


def test_synth_then_manifest(run_cli, tmp_path):
    root = tmp_path / "esc"
    result = run_cli("synth", "esc50", "--out", str(root), "--classes", "2", "--per-class", "5")
    assert result.exit_code == 0 and "10 esc50 files" in result.stdout
    result = run_cli("manifest", "esc50", "--root", str(root))
    assert result.exit_code == 0, result.stderr
    assert "ok" in result.stdout and "10 files (10 probed, 0 unchanged)" in result.stdout
    assert "probing" in result.stderr and "10/10" in result.stderr and "ok 10" in result.stderr
    assert not (root / "crisscross_manifest_esc50.parquet.parts").exists()
    table = pq.read_table(root / "crisscross_manifest_esc50.parquet")
    assert table.num_rows == 10 and set(table.column("status").to_pylist()) == {"ok"}
    again = run_cli("manifest", "esc50", "--root", str(root))
    assert "(0 probed, 10 unchanged)" in again.stdout


def test_manifest_on_ray_probes_as_tasks_and_says_so(run_cli, tmp_path, local_ray, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = tmp_path / "esc"
    run_cli("synth", "esc50", "--out", str(root), "--classes", "2", "--per-class", "3")
    result = run_cli("manifest", "esc50", "--root", str(root), "--on", "ray")
    assert result.exit_code == 0, result.stderr
    assert "probing as Ray tasks on a local Ray" in result.stdout
    assert "6 files (6 probed, 0 unchanged)" in result.stdout and "6/6" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["manifest", "ucf101", "--root", "{tmp}/nope"], "nope: no such folder"),
        (
            ["manifest", "ucf101", "--root", "{tmp}"],
            "not in the UCF101 layout; expected under the root: ucfTrainTestlist/classInd.txt",
        ),
        (["prepare", "esc50", "--root", "{tmp}", "--out", "{tmp}/o"], "not in the ESC-50 layout"),
    ],
)
def test_bad_roots_exit_2_with_what_is_expected(run_cli, tmp_path, args, message):
    result = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and message in result.stderr


def test_unknown_dataset_lists_the_choices(run_cli, tmp_path):
    result = run_cli("synth", "kinetics700", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert (
        "'kinetics700' is not one of 'audioset', 'esc50', 'hmdb51', 'kinetics400', 'kinetics_sound', 'ucf101'"
        in result.stderr
    )


def test_prepare_command(run_cli, local_ray, tmp_path):
    root = tmp_path / "esc"
    run_cli("synth", "esc50", "--out", str(root), "--classes", "2", "--per-class", "5")
    result = run_cli("prepare", "esc50", "--root", str(root), "--out", str(tmp_path / "prep"))
    assert result.exit_code == 0, result.stderr
    assert "10 prepared, 0 already done, 0 failed" in result.stdout
    assert "preparing" in result.stderr and "10/10" in result.stderr and "ok 10" in result.stderr
    assert len(list((tmp_path / "prep").rglob("*.audio.npy"))) == 10


def test_prepare_frames_that_do_not_fit_exit_2_before_any_work(
    run_cli, local_ray, tmp_path, monkeypatch
):
    import collections

    from crisscross.datasets import prepare as P

    root = tmp_path / "ks"
    run_cli("synth", "kinetics_sound", "--out", str(root), "--classes", "2", "--per-class", "1")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(P.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 10**5, 10**5))
    out = tmp_path / "frames"
    args = ("prepare", "kinetics_sound", "--root", str(root), "--out", str(out))
    result = run_cli(*args, "--video-format", "frames")
    assert result.exit_code == 2
    assert f"{out}: the frames copy needs about" in result.stderr
    assert "--video-format h264" in result.stderr and not out.exists()
