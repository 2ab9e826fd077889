"""`crisscross finetune`, `svm`, `probe` and `report` end to end on synthetic layouts (tiny models)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import crisscross.platform.evaluation.finetune as finetune_module
import crisscross.platform.evaluation.frozen as frozen_module
from crisscross.models import create_backbone, save_backbone
from crisscross.platform.evaluation.sources import SourceError, resolve_pretrained
from crisscross.trainers.run_folder import STATE_FILE
from tests.conftest import REPO

FINETUNE = REPO / "experiments" / "finetune" / "quickstart_ucf101.yaml"
SVM = REPO / "experiments" / "svm" / "quickstart_esc50.yaml"
PROBE = REPO / "experiments" / "probe" / "ucf101.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tracking store holding a fake finished pretraining run with exported tiny backbones."""
    folder = tmp_path_factory.mktemp("eval")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("pre"), run_name="tiny-pre")
    client.log_param(run.info.run_id, "data.dataset", "kinetics_sound")
    torch.manual_seed(0)
    files = {
        "vid": save_backbone(create_backbone("r2plus1d_18", width=4), folder / "vid_tiny.pth.tar"),
        "aud": save_backbone(
            create_backbone("resnet18_audio", width=4), folder / "aud_tiny.pth.tar"
        ),
    }
    for path in files.values():
        client.log_artifact(run.info.run_id, str(path), "backbones")
    client.set_terminated(run.info.run_id)
    return {"uri": uri, "run_id": run.info.run_id, "folder": folder, **files}


def _common(store, tmp_path) -> list[str]:
    return ["--set", f"tracking.uri={store['uri']}", "--set", f"run.output_dir={tmp_path}/runs"]


def _split_file_names(root: Path, pattern: str) -> set[str]:
    return {
        line.split()[0].rsplit("/", 1)[-1]
        for f in root.glob(pattern)
        for line in f.read_text().splitlines()
        if line.strip()
    }


def _alive_train_controllers() -> int:
    from ray._private.state import actors  # the GCS's table: needs no dashboard

    alive = actors(actor_state_name="ALIVE").values()
    return sum("TrainController" in actor["ActorClassName"] for actor in alive)


