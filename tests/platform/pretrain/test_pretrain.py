"""`crisscross pretrain` end to end on synthetic data: tracking, checkpoints, resume, faults, NaN."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from crisscross.config import load_config
from crisscross.models.weights import load_backbone
from crisscross.platform.pretrain.closing import RunFailedError
from crisscross.platform.pretrain.job import PretrainError, run_pretrain
from crisscross.platform.pretrain.resume_check import RAY_SNAPSHOT
from crisscross.platform.tracking import MlflowTracker
from crisscross.trainers.run_folder import STATE_FILE, RunFolder
from tests.conftest import REPO, TINY_SIZES

QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"
STEP_KEYS = ("loss", "v1v2", "a1a2", "v1a1", "v2a2", "v1a2", "a1v2", "samples_per_s", "data_wait")


def tiny(tmp_path: Path, synthetic, **overrides):
    """A seconds-long pretraining: width-4 encoders, 32 px crops, 4-sample batches."""
    values = TINY_SIZES | {
        "data.root": str(synthetic["kinetics_sound"]),
        "optim.batch_size": 4,
        "optim.epochs": 2,
        "optim.repeats_per_epoch": 1,
        "optim.warmup_epochs": 0.5,
        "run.workers": 1,
        "run.name": "tiny",
        "run.output_dir": str(tmp_path / "runs"),
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "monitor.every": 0,
    }
    return load_config(QUICKSTART, values | overrides)


def checkpoints(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("checkpoint_*") if p.is_dir()]


def history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# The killed-worker cases and the run that is launched again share these settings, so that one
# finished run serves them all: it is the uninterrupted run the killed one must equal, bit for bit.
SHARED = {
    "optim.epochs": 2,
    "run.checkpoint_every": 1,
    "run.keep_checkpoints": 2,
    "run.deterministic": True,
}


@pytest.fixture(scope="module")
def finished(local_ray, synthetic, tmp_path_factory):
    """One finished run (2 epochs of 3 steps, a checkpoint each step, the monitor each epoch),
    shared by the tests that read it, run it again or compare with it."""
    folder = tmp_path_factory.mktemp("finished")
    config = tiny(folder, synthetic, **_monitored(synthetic))
    return folder, config, run_pretrain(config, say=lambda _: None)


def _monitored(synthetic) -> dict:
    return SHARED | {
        "monitor.every": 1,
        "monitor.video_root": str(synthetic["ucf101"]),
        "monitor.audio_root": str(synthetic["esc50"]),
        "monitor.clips": 1,
    }


def test_pretrain_logs_everything_and_exports_released_weights(finished, tmp_path):
    _, config, outcome = finished
    client = MlflowClient(outcome.tracking_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    # 15 clips (3 classes x 5), batch 4, one worker: 3 steps per epoch, 2 epochs
    assert outcome.final_step == 6
    for key in (*STEP_KEYS, "lr/video", "lr/audio", "lr/video_predictor", "lr/audio_predictor"):
        assert history(client, outcome.run_id, key) == [1, 2, 3, 4, 5, 6], key
    assert history(client, outcome.run_id, "epoch/loss") == [3, 6]
    assert history(client, outcome.run_id, "knn/video") == [0, 3, 6]  # before, then each epoch
    # the quickstart's experiment asks for the linear probe beside the kNN
    assert set(outcome.knn_before) == {"knn/video", "knn/audio", "probe/video", "probe/audio"}
    lr = client.get_metric_history(outcome.run_id, "lr/video")
    assert sorted(lr, key=lambda m: m.step)[0].value == 0.0  # warm-up starts at 0
    assert {m.value for m in client.get_metric_history(outcome.run_id, "lr/video_predictor")} == {
        config.optim.predictor_lr
    }
    assert run.data.params["model.video_width"] == "4"
    assert run.data.params["loss.async"] == "True"
    for tag in ("git.commit", "ray.version", "torch.version", "manifest.sha256"):
        assert run.data.tags[tag], tag
    assert run.data.tags["checkpoint.latest"].startswith(str(finished[0] / "runs" / "tiny"))
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"config.yaml", "backbones", "checkpoints", "loss_curve.png"} <= artifacts
    folder = client.download_artifacts(outcome.run_id, "backbones", str(tmp_path / "dl"))
    video = load_backbone(Path(folder) / "vid_tiny.pth.tar")
    audio = load_backbone(Path(folder) / "aud_tiny.pth.tar")
    assert (video.arch_name, video.width) == ("r2plus1d_18", 4)
    assert audio.modality == "audio"
    best = client.download_artifacts(outcome.run_id, "checkpoints/best", str(tmp_path / "dl2"))
    assert (Path(best) / STATE_FILE).is_file()


def _run_and_kill(config, run_dir: Path, *, after_checkpoints: int):
    """Run pretraining in a thread; SIGKILL a training worker once checkpoints exist."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = run_pretrain(config, say=lambda _: None)
        except Exception as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 240
    while len(checkpoints(run_dir)) < after_checkpoints:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert thread.is_alive(), outcome
        time.sleep(0.2)
    # the rank-0 worker of this run (of the local_ray fixture's Ray) wrote the checkpoint
    latest = max(checkpoints(run_dir), key=lambda p: p.stat().st_mtime)
    os.kill(json.loads((latest / "progress.json").read_text())["pid"], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    return outcome


@pytest.mark.parametrize(("max_failures", "workers"), [(1, 1), (0, 1), (1, 2)])
def test_killed_worker_restarts_or_resumes_without_losing_steps(
    local_ray, synthetic, tmp_path, finished, max_failures, workers
):
    """max_failures 1: Ray restarts the group from the last checkpoint and the run completes.
    max_failures 0: the run fails; the same command again finishes it in the same MLflow run.
    Either way every step is logged exactly once and the run ends at the uninterrupted step;
    with two workers, each one's cursor goes into the checkpoint's data position. With one
    worker and a restart, resume equivalence (CPU, fp32, run.deterministic): the run ends with
    the weights and optimiser state of the same run never stopped, bit for bit."""
    config = tiny(
        tmp_path,
        synthetic,
        **{
            **SHARED,
            "run.workers": workers,
            "run.max_failures": max_failures,
        },
    )
    run_dir = tmp_path / "runs" / "tiny"
    outcome = _run_and_kill(config, run_dir, after_checkpoints=2)
    if max_failures:
        assert "value" in outcome, outcome.get("error")
        result = outcome["value"]
    else:
        assert isinstance(outcome.get("error"), RunFailedError), outcome
        assert "run the same command again" in str(outcome["error"])
        result = run_pretrain(config, say=lambda _: None)
    assert result.final_step == 6  # 2 epochs x 3 steps, as without the kill
    client = MlflowClient(result.tracking_uri)
    assert (
        len(
            client.search_runs(
                [client.get_experiment_by_name("crisscross-quickstart").experiment_id]
            )
        )
        == 1
    )
    for key in STEP_KEYS:
        assert history(client, result.run_id, key) == list(range(1, 7)), key
    assert history(client, result.run_id, "epoch/loss") == [3, 6]
    assert len(checkpoints(run_dir)) == 2  # keep_checkpoints
    if (max_failures, workers) == (1, 1):  # the shared run is the same run, never stopped
        _same_state(RunFolder(finished[0] / "runs" / "tiny").latest(), RunFolder(run_dir).latest())


def _same_state(first: Path, second: Path) -> None:
    """Both checkpoints hold step 6 and the same weights and Adam moments, bit for bit."""
    states = [torch.load(folder / STATE_FILE, weights_only=True) for folder in (first, second)]
    assert [s["step"] for s in states] == [6, 6]
    model = [s["model"] for s in states]
    assert model[0].keys() == model[1].keys()
    assert [k for k in model[0] if not torch.equal(model[0][k], model[1][k])] == []
    moments = [s["optimizer"]["state"] for s in states]
    assert moments[0].keys() == moments[1].keys()
    for i in moments[0]:
        assert torch.equal(moments[0][i]["exp_avg"], moments[1][i]["exp_avg"]), i
        assert torch.equal(moments[0][i]["exp_avg_sq"], moments[1][i]["exp_avg_sq"]), i


def test_finished_run_is_not_trained_again(finished):
    _, config, first = finished
    again = run_pretrain(config, say=lambda _: None)
    assert (again.run_id, again.final_step) == (first.run_id, first.final_step)
    assert not again.trained
    client = MlflowClient(first.tracking_uri)
    assert history(client, first.run_id, "loss") == [1, 2, 3, 4, 5, 6]


def test_closing_a_run_sends_the_metrics_its_workers_left_in_the_journal(finished, tmp_path):
    """A worker whose last flush the server refused leaves metrics in the run folder's journal;
    closing the run sends them, once, before it is marked FINISHED."""
    import shutil

    import ray

    from crisscross.platform.journal import JOURNAL_FILE, MetricJournal
    from crisscross.platform.pretrain.closing import finish

    folder, config, first = finished
    run_dir = tmp_path / "copy"  # the shared run folder stays as it was
    shutil.copytree(folder / "runs" / "tiny", run_dir)
    client = MlflowClient(first.tracking_uri)
    run_id = client.create_run(first_experiment(client)).info.run_id
    MetricJournal(str(run_dir / JOURNAL_FILE)).append(
        [Metric("loss", 0.5, 0, 3), Metric("epoch/loss", 0.4, 0, 3), Metric("loss", 0.5, 0, 3)]
    )
    latest = ray.train.Checkpoint(str(RunFolder(run_dir).latest()))
    finish(client, config, run_id, first.tracking_uri, str(run_dir), latest, str(tmp_path))
    assert history(client, run_id, "loss") == [3] and history(client, run_id, "epoch/loss") == [3]
    assert not (run_dir / JOURNAL_FILE).exists()
    assert client.get_run(run_id).info.status == "FINISHED"


def first_experiment(client: MlflowClient) -> str:
    return client.get_experiment_by_name("crisscross-quickstart").experiment_id


def test_resume_by_mlflow_run_id_finds_the_run_folder_and_config(run_cli, finished, monkeypatch):
    folder, _, first = finished
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first.tracking_uri)
    monkeypatch.chdir(folder / "runs")  # elsewhere: the run folder comes from the MLflow run
    result = run_cli("pretrain", "--resume", first.run_id)
    assert result.exit_code == 0, result.output
    assert f"already finished at step 6 (MLflow run {first.run_id})" in result.output
    unknown = run_cli("pretrain", "--resume", "0123456789abcdef")
    assert unknown.exit_code == 2
    assert "--resume 0123456789abcdef: no such run in the tracking store" in unknown.output


