"""Pieces of the pretraining loop that need no Ray Train: resume bookkeeping, monitor splits,
the console line, the benchmark's timed loop."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from crisscross.bench.train_steps import TrainBenchSpec, synthetic_batch, timed_steps
from crisscross.config import load_config
from crisscross.datasets.manifest import build_manifest, read_manifest
from crisscross.datasets.pipeline import epoch_order
from crisscross.datasets.positions import DataPosition
from crisscross.trainers.monitor import MonitorSet, monitor_split
from crisscross.trainers.pretrain import Console, EpochMeter, Progress, stream_plan
from tests.conftest import REPO

QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"


def test_resumed_epoch_drops_exactly_the_rows_already_trained_on():
    """Each worker's plan of a resumed epoch is the epoch's order less the rows trained on, in
    order, every world-th from its rank, cut to whole batches (4 rows); the next epoch is whole."""
    table = pa.table({"path": [f"v{i}.mp4" for i in range(10)], "duration": [5.0] * 10})
    config = load_config(
        QUICKSTART,
        {"optim.batch_size": 8, "optim.repeats_per_epoch": 2, "optim.epochs": 2, "run.workers": 2},
    )
    rows = epoch_order(table, seed=config.run.seed, epoch=0, repeats=2)
    consumed = rows.column("index").to_numpy()[[0, 5, 7, 19]]
    progress = Progress(position=DataPosition.from_ids(consumed))
    kept = ~np.isin(rows.column("index").to_numpy(), consumed)
    left = rows.filter(pa.array(kept))  # the whole order less what was trained, listed
    for rank in (0, 1):
        plan = stream_plan(table, config, progress, first=0, rank=rank, world=2)
        assert plan.rows == {0: 16, 1: 20}
        shard = plan.shards[0]
        assert shard.equals(left.take(pa.array(np.arange(rank, 16, 2)[:8])))
        assert not set(shard.column("index").to_pylist()) & set(consumed.tolist())
        whole = epoch_order(table, seed=config.run.seed, epoch=1, repeats=2)
        assert plan.shards[1].equals(whole.take(pa.array(np.arange(rank, 20, 2)[:8])))


def test_checkpoint_position_restores_and_old_checkpoints_still_load(tmp_path, monkeypatch):
    """The checkpoint holds a data position (a few numbers), not the trained ids; one written
    before (its "consumed" ids) restores to the same position."""
    import shutil

    import ray.train
    import torch

    from crisscross.trainers.pretrain import Checkpointer, restore
    from crisscross.trainers.run_folder import STATE_FILE

    kept = tmp_path / "kept"

    def report(metrics, checkpoint=None, **_kw):
        shutil.copytree(checkpoint.path, kept)

    monkeypatch.setattr(ray.train, "report", report)
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    ids = np.setdiff1d(np.arange(100_000), [17, 900])
    Checkpointer(str(tmp_path / "run"), rank=0, world=1).save(
        module, optimizer, Progress(step=3), {"step": 3},
        position=DataPosition.from_ids(ids), name="checkpoint_step000000003",
    )  # fmt: skip
    state = torch.load(kept / STATE_FILE, weights_only=True)
    assert "consumed" not in state
    assert state["position"]["frontier"] == 100_000
    assert state["position"]["holes"].tolist() == [17, 900]
    assert (kept / STATE_FILE).stat().st_size < 1_000_000 - 2_000  # the model is 6 numbers
    checkpoint = ray.train.Checkpoint.from_directory(str(kept))
    assert (restore(checkpoint, module, optimizer).position.ids() == ids).all()
    old = {k: v for k, v in state.items() if k != "position"} | {"consumed": torch.from_numpy(ids)}
    torch.save(old, kept / STATE_FILE)
    assert (restore(checkpoint, module, optimizer).position.ids() == ids).all()


def test_monitor_splits_follow_the_official_protocols(synthetic):
    video = monitor_split(
        MonitorSet("ucf101", build_manifest("ucf101", str(synthetic["ucf101"])).path),
        max_files=1000,
    )
    table = read_manifest(build_manifest("ucf101", str(synthetic["ucf101"])).path).table
    test_paths = set(
        table.filter(pc.equal(table.column("fold1"), "test")).column("path").to_pylist()
    )
    assert {r["path"] for r in video[1]} == test_paths
    assert not {r["path"] for r in video[0]} & test_paths
    esc = build_manifest("esc50", str(synthetic["esc50"])).path
    train, test = monitor_split(MonitorSet("esc50", esc), max_files=1000)
    folds = dict(
        zip(*read_manifest(esc).table.select(["path", "fold"]).to_pydict().values(), strict=True)
    )
    assert {folds[r["path"]] for r in test} == {1}
    assert 1 not in {folds[r["path"]] for r in train}
    small_train, small_test = monitor_split(MonitorSet("esc50", esc), max_files=3)
    assert len(small_train) == 3 and len(small_test) == min(3, len(test))


def test_console_line_shows_rate_wait_and_eta():
    meter = EpochMeter()
    meter.add({"loss": -0.5}, samples=16, seconds=2.0, wait=0.5)
    console = Console(epochs=4, total_steps=40, start_step=0)
    console.started -= 10.0  # 10 s for 1 step: 39 steps left take 390 s
    line = console.line(0, Progress(step=1, epoch_step=1), 10, meter)
    assert "epoch 1/4 at step 1/10 (total 1)" in line
    assert "loss -0.5000 | 8.0 samples/s | data wait 25%" in line
    assert "ETA 0:06:30" in line or "ETA 0:06:29" in line
    done = console.line(
        0, Progress(step=1), 10, meter, summary={"knn/video": 0.5, "epoch/skipped": 2}
    )
    assert "done, 1 steps" in done and "2 samples skipped" in done and "kNN video 0.500" in done


def test_timed_steps_runs_the_pretext_step_on_a_fixed_batch():
    config = load_config(
        QUICKSTART,
        {
            "data.crop_size": 16,
            "data.frames": 2,
            "data.n_mels": 16,
            "data.audio_seconds": 0.5,
            "model.video_width": 2,
            "model.audio_width": 2,
        },
    )
    batch = synthetic_batch(config, 4)
    assert batch["v1"].shape == (4, 2, 3, 16, 16) and batch["v1"].dtype.is_floating_point is False
    assert batch["a1"].shape == (4, 1, 16, 51)
    spec = TrainBenchSpec(
        config=config.model_dump(by_alias=True), batch=4, steps=2, windows=3, warmup=1
    )
    out = timed_steps(spec)
    assert len(out["window_sps"]) == 3 and out["samples_per_s"] in out["window_sps"]
    assert abs(out["samples_per_s"] * out["step_s"] - 4) < 1e-6


def test_monitor_probe_reports_a_logistic_probe_beside_knn(synthetic):
    import torch

    from crisscross.models import CrissCross, create_backbone
    from crisscross.trainers.monitor import KnnMonitor
    from crisscross.trainers.svm import logistic_probe

    esc = build_manifest("esc50", str(synthetic["esc50"])).path
    overrides = {"data.n_mels": 40, "monitor.clips": 1, "monitor.probe": True}
    config = load_config(QUICKSTART, overrides)
    monitor = KnnMonitor([MonitorSet("esc50", esc)], config)
    model = CrissCross(
        create_backbone("r2plus1d_18", width=4),
        create_backbone("resnet18_audio", width=4),
        projector_dim=16,
        predictor_hidden=8,
    )
    scores = monitor(model, torch.device("cpu"))
    assert set(scores) == {"knn/audio", "probe/audio"}
    from crisscross.trainers.features import extract_features

    (train_rows, test_rows), sample = monitor.splits["audio"], monitor.samplers["audio"]
    kw = {"sample": sample, "key": "audio", "device": torch.device("cpu")}
    train, train_y = extract_features(model.audio.eval(), train_rows, **kw)
    test, test_y = extract_features(model.audio, test_rows, **kw)
    predicted = logistic_probe(train.numpy(), train_y.numpy(), test.numpy())
    assert scores["probe/audio"] == float((predicted == test_y.numpy()).mean())
    kinetics = load_config(QUICKSTART.with_name("kinetics_sound.yaml"))
    assert kinetics.monitor.probe is False  # off unless asked for (the quickstart asks)


def test_best_checkpoint_is_swapped_in_whole_or_kept(tmp_path, monkeypatch):
    """best/ gets each new best whole; a full disk while copying one keeps the previous best/."""
    import os
    from pathlib import Path

    import ray.train
    import torch

    from crisscross.trainers.pretrain import Checkpointer
    from crisscross.trainers.run_folder import BEST_DIR, STATE_FILE

    reported = []
    monkeypatch.setattr(ray.train, "report", lambda metrics, **kw: reported.append(metrics))
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    saver = Checkpointer(str(tmp_path / "run"), rank=0, world=1)

    def save(step: int) -> None:
        progress = Progress(step=step, best=float(step))
        saver.save(
            module, optimizer, progress, {"step": step},
            position=DataPosition.from_ids(np.arange(2)), name=f"checkpoint_step{step:09d}",
            is_best=True,
        )  # fmt: skip

    def best_step() -> int:
        best = tmp_path / "run" / BEST_DIR
        return torch.load(best / STATE_FILE, weights_only=True)["step"]

    save(1)
    save(2)
    assert best_step() == 2 and len(reported) == 2

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the disk fills while best/ is written
    with pytest.raises(OSError, match="No space left"):
        save(3)
    assert best_step() == 2
    assert sorted(p.name for p in Path(tmp_path / "run").iterdir()) == [BEST_DIR]


class _Calls:
    """Records the order in which the loop calls its tracker and its checkpointer."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.order.append(name)


