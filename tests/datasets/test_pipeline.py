"""The Ray Data pipeline and the torch Dataset over the same per-sample function."""

from __future__ import annotations

import itertools
import shutil
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import torch
from ray.data._internal.execution.execution_callback import ExecutionCallback

from crisscross.datasets import pipeline
from crisscross.datasets.epochs import MAX_TASKS, TASK_ROWS
from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.pipeline import (
    DecodeResources,
    EpochBatcher,
    FailureLogRef,
    PretextTorchDataset,
    arrow_dataset,
    collate_skipping_failures,
    epoch_dataset,
    epoch_order,
    iter_batches,
    pretext_epoch,
    usable_rows,
)
from crisscross.datasets.samples import ClipSpec, DeviceAugment, PretextSample
from crisscross.datasets.transforms.video import PHOTO

SPEC = ClipSpec(crop_size=48, short_side=56)


@pytest.fixture(scope="module")
def broken_after_probe(synthetic, tmp_path_factory):
    """A manifest whose first usable file is damaged after probing: fails only at decode time."""
    root = tmp_path_factory.mktemp("pipe") / "ks"
    shutil.copytree(synthetic["kinetics_sound"], root)
    manifest = build_manifest("kinetics_sound", str(root), out=str(root / "m.parquet")).manifest
    victim = usable_rows(manifest, SPEC).column("path")[0].as_py()
    with open(victim, "r+b") as handle:
        handle.truncate(3000)
    return manifest, victim


def test_epoch_order_is_a_seeded_shuffle_with_repeats(broken_after_probe):
    manifest, _ = broken_after_probe
    rows = usable_rows(manifest, SPEC)
    first = epoch_order(rows, seed=1, epoch=0, repeats=2)
    assert first.num_rows == 2 * rows.num_rows
    assert sorted(first.column("path").to_pylist()) == sorted(rows.column("path").to_pylist() * 2)
    assert first.column("index").to_pylist() == list(range(first.num_rows))
    assert first.equals(epoch_order(rows, seed=1, epoch=0, repeats=2))
    assert not first.equals(epoch_order(rows, seed=1, epoch=1, repeats=2))


def test_ray_data_batches_skip_and_report_failures(local_ray, broken_after_probe):
    manifest, victim = broken_after_probe
    log = FailureLogRef.create()
    for epoch in range(2):  # the run's log outlives each epoch's dataset
        data = pretext_epoch(
            manifest,
            spec=SPEC,
            epoch=epoch,
            failure_log=log,
            resources=DecodeResources(workers=2, rows_per_task=2),
        )
        batches = list(iter_batches(data, 4, drop_last=False))
        assert sum(b["v1"].shape[0] for b in batches) == data.rows - 1
        first = batches[0]
        assert first["v1"].dtype == torch.uint8 and tuple(first["v1"].shape[1:]) == (8, 3, 48, 48)
        # augment_on: device (the default): 16 kHz waveforms and each view's draws
        assert first["a1"].dtype == torch.float32 and tuple(first["a1"].shape[1:]) == (32000,)
        assert {k: tuple(first[k].shape[1:]) for k in ("v1_aug", "v2_aug", "a2_aug")} == {
            "v1_aug": (len(PHOTO),),
            "v2_aug": (len(PHOTO),),
            "a2_aug": (13,),  # gain, 2 x 2 masks (width, start), crop box
        }
        v1, _, a1, _ = DeviceAugment(SPEC)(first, torch.device("cpu"))
        assert v1.shape[1:] == (3, 8, 48, 48) and a1.shape[1:] == (1, 80, 201)
        failures = data.failures()
        assert [(f.path, f.epoch) for f in failures] == [(victim, epoch)]
        assert "Invalid data found" in failures[0].reason


def test_ray_data_matches_the_per_sample_function(local_ray, synthetic, tmp_path):
    ks = build_manifest(
        "kinetics_sound", str(synthetic["kinetics_sound"]), out=str(tmp_path / "k.parquet")
    ).manifest
    data = pretext_epoch(
        ks, spec=SPEC, epoch=3, seed=5, resources=DecodeResources(workers=1, rows_per_task=1)
    )
    # Ray Data does not preserve order; compare each batch with the row its `index` names
    rows = epoch_order(usable_rows(ks, SPEC), seed=5, epoch=3).to_pylist()
    sample = PretextSample(SPEC, seed=5)
    seen = set()
    for got in itertools.islice(data.dataset.iter_batches(batch_size=1), 3):
        index = int(got["index"][0])
        expected = sample(rows[index], epoch=3, index=index)
        assert all(np.array_equal(got[k][0], expected[k]) for k in expected), index
        seen.add(index)
    assert len(seen) == 3