def test_changed_config_does_not_resume_silently(finished, synthetic):
    folder, _, _ = finished
    with pytest.raises(PretrainError, match=r"another config \(differs at: optim.lr\)"):
        run_pretrain(
            tiny(folder, synthetic, **_monitored(synthetic), **{"optim.lr": 0.1}),
            say=lambda _: None,
        )


class _TrainedError(Exception):
    """Raised in place of training: the launch got past every check."""


def test_resume_on_changed_data_is_refused_before_ray_with_what_changed(
    local_ray, tmp_path, monkeypatch
):
    from crisscross.datasets.synth import SynthSpec, synthesize
    from crisscross.platform.pretrain import job as pretrain

    root = tmp_path / "ks"
    synthesize("kinetics_sound", root, SynthSpec(classes=2, per_class=3, seconds=4.0))
    config = tiny(tmp_path, {"kinetics_sound": root})

    def launch(config):
        with pytest.raises(_TrainedError):
            run_pretrain(config, say=lambda _: None)

    def trained(*_args, **_kwargs):
        raise _TrainedError

    monkeypatch.setattr(pretrain, "train", trained)
    launch(config)  # the run folder's record now holds the epoch's rows
    record = json.loads((tmp_path / "runs" / "tiny" / "crisscross_run.json").read_text())
    assert record["data"]["rows"] == 6

    touched = sorted(root.glob("train/*/*.mp4"))[0]
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    added = touched.parent / "NEWCLIP0000_000010_000014.mp4"
    added.write_bytes(touched.read_bytes())
    listed = (root / "annotations" / "train.csv").read_text()
    label = touched.parent.name
    (root / "annotations" / "train.csv").write_text(listed + f"{label},NEWCLIP0000,10,14,train\n")

    real_ray = pretrain.tracking_and_ray
    monkeypatch.setattr(pretrain, "tracking_and_ray", lambda *a: pytest.fail("reached Ray"))
    with pytest.raises(PretrainError) as refused:
        run_pretrain(config, say=lambda _: None)
    message = str(refused.value)
    assert "started on other data (6 usable clips then, 7 now)" in message
    assert f"1 added (e.g. {added}); 1 changed (e.g. {touched})" in message
    assert "put the data back as it was" in message and "another run.name" in message

    monkeypatch.setattr(pretrain, "tracking_and_ray", real_ray)
    launch(tiny(tmp_path, {"kinetics_sound": root}, **{"run.name": "tiny-new-data"}))
    added.unlink()
    (root / "annotations" / "train.csv").write_text(listed)
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    launch(config)  # the data put back: the run resumes


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(
    local_ray, synthetic, tmp_path
):
    # Adam steps every weight by about lr: 1e30 makes them infinite, so step 2's loss is NaN
    config = tiny(
        tmp_path,
        synthetic,
        **{
            "optim.lr": 1e30,
            "optim.larc_clip": False,
            "optim.warmup_epochs": 0.0,
            "run.checkpoint_every": 1,
        },
    )
    with pytest.raises(
        RunFailedError, match=r"non-finite loss at step 2 .*checkpoint_step000000001"
    ):
        run_pretrain(config, say=lambda _: None)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("crisscross-quickstart").experiment_id]
    )
    assert run.info.status == "FAILED"
    assert "step 2" in run.data.tags["crisscross.stopped"]
    state = torch.load(
        tmp_path / "runs" / "tiny" / "checkpoint_step000000001" / STATE_FILE, weights_only=True
    )
    assert state["step"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())

    # Ray's snapshot of the run's checkpoints cut short (a crash or a full disk): refused with
    # its recovery before Ray starts; once moved aside, the run resumes from its checkpoint
    snapshot = tmp_path / "runs" / "tiny" / RAY_SNAPSHOT
    snapshot.write_text("")
    with pytest.raises(PretrainError) as refused:
        run_pretrain(config, say=lambda _: None)
    assert str(refused.value).startswith(f"{snapshot} (Ray Train's list of this run's")
    assert "(it is empty): a crash or a full disk while Ray wrote it" in str(refused.value)
    assert f"Move it aside (mv {snapshot} {snapshot}.broken)" in str(refused.value)
    snapshot.rename(f"{snapshot}.broken")
    latest = tmp_path / "runs" / "tiny" / "checkpoint_step000000001"
    written = (latest / STATE_FILE).stat().st_mtime_ns
    said: list[str] = []
    with pytest.raises(RunFailedError, match=r"non-finite loss at step 2 "):
        run_pretrain(config, say=said.append)
    assert f"resuming from its newest whole checkpoint, {latest}" in "\n".join(said)
    # resumed at step 1, its first step is step 2 (NaN): step 1 was not trained and saved again
    assert (latest / STATE_FILE).stat().st_mtime_ns == written