def test_finetune_all_splits_side_by_side_logs_per_split_results(
    local_ray, synthetic, store, tmp_path, run_cli, monkeypatch
):
    root = synthetic["ucf101"]
    seen_jobs = []
    remote = finetune_module._fit_remote

    class Spy:
        @staticmethod
        def remote(job, *args):
            seen_jobs.append(job)
            return remote.remote(job, *args)

    monkeypatch.setattr(finetune_module, "_fit_remote", Spy)
    controllers_before = _alive_train_controllers()
    result = run_cli(
        "finetune", str(FINETUNE), "--pretrained", store["run_id"], "--root", str(root),
        "--fold", "all", "--set", "data.crop_size=32", "--set", "data.frames=4",
        "--set", "optim.batch_size=4", "--set", "run.cpus_per_worker=0.5",
        *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "side by side" in result.output
    # the splits' Train controllers end with their tasks, not with the Ray session
    deadline = time.monotonic() + 30
    while _alive_train_controllers() > controllers_before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _alive_train_controllers() == controllers_before
    # what reached training: no video of the split's test list
    assert [job.fold for job in seen_jobs] == [1, 2, 3]
    for job in seen_jobs:
        test_names = _split_file_names(root / "ucfTrainTestlist", f"testlist0{job.fold}.txt")
        train_names = {Path(row["path"]).name for row in job.train_rows}
        assert train_names and not train_names & test_names
        assert {Path(row["path"]).name for row in job.test_rows} == test_names
    run_id = re.search(r"MLflow run (\w{32})", result.output).group(1)
    client = MlflowClient(store["uri"])
    run = client.get_run(run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["crisscross.pretrain_run"] == store["run_id"]
    assert tags["crisscross.eval"] == "finetune" and tags["crisscross.protocol"] == "finetune 4f"
    assert tags["crisscross.pretrain_dataset"] == "kinetics_sound"
    per_split = [metrics[f"fold{k}/top1"] for k in (1, 2, 3)]
    assert metrics["top1_mean"] == pytest.approx(sum(per_split) / 3)
    assert [m.step for m in client.get_metric_history(run_id, "fold2/test_top1")] == [1, 2]
    for k in (1, 2, 3):
        names = {Path(a.path).name for a in client.list_artifacts(run_id, f"fold{k}")}
        assert {"confusion_matrix.png", "confusion_matrix.csv", "per_class_accuracy.csv"} <= names
    local = client.download_artifacts(run_id, "fold1/per_class_accuracy.csv", str(tmp_path))
    with open(local) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and sum(int(r["test_files"]) for r in rows) == len(seen_jobs[0].test_rows)
    correct = sum(int(r["correct"]) for r in rows)
    assert correct / len(seen_jobs[0].test_rows) == pytest.approx(metrics["fold1/top1"])


@pytest.fixture
def svm_fits(monkeypatch):
    """Every fit_svm_fold call's arguments, in order."""
    calls = []
    real = frozen_module.fit_svm_fold

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(frozen_module, "fit_svm_fold", spy)
    return calls


def test_svm_chooses_c_on_training_folds_and_never_trains_on_the_test_fold(
    local_ray, synthetic, store, tmp_path, run_cli, svm_fits
):
    root = synthetic["esc50"]
    result = run_cli(
        "svm", str(SVM), "--pretrained", str(store["aud"]), "--root", str(root),
        "--set", "data.n_mels=40", *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folds = {}
    with open(root / "meta" / "esc50.csv") as handle:
        for row in csv.DictReader(handle):
            folds[row["filename"]] = int(row["fold"])
    assert len(svm_fits) == 5
    for fold, call in zip(range(1, 6), svm_fits, strict=True):
        assert fold not in set(call["train_groups"].tolist())
        assert len(call["train_labels"]) == sum(f != fold for f in folds.values())
        assert len(call["test_labels"]) == sum(f == fold for f in folds.values())
        assert call["train_crops"].shape[1] == 2 and call["test_clips"].shape[1] == 10
        assert call["settings"].select == "cv"
    assert "chosen on the training folds" in result.output
    # the progress bar (stderr); tqdm gives the rate as s/file below one file a second
    assert re.search(r"features: 100%.*(file/s|s/file)", result.output)
    assert list((tmp_path / "runs" / "features").iterdir()) == []  # parts gone with the run
    run_id = re.search(r"MLflow run (\w{32})", result.output).group(1)
    run = MlflowClient(store["uri"]).get_run(run_id)
    assert run.data.tags["crisscross.protocol"] == "linear SVM 2s, C by CV"
    assert run.data.tags["crisscross.pretrained_kind"] == "file"
    assert "crisscross.pretrain_run" not in run.data.tags
    assert {f"fold{k}/C" for k in range(1, 6)} <= set(run.data.metrics)
    # the reference code's choice is available, and labelled
    result = run_cli(
        "svm", str(SVM), "--pretrained", str(store["aud"]), "--root", str(root), "--fold", "2",
        "--choose-c-on-test", "--set", "data.n_mels=40", *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "chosen on the TEST fold" in result.output
    assert "C on test fold (reference code)" in result.output


def test_features_resume_from_their_parts_and_do_not_depend_on_the_workers(
    local_ray, synthetic, store, tmp_path
):
    """A chunk's part, once written, is taken as it is; a missing or cut-short part is
    extracted again; each file is sampled by its place in the whole list, so 1 or 3 workers
    (other chunks) give the same features."""
    from crisscross.config import SvmExperiment, load_config
    from crisscross.config.loading import apply_overrides
    from crisscross.platform.evaluation.common import labelled_set, usable_files
    from crisscross.platform.evaluation.extract import extract_parallel, parts_folder

    overrides = {"data.n_mels": 40, "run.workers": 3}
    config = load_config(SVM, overrides, schema=SvmExperiment)
    rows = usable_files(labelled_set("esc50", str(synthetic["esc50"]), lambda _: None))
    chunk = -(-len(rows) // 3)  # one chunk per worker: under extract.CHUNK files each
    assert len(rows) > 2 * chunk
    pretrained = resolve_pretrained(
        str(store["aud"]), modality="audio", tracking_uri=store["uri"], scratch=str(tmp_path)
    )
    samples = frozen_module._svm_samples(config)
    parts = tmp_path / "parts"

    def extract(config, lines=None):
        say = (lines if lines is not None else []).append
        return extract_parallel(
            pretrained, config, rows, samples, kind="svm", parts=str(parts), say=say
        )

    first = extract(config)
    written = sorted(parts.glob("part-*.npz"))
    assert [p.name for p in written] == [f"part-{i:08d}.npz" for i in (0, chunk, 2 * chunk)]
    stamps = {p.name: p.stat().st_mtime_ns for p in written}
    written[1].unlink()  # never written: the run was stopped first
    written[2].write_bytes(written[2].read_bytes()[:100])  # cut short by a crash
    time.sleep(0.01)
    lines = []
    again = extract(config, lines)
    assert lines == [f"resuming: features of {chunk} files from {parts}"]
    assert parts.joinpath(written[0].name).stat().st_mtime_ns == stamps[written[0].name]
    assert parts.joinpath(written[2].name).stat().st_mtime_ns != stamps[written[2].name]
    for name in samples:
        assert np.array_equal(first[name][0], again[name][0])
        assert np.array_equal(first[name][1], again[name][1]) and first[name][1].all()
    with np.load(written[0]) as data:  # a file that failed (a mount not ready, say)
        arrays = {k: data[k] for k in data.files}
    arrays["train.ok"][0] = False
    np.savez(written[0], **arrays)
    stamp = written[0].stat().st_mtime_ns
    time.sleep(0.01)
    again = extract(config)
    assert written[0].stat().st_mtime_ns != stamp  # extracted again, not reused
    assert again["train"][1].all() and np.array_equal(first["train"][0], again["train"][0])
    one = apply_overrides(config, {"run.workers": 1})
    shutil.rmtree(parts)
    alone = extract(one)  # one chunk of every file
    assert [p.name for p in parts.glob("part-*.npz")] == ["part-00000000.npz"]
    for name in samples:
        assert np.allclose(first[name][0], alone[name][0], atol=1e-5)
    assert parts_folder(pretrained, config, rows, "svm") == parts_folder(
        pretrained, one, rows, "svm"
    )  # the workers change no feature, so neither the parts'
    other = apply_overrides(config, {"data.train_crops": 3})
    assert parts_folder(pretrained, other, rows, "svm") != parts_folder(
        pretrained, config, rows, "svm"
    )
    assert parts_folder(pretrained, config, rows[1:], "svm") != parts_folder(
        pretrained, config, rows, "svm"
    )


def test_probe_and_report(local_ray, synthetic, store, tmp_path, run_cli):
    result = run_cli(
        "probe", str(PROBE), "--pretrained", store["run_id"], "--root", str(synthetic["ucf101"]),
        "--fold", "1", "--set", "data.crop_size=32", "--set", "data.frames=4",
        "--set", "run.workers=2", "--set", "run.cpus_per_worker=0.5", *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"split 1: logistic top-1 \d\.\d{3}, kNN top-1 \d\.\d{3}", result.output)
    out = tmp_path / "report.md"
    result = run_cli(
        "report", "--tracking-uri", store["uri"], "--pretrain-run", store["run_id"],
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = out.read_text()
    ours = [line for line in text.splitlines() if f"(tiny-pre; run {store['run_id'][:8]})" in line]
    for line in ours:
        assert line.startswith("| UCF101 | kinetics_sound (tiny-pre; run ")
    probe = next(line for line in ours if "| logistic probe (video) |" in line)
    assert "% (1 split) | logistic probe (video) | vid_tiny.pth.tar |" in probe
    # the published numbers, in the same shape, for comparison
    assert "| ESC50 | Kinetics-Sound | 82.8% | linear SVM 2s, 5 folds |" in text
    client = MlflowClient(store["uri"])
    report_run = re.search(r"MLflow run (\w{32})", result.output).group(1)
    assert [a.path for a in client.list_artifacts(report_run)] == ["report.md"]


def test_released_file_round_trip_and_sources(store, tmp_path):
    from crisscross.models import CrissCross

    scratch = str(tmp_path)
    by_file = resolve_pretrained(
        str(store["vid"]), modality="video", tracking_uri=store["uri"], scratch=scratch
    )
    by_run = resolve_pretrained(
        store["run_id"], modality="video", tracking_uri=store["uri"], scratch=scratch
    )
    saved = torch.load(store["vid"], weights_only=True)
    for source in (by_file, by_run):
        loaded = source.backbone(modality="video", name=None, width=None)
        assert loaded.state_dict().keys() == saved.keys()
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())
    assert by_run.pretrain_run_id == store["run_id"] and by_run.dataset == "kinetics_sound"
    # a checkpoint folder: the video half of the whole model's state
    model = CrissCross(
        create_backbone("r2plus1d_18", width=4),
        create_backbone("resnet18_audio", width=4),
        projector_dim=16,
        predictor_hidden=8,
    )
    ckpt = tmp_path / "run" / "checkpoint_step000000004"
    ckpt.mkdir(parents=True)
    torch.save({"model": model.state_dict()}, ckpt / STATE_FILE)
    with pytest.raises(SourceError, match=r"crisscross_run\.json"):
        resolve_pretrained(
            str(ckpt.parent), modality="audio", tracking_uri=store["uri"], scratch=scratch
        )
    record = {
        "mlflow_run_id": "f" * 32,
        "config": {"run": {"name": "mine"}, "data": {"dataset": "audioset"}},
    }
    (ckpt.parent / "crisscross_run.json").write_text(json.dumps(record))
    for where in (ckpt, ckpt.parent):  # a checkpoint, or the run folder (its latest checkpoint)
        found = resolve_pretrained(
            str(where), modality="audio", tracking_uri=store["uri"], scratch=scratch
        )
        audio = found.backbone(modality="audio", name="resnet18_audio", width=4)
        expected = model.audio.state_dict()
        assert all(torch.equal(audio.state_dict()[k], v) for k, v in expected.items())
        assert (found.label, found.dataset, found.pretrain_run_id) == ("mine", "audioset", "f" * 32)
    with pytest.raises(SourceError, match="no such MLflow run"):
        resolve_pretrained("0" * 32, modality="audio", tracking_uri=store["uri"], scratch=scratch)


def test_wrong_modality_names_both(store, synthetic, tmp_path, run_cli):
    result = run_cli(
        "svm", str(SVM), "--pretrained", str(store["vid"]), "--root", str(synthetic["esc50"]),
        *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "vid_tiny.pth.tar: holds video backbone 'r2plus1d_18' (width 4)" in result.output
    assert "but an audio backbone was asked for" in result.output
    result = run_cli(
        "finetune", str(FINETUNE), "--pretrained", str(store["vid"]), "--root",
        str(synthetic["ucf101"]), "--set", "model.width=8", *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "does not match video backbone 'r2plus1d_18' (width 8)" in result.output


def test_missing_split_files_say_what_is_expected_where(store, synthetic, tmp_path, run_cli):
    root = tmp_path / "ucf"
    shutil.copytree(synthetic["ucf101"], root)
    (root / "ucfTrainTestlist" / "testlist02.txt").unlink()
    (root / "ucfTrainTestlist" / "trainlist03.txt").unlink()
    result = run_cli(
        "finetune", str(FINETUNE), "--pretrained", str(store["vid"]), "--root", str(root),
        *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "not in the UCF101 layout" in result.output
    assert "ucfTrainTestlist/testlist02.txt (split 2 test videos)" in result.output
    assert "ucfTrainTestlist/trainlist03.txt (split 3 training videos)" in result.output
    esc = tmp_path / "esc"
    shutil.copytree(synthetic["esc50"], esc)
    (esc / "meta" / "esc50.csv").unlink()
    result = run_cli(
        "svm", str(SVM), "--pretrained", str(store["aud"]), "--root", str(esc),
        *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "meta/esc50.csv (clip metadata)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fold", "4"], "--fold 4: UCF101 has splits 1|2|3; or give 'all'"),
        (["--pretrained", "nowhere"], "--pretrained nowhere: not a weights file"),
        (["--set", "optim.batch_size=4096"], "optim.batch_size 4096 is larger than split 1"),
        (["--set", "optim.milestones=[5, 2]"], "milestones must be distinct epochs"),
    ],
)
def test_finetune_bad_input(store, synthetic, tmp_path, run_cli, args, message):
    base = ["--pretrained", str(store["vid"]), "--root", str(synthetic["ucf101"]), "--fold", "1"]
    result = run_cli("finetune", str(FINETUNE), *base, *args, *_common(store, tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_failed_split_keeps_the_splits_already_done(
    local_ray, synthetic, store, tmp_path, run_cli, monkeypatch
):
    import ray

    real = finetune_module.fit_fold

    def second_fails(job, *args):
        if job.fold == 2:
            raise ray.exceptions.RayError("worker died")
        return real(job, *args)

    monkeypatch.setattr(finetune_module, "fit_fold", second_fails)
    result = run_cli(
        "finetune", str(FINETUNE), "--pretrained", str(store["vid"]), "--root",
        str(synthetic["ucf101"]), "--set", "data.crop_size=32", "--set", "data.frames=4",
        "--set", "optim.batch_size=4", "--set", "optim.epochs=1", "--set", "optim.milestones=[]",
        "--set", "run.cpus_per_worker=2", *_common(store, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "one after another" in result.output
    assert "fine-tuning failed (worker died); split(s) 1 finished and logged" in result.output
    run_id = re.search(r"MLflow run (\w{32})", result.output).group(1)
    client = MlflowClient(store["uri"])
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "fold1/top1" in run.data.metrics and "fold2/top1" not in run.data.metrics
    assert {a.path for a in client.list_artifacts(run_id, "fold1")}


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_hmdb51_training_rows_hold_only_the_split_files_training_videos(synthetic, fold):
    from crisscross.datasets.manifest import build_manifest
    from crisscross.platform.evaluation.common import fold_rows

    root = synthetic["hmdb51"]
    manifest = build_manifest("hmdb51", str(root)).manifest
    train, test = fold_rows(manifest, "hmdb51", fold)
    ids: dict[str, str] = {}
    for split_file in (root / "testTrainMulti_7030_splits").glob(f"*_test_split{fold}.txt"):
        for line in split_file.read_text().splitlines():
            if line.strip():
                name, id_ = line.split()
                ids[name] = id_
    assert {Path(r["path"]).name for r in train} == {n for n, i in ids.items() if i == "1"}
    assert {Path(r["path"]).name for r in test} == {n for n, i in ids.items() if i == "2"}


def test_svm_reference_protocol_and_its_own_report_row(
    local_ray, synthetic, store, tmp_path, run_cli, svm_fits
):
    """`--protocol reference` runs the reference code's SVM end to end; the report keeps it
    apart from the clean protocol's number."""
    root = synthetic["esc50"]
    common = ["--pretrained", store["run_id"], "--root", str(root), "--fold", "3"]
    common += ["--set", "data.n_mels=40", *_common(store, tmp_path)]
    clean = run_cli("svm", str(SVM), *common)
    assert clean.exit_code == 0, clean.output
    result = run_cli("svm", str(SVM), *common, "--protocol", "reference")
    assert result.exit_code == 0, result.output
    assert "svm.protocol reference sets data.train_crops 100 (the config said 2)" in result.output
    assert "svm.standardize False (the config said True)" in result.output
    call = svm_fits[-1]
    assert call["train_crops"].shape[1] == 100 and call["test_clips"].shape[1] == 10
    s = call["settings"]
    assert (s.select, s.standardize, s.max_iter, s.ties) == ("test", False, 1000, "larger")
    assert s.grid == (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1.0)
    # the features are l2-normalised over time: 3 pooled steps per (channel, mel) row
    norms = (call["train_crops"][0, 0].reshape(-1, 3) ** 2).sum(axis=1)
    assert (norms > 0).any() and np.allclose(norms[norms > 0], 1.0, atol=1e-4)
    # the test clips are the first 2 s: nine identical windows, then one a frame later
    clips = call["test_clips"][0]
    assert all((clips[k] == clips[0]).all() for k in range(9))
    assert not (clips[9] == clips[0]).all()
    label = "linear SVM 2s, reference protocol (C on test fold)"
    assert label in result.output
    out = tmp_path / "report.md"
    report = run_cli(
        "report", "--tracking-uri", store["uri"], "--pretrain-run", store["run_id"],
        "--out", str(out),
    )  # fmt: skip
    assert report.exit_code == 0, report.output
    esc = [line for line in out.read_text().splitlines() if line.startswith("| ESC50 | kinetics")]
    assert any(f"| {label} |" in line for line in esc), esc
    assert any("| linear SVM 2s, C by CV |" in line for line in esc), esc