def test_torch_dataset_skips_failures(broken_after_probe):
    manifest, _ = broken_after_probe
    rows = epoch_order(usable_rows(manifest, SPEC), seed=0, epoch=0)
    dataset = PretextTorchDataset(rows, PretextSample(SPEC))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=len(dataset), collate_fn=collate_skipping_failures
    )
    batch = next(iter(loader))
    assert int(batch["failed"]) == 1 and batch["v1"].shape[0] == len(dataset) - 1


def test_a_sample_past_its_time_limit_is_skipped_with_its_reason(broken_after_probe, caplog):
    manifest, _ = broken_after_probe
    rows = epoch_order(usable_rows(manifest, SPEC), seed=0, epoch=0).slice(0, 3)
    dataset = PretextTorchDataset(rows, PretextSample(replace(SPEC, time_limit=1e-6)))
    with caplog.at_level("WARNING"):
        batch = collate_skipping_failures([dataset[i] for i in range(len(dataset))])
    assert int(batch["failed"]) == 3
    reasons = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(reasons) == 3 and all("took over the time limit of 1e-06 s" in r for r in reasons)


def test_forked_dataloader_workers_do_not_hang_after_the_parent_decoded(synthetic, tmp_path):
    """swscale state inherited through fork() once hung every DataLoader worker."""
    import subprocess
    import sys
    import textwrap

    manifest_path = tmp_path / "m.parquet"
    build_manifest("kinetics_sound", str(synthetic["kinetics_sound"]), out=str(manifest_path))
    script = textwrap.dedent(f"""
        import torch
        from crisscross.datasets.manifest import read_manifest
        from crisscross.datasets.pipeline import (PretextTorchDataset, collate_skipping_failures,
                                                  epoch_order, usable_rows)
        from crisscross.datasets.samples import ClipSpec, PretextSample
        spec = ClipSpec(crop_size=48, short_side=56)
        rows = epoch_order(usable_rows(read_manifest({str(manifest_path)!r}), spec), seed=0, epoch=0)
        sample = PretextSample(spec)
        sample(rows.to_pylist()[0], epoch=0, index=0)  # the parent decodes first
        loader = torch.utils.data.DataLoader(PretextTorchDataset(rows, sample), batch_size=4,
                                             num_workers=2, collate_fn=collate_skipping_failures)
        print(sum(batch["v1"].shape[0] for batch in loader))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip().splitlines()[-1]) == 15


def test_failure_summary():
    from crisscross.datasets.pipeline import Failure, failure_summary

    assert failure_summary([], epoch=2) == "epoch 2: no sample skipped"
    failures = [Failure(f"/d/{i}.mp4", "InvalidDataError: bad", 2) for i in range(7)]
    line = failure_summary(failures, epoch=2)
    assert line.startswith(
        "epoch 2: 7 sample(s) skipped, failing to decode: /d/0.mp4 (InvalidDataError: bad)"
    )
    assert line.endswith("; and 2 more")


def _rows(epoch: int, indices: list[int], failed: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """A source batch as the decode actors make it with keep_failed: rows, epoch, ok."""
    index = torch.tensor(indices)
    return {
        "v1": index.float()[:, None] + 1000 * epoch,  # a stand-in view that names its row
        "index": index,
        "epoch": torch.full((len(indices),), epoch),
        "ok": torch.tensor([i not in failed for i in indices]),
    }


def _indices(batches) -> list[list[int]]:
    return [b["index"].tolist() for b in batches]


def test_epoch_batcher_cuts_each_epoch_into_full_batches_of_the_samples_that_decoded():
    source = [
        _rows(0, [0, 1, 2, 3]),
        _rows(0, [4, 5, 6, 7], failed=(5,)),
        _rows(0, [8, 9]),  # the epoch's last rows arrive in a short batch
        _rows(1, [0, 1, 2, 3, 4, 5, 6]),
    ]
    batcher = EpochBatcher(iter(source), {0: 10, 1: 7}, batch_size=4)
    first = list(batcher.batches(0))
    # 9 rows decoded: 2 full batches, the 9th row dropped as drop_last would; row 5 skipped
    assert _indices(first) == [[0, 1, 2, 3], [4, 6, 7, 8]]
    assert first[1]["v1"].tolist() == [[4.0], [6.0], [7.0], [8.0]]  # views follow their rows
    assert "epoch" not in first[0] and "ok" not in first[0]
    assert _indices(batcher.batches(1)) == [[0, 1, 2, 3]]
    assert batcher.skipped == {0: 1, 1: 0}


def test_epoch_batcher_waits_for_late_rows_and_keeps_early_ones_for_their_epoch():
    """Ray Data without preserve_order: a later epoch's rows may come before an epoch ends."""
    source = [
        _rows(0, [0, 1, 2]),
        _rows(1, [0, 1, 2, 3]),
        _rows(0, [3, 4, 5]),
        _rows(1, [4, 5, 6, 7]),
    ]
    batcher = EpochBatcher(iter(source), {0: 6, 1: 8}, batch_size=3)
    assert _indices(batcher.batches(0)) == [[0, 1, 2], [3, 4, 5]]
    assert _indices(batcher.batches(1)) == [[0, 1, 2], [3, 4, 5]]  # 6, 7: a partial batch


def test_epoch_batcher_drops_what_is_left_of_an_epoch_another_worker_ended():
    source = [_rows(0, [0, 1]), _rows(0, [2, 3]), _rows(0, [4, 5]), _rows(1, [0, 1])]
    batcher = EpochBatcher(iter(source), {0: 6, 1: 2}, batch_size=2)
    epoch0 = batcher.batches(0)
    assert _indices([next(epoch0)]) == [[0, 1]]  # the workers agreed to end the epoch here
    assert _indices(batcher.batches(1)) == [[0, 1]]
    with pytest.raises(ValueError, match="not ahead"):
        next(batcher.batches(0))


def test_one_pipeline_decodes_consecutive_epochs_cut_back_into_their_batches(
    local_ray, broken_after_probe
):
    """Two epochs through one EpochStream: each epoch gets the full batches of its own rows
    that decoded (the damaged file counted as skipped in each), and the decode actors started
    once for both (the same process ids), not once per epoch."""
    from crisscross.datasets.pipeline import EpochStream

    manifest, victim = broken_after_probe
    table = usable_rows(manifest, SPEC)
    shards = {e: epoch_order(table, seed=2, epoch=e) for e in (0, 1)}
    log = FailureLogRef.create()
    stream = EpochStream(
        shards,
        spec=SPEC,
        seed=2,
        resources=DecodeResources(workers=1, rows_per_task=2),
        failure_log=log,
        batch_size=4,
        device=torch.device("cpu"),
    )
    for epoch, rows in shards.items():
        batches = list(stream.batches(epoch))
        good = [i for i, p in enumerate(rows.column("path").to_pylist()) if p != victim]
        assert len(batches) == len(good) // 4
        seen = sorted(i for b in batches for i in b["index"].tolist())
        assert set(seen) <= set(good) and len(seen) == 4 * (len(good) // 4)
        assert stream.skipped[epoch] == rows.num_rows - len(good) == 1
    assert len(log.peak_rss_mib()) == 1  # one decode actor process for both epochs


def test_a_stream_starts_when_less_than_a_cpu_is_free(local_ray):
    """The other workers and their decode actors may hold all but half a CPU: the dataset of a
    worker's rows must still start, with every block and row (from_arrow's metadata tasks, one
    whole CPU each, waited forever there)."""

    @local_ray.remote(num_cpus=1.5)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    local_ray.get(holder.ready.remote())
    try:
        rows = pa.table({"index": list(range(100)), "audio_path": [None, "a.npy"] * 50})
        dataset = arrow_dataset(rows, 7)
        assert dataset.num_blocks() == 7
        got = dataset.take_all()
        assert [r["index"] for r in got] == list(range(100))
        assert [r["audio_path"] for r in got[:2]] == [None, "a.npy"]
    finally:
        local_ray.kill(holder)


def test_decode_tasks_grow_with_a_share_so_that_a_pipeline_holds_at_most_max_tasks():
    assert DecodeResources().task_rows(100) == TASK_ROWS == 8
    assert DecodeResources().task_rows(MAX_TASKS * 8) == 8
    assert DecodeResources().task_rows(MAX_TASKS * 8 + 1) == 9
    assert DecodeResources().task_rows(521_472) == 64  # a worker's AudioSet share, 16 workers
    assert DecodeResources(rows_per_task=2).task_rows(10**7) == 2  # set: taken as it is
    for rows in (1, 7, 65_536, 65_537, 10**6, 9_000_000):
        assert -(-rows // DecodeResources().task_rows(rows)) <= MAX_TASKS


def test_a_large_share_is_built_in_blocks_of_task_rows(local_ray, monkeypatch):
    """epoch_dataset cuts its rows into one block per decode task of `task_rows` rows."""
    built = []

    def spy(rows: pa.Table, blocks: int):
        built.append((rows.num_rows, blocks))
        return arrow_dataset(rows.slice(0, 4), 1)  # the pipeline is not run

    monkeypatch.setattr(pipeline, "arrow_dataset", spy)
    rows = pa.table({"path": ["x.mp4"] * 100_000, "index": range(100_000)})
    epoch_dataset(rows, spec=SPEC)
    epoch_dataset(rows, spec=SPEC, resources=DecodeResources(rows_per_task=8))
    assert built == [(100_000, -(-100_000 // 13)), (100_000, 12_500)]


def test_a_missing_prepared_audio_file_is_skipped_and_recorded(local_ray, synthetic, tmp_path):
    """A prepared copy whose .audio.npy went missing: that sample is skipped and recorded with
    its path and reason, like a clip that fails to decode; the Ray Data task goes on."""
    from crisscross.datasets.pipeline import PretextDecoder

    ks = build_manifest(
        "kinetics_sound", str(synthetic["kinetics_sound"]), out=str(tmp_path / "k.parquet")
    ).manifest
    rows = epoch_order(usable_rows(ks, SPEC), seed=0, epoch=0).slice(0, 3).to_pylist()
    missing = str(tmp_path / "gone.audio.npy")
    rows[1]["audio_path"] = missing
    batch = {key: np.asarray([row[key] for row in rows], dtype=object) for key in rows[0]}
    log = FailureLogRef.create()
    out = PretextDecoder(SPEC, 0, log.name)(batch)
    assert out["index"].tolist() == [rows[0]["index"], rows[2]["index"]]
    failures = log.drain()
    assert [(f.path, f.epoch) for f in failures] == [(rows[1]["path"], 0)]
    assert f"{missing}: FileNotFoundError" in failures[0].reason


class _Poisoned(PretextSample):
    """The per-sample function, raising for the paths in `poison` as a poison file would."""

    def __init__(self, spec: ClipSpec, poison: dict[str, BaseException]) -> None:
        super().__init__(spec, seed=0)
        self.poison = poison

    def __call__(self, row, *, epoch, index):
        if str(row["path"]) in self.poison:
            raise self.poison[str(row["path"])]
        return super().__call__(row, epoch=epoch, index=index)


def test_any_exception_of_a_sample_is_skipped_and_recorded_and_the_task_goes_on(
    local_ray, synthetic, tmp_path
):
    """Not only DecodeError: a missing file, a decoder's RuntimeError, a MemoryError of a huge
    frame skip their sample, recorded with path and reason, in a decode task (the actor's call)
    and in the torch Dataset."""
    from crisscross.datasets.pipeline import PretextDecoder

    ks = build_manifest(
        "kinetics_sound", str(synthetic["kinetics_sound"]), out=str(tmp_path / "k.parquet")
    ).manifest
    rows = epoch_order(usable_rows(ks, SPEC), seed=0, epoch=0).slice(0, 5).to_pylist()
    paths = [row["path"] for row in rows]
    poisoned = _Poisoned(
        SPEC,
        {
            paths[0]: FileNotFoundError(2, "No such file or directory", paths[0]),
            paths[2]: RuntimeError("decoder crashed\nsecond line"),
            paths[3]: MemoryError("frame of 8192x8192"),
        },
    )
    batch = {key: np.asarray([row[key] for row in rows], dtype=object) for key in rows[0]}
    log = FailureLogRef.create()
    decoder = PretextDecoder(SPEC, 0, log.name)
    decoder.sample = poisoned
    out = decoder(batch)
    assert out["index"].tolist() == [rows[1]["index"], rows[4]["index"]]
    assert out["v1"].shape[0] == 2
    assert {f.path: f.reason for f in log.drain()} == {
        paths[0]: f"FileNotFoundError: [Errno 2] No such file or directory: '{paths[0]}'",
        paths[2]: "RuntimeError: decoder crashed",
        paths[3]: "MemoryError: frame of 8192x8192",
    }
    dataset = PretextTorchDataset(pa.Table.from_pylist(rows), poisoned)
    batch = collate_skipping_failures([dataset[i] for i in range(len(dataset))])
    assert int(batch["failed"]) == 3 and batch["v1"].shape[0] == 2


class _CountSteps(ExecutionCallback):
    """Counts the scheduling loop's steps, and whether any ran under output backpressure."""

    steps = 0
    backpressured = False

    def on_execution_step(self, executor) -> None:
        _CountSteps.steps += 1
        _CountSteps.backpressured |= any(
            op._in_task_output_backpressure  # what PauseWhileBackpressured reads
            for op in executor._topology
        )


def _fat_rows(batch):
    return {"i": batch["i"], "x": np.ones((len(batch["i"]), 256, 1024), np.uint8)}  # 256 KB


def test_the_scheduling_loop_pauses_while_the_decoders_are_ahead(local_ray):
    """With a consumer slower than the map and a small object-store budget, the map comes under
    output backpressure; Ray Data's loop then spun at about 550 steps/s here without
    PauseWhileBackpressured, and runs at about 25 with it."""
    context = local_ray.data.DataContext.get_current()
    saved = (
        context.execution_options.resource_limits,
        list(context.custom_execution_callback_classes),
    )
    context.execution_options.resource_limits = saved[0].copy(object_store_memory=64 * 2**20)
    context.custom_execution_callback_classes.append(_CountSteps)
    try:
        dataset = arrow_dataset(pa.table({"i": np.arange(2000)}), 250).map_batches(
            _fat_rows, batch_size=8
        )
        batches = iter(dataset.iter_batches(batch_size=8))
        next(batches)
        time.sleep(2)  # the map runs ahead until the budget holds it back
        _CountSteps.steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 4:
            next(batches)
            time.sleep(0.1)
        rate = _CountSteps.steps / (time.perf_counter() - start)
    finally:
        context.execution_options.resource_limits = saved[0]
        context.custom_execution_callback_classes[:] = saved[1]
    assert _CountSteps.backpressured  # the case the pause is for did occur
    assert rate < 100, f"{rate:.0f} scheduling steps/s"


def _process_killer(victim: str) -> type:
    """A decoder whose process ends (as a decoder's segfault ends it) when it decodes `victim`;
    defined in a function, so Ray ships the class by value to its actors."""
    import os

    from crisscross.datasets.pipeline import PretextDecoder

    class KillsItsProcess(PretextDecoder):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            decode = self.sample

            def sample(row, *, epoch, index):
                if str(row["path"]) == victim:
                    os._exit(1)
                return decode(row, epoch=epoch, index=index)

            self.sample = sample
            self.sample.empty = decode.empty

    return KillsItsProcess


def test_a_file_that_kills_its_decode_actor_is_quarantined_and_the_epoch_goes_on(
    local_ray, synthetic, tmp_path
):
    """The actor restarts (a finite number of times), the file it was decoding is quarantined
    and recorded with its reason, every other row arrives, and the run folder keeps it for a
    later worker group; with no restarts allowed the pipeline fails instead of retrying
    without end (Ray Data's default)."""
    from crisscross.datasets.pipeline import epoch_dataset

    ks = build_manifest(
        "kinetics_sound", str(synthetic["kinetics_sound"]), out=str(tmp_path / "k.parquet")
    ).manifest
    rows = epoch_order(usable_rows(ks, SPEC), seed=0, epoch=0).slice(0, 6)
    victim = rows.column("path")[3].as_py()
    indices = rows.column("index").to_pylist()
    quarantined = "QuarantinedError: it crashed a decode actor before: not opened again"

    def epoch(log: FailureLogRef, restarts: int):
        return epoch_dataset(
            rows,
            spec=SPEC,
            failure_log=log,
            resources=DecodeResources(workers=1, rows_per_task=2, restarts=restarts),
            decoder=_process_killer(victim),
        ).dataset.iter_batches(batch_size=None)

    run = tmp_path / "run"
    log = FailureLogRef.create(storage=str(run), rank=1)
    got = sorted(int(i) for b in epoch(log, restarts=2) for i in b["index"])
    assert got == sorted(indices[:3] + indices[4:])
    assert [(f.path, f.reason) for f in log.drain()] == [(victim, quarantined)]
    assert (run / "crisscross_quarantine_rank1.txt").read_text() == f"{victim}\n"

    # a later worker group of the run (a restart, the next launch): the file is not opened again
    later = FailureLogRef.create(storage=str(run), rank=0)
    assert later.quarantined() == {victim}
    got = sorted(int(i) for b in epoch(later, restarts=0) for i in b["index"])
    assert got == sorted(indices[:3] + indices[4:])
    assert [f.reason for f in later.drain()] == [quarantined]
    local_ray.get(later.handle.quarantine.remote("/data/another.mp4"))  # this group's own
    kept = (run / "crisscross_quarantine_rank0.txt").read_text().splitlines()
    assert kept == sorted([victim, "/data/another.mp4"])  # the earlier group's kept too

    with pytest.raises(Exception, match=r"(?i)actor|died|worker"):
        list(epoch(FailureLogRef.create(), restarts=0))