def test_tracker_drops_what_is_already_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    first = MlflowTracker(uri, run_id)
    first.open()
    for step in range(1, 6):
        first.log_metrics({"loss": step}, step)
    first.flush()
    again = MlflowTracker(uri, run_id)  # a restarted worker group, back at step 3
    again.open()
    for step in range(3, 8):
        again.log_metrics({"loss": 10 + step, "new": step}, step)
    again.flush()
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert loss == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 16), (7, 17)]
    assert history(client, run_id, "new") == [3, 4, 5, 6, 7]


@pytest.fixture
def short_clips(tmp_path_factory):
    """A Kinetics-Sound root whose clips are all shorter than a pretraining window."""
    from crisscross.datasets.synth import SynthSpec, synthesize

    root = tmp_path_factory.mktemp("short") / "ks"
    synthesize("kinetics_sound", root, SynthSpec(classes=2, per_class=2, seconds=0.6))
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "data.root is not set: give the dataset folder with --root DIR"),
        (("--root", "/no/such/dataset"), "data.root: /no/such/dataset: no such folder"),
        (
            ("--set", "optim.batch_size=256"),
            "optim.batch_size 256 is larger than the dataset: 15 usable clips x 8 repeats = 120",
        ),
        (
            ("--workers", "4", "--set", "run.cpus_per_worker=1"),
            "needs 4 CPUs; this Ray cluster has 2",
        ),
        (
            ("--set", "run.use_gpu=true"),
            "run.use_gpu is true with 2 workers, but this Ray cluster has 0 GPUs",
        ),
        (
            ("--set", "tracking.uri=http://127.0.0.1:9"),
            "tracking server http://127.0.0.1:9 is unreachable",
        ),
        (
            ("--set", "model.sync_batchnorm=true"),
            "model.sync_batchnorm needs GPU workers (torch's SyncBatchNorm is CUDA-only)",
        ),
        (
            ("--set", "monitor.video_root=/no/such/ucf"),
            "monitor.video_root: /no/such/ucf: no such folder",
        ),
    ],
)
def test_bad_input_is_reported_before_any_worker_starts(
    run_cli, local_ray, synthetic, tmp_path, args, message
):
    base = ["pretrain", str(QUICKSTART), "--set", f"run.output_dir={tmp_path / 'runs'}"]
    base += ["--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    if "--root" not in args and args != ():
        base += ["--root", str(synthetic["kinetics_sound"])]
    result = run_cli(*base, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # no run folder: nothing started


def test_no_usable_clips_is_reported_with_the_manifest_summary(
    run_cli, local_ray, short_clips, tmp_path
):
    result = run_cli(
        "pretrain",
        str(QUICKSTART),
        "--root",
        str(short_clips),
        "--set",
        f"run.output_dir={tmp_path / 'runs'}",
    )
    assert result.exit_code == 2, result.output
    assert "no usable clips for pretraining (4 files" in result.output
    assert "too_short" in result.output
    assert not (tmp_path / "runs").exists()