def test_a_checkpoint_is_written_before_the_metrics_are_sent():
    """A tracking server that hangs must not delay a checkpoint: the loop persists the metrics
    (a local journal), saves, and only then flushes to the server."""
    from crisscross.datasets.positions import ShardProgress
    from crisscross.trainers.worker_loop import WorkerLoop

    calls = _Calls()
    loop = object.__new__(WorkerLoop)
    loop.tracker = loop.checkpointer = loop.signals = calls
    calls.fresh_notice = calls.at_last_call = False
    loop.progress, loop.last_loss = Progress(step=7), 1.0
    loop.trained, loop.total, loop.world = ShardProgress(np.arange(4)), 8, 1
    loop.module = loop.optimizer = None
    loop._checkpoint()
    assert calls.order == ["persist", "save", "saved", "flush"]

    from types import SimpleNamespace

    calls.order.clear()  # the end of an epoch: its summary logged, then the same order
    loop.rank, loop.device, loop.monitor, loop.baseline = 0, None, None, {}
    loop.failure_log = loop.console = calls
    loop.config = SimpleNamespace(optim=SimpleNamespace(epochs=3))
    loop.meter = SimpleNamespace(summary=lambda: {"epoch/loss": 0.5})
    loop.epoch_steps, loop.say = 4, lambda text: None
    loop.end_epoch(0, SimpleNamespace(skipped={0: 0}))
    assert calls.order == ["drain", "log_metrics", "persist", "save", "saved", "flush", "line"]
