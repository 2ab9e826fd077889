"""Run and sweep records survive faults: a failed write keeps the previous record, and an empty
or damaged one is a clear error naming the file, not a traceback at the next launch."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from crisscross.config import load_config
from crisscross.platform.pretrain.run_record import (
    RUN_RECORD,
    RecordError,
    read_record,
    write_record,
)

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"
DAMAGED = [b"", b'{"mlflow_run_id": "abc", "con', b"[1, 2]", b'{"config": {}}', b"\xff\xfe"]
IDS = ["empty", "cut short", "not an object", "no run id", "not UTF-8"]


def disk_full(*_args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_previous_record(tmp_path, monkeypatch):
    write_record(str(tmp_path), {"mlflow_run_id": "r1", "config": {}})
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_record(str(tmp_path), {"mlflow_run_id": "r1", "config": {}, "finished_step": 9})
    assert read_record(str(tmp_path)) == {"mlflow_run_id": "r1", "config": {}}
    assert [p.name for p in tmp_path.iterdir()] == [RUN_RECORD]


@pytest.mark.parametrize("content", DAMAGED, ids=IDS)
def test_a_damaged_run_record_is_named_when_the_run_is_launched_again(tmp_path, content):
    from crisscross.platform.pretrain.job import PretrainError, open_run

    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_RECORD).write_bytes(content)
    with pytest.raises(RecordError, match=re.escape(f"{run_dir / RUN_RECORD}: damaged (")):
        read_record(str(run_dir))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = load_config(QUICKSTART, {"run.name": "tiny", "run.output_dir": str(tmp_path)})
    with pytest.raises(PretrainError) as info:
        open_run(client, config, str(run_dir), "digest", "/m.parquet")
    message = str(info.value)
    assert message.startswith(f"{run_dir / RUN_RECORD}: damaged (")
    assert "delete the run folder to start the run again, or use another run.name" in message


def test_a_damaged_record_beside_a_checkpoint_is_a_source_error(tmp_path):
    from crisscross.platform.evaluation.sources import SourceError, resolve_pretrained

    checkpoint = tmp_path / "run" / "checkpoint_step000000003"
    checkpoint.mkdir(parents=True)
    torch.save({"model": {}}, checkpoint / "state.pt")
    (tmp_path / "run" / RUN_RECORD).write_bytes(b"")
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path / 'run' / RUN_RECORD}: damaged")):
        resolve_pretrained(
            str(checkpoint), modality="video", tracking_uri="sqlite:///x.db", scratch=str(tmp_path)
        )


@pytest.mark.parametrize("content", DAMAGED, ids=IDS)
def test_a_damaged_sweep_record_is_named(tmp_path, content):
    from crisscross.platform.sweep.run import RECORD, SweepError, read_sweep_record

    (tmp_path / RECORD).write_bytes(content)
    with pytest.raises(SweepError) as info:
        read_sweep_record(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path / RECORD}: damaged (")
    assert "delete the sweep folder to start the sweep again" in str(info.value)


def test_a_failed_sweep_record_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from crisscross.platform.sweep.run import RECORD, read_sweep_record, write_sweep_record

    write_sweep_record(str(tmp_path), {"mlflow_run_id": "p", "sweep": {}, "base": {}})
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_sweep_record(str(tmp_path), {"mlflow_run_id": "p", "finals": {"t": {}}})
    assert read_sweep_record(str(tmp_path)) == {"mlflow_run_id": "p", "sweep": {}, "base": {}}
    assert [p.name for p in tmp_path.iterdir()] == [RECORD]


def test_a_trial_ledger_entry_is_written_whole(tmp_path, monkeypatch):
    from crisscross.platform.sweep.trial import LEDGER, TrialEnd, TrialLedger

    ledger = TrialLedger(
        folder=str(tmp_path), runs_dir=str(tmp_path / "runs"), sweep="s", epochs=2,
        uri=f"sqlite:///{tmp_path / 'mlflow.db'}", metric="knn/mean",
    )  # fmt: skip
    ledger._record(TrialEnd("t1", "stopped", "first", 1, 0.5), status="KILLED")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        ledger._record(TrialEnd("t1", "failed", "second", 2, None), status="FAILED")
    folder = tmp_path / LEDGER
    assert json.loads((folder / "t1.json").read_text())["reason"] == "first"
    assert [p.name for p in folder.iterdir()] == ["t1.json"]


@pytest.mark.parametrize("content", [b"", b'{"pid": 12', b'{"uri": "http://h:5000"}'])
def test_a_damaged_tracking_server_state_file_is_named(tmp_path, content):
    from crisscross.platform.cluster.tracking_server import STATE_FILE, ServerError, stop_recorded

    (tmp_path / STATE_FILE).write_bytes(content)
    with pytest.raises(ServerError, match=re.escape(f"{tmp_path / STATE_FILE}: damaged (")):
        stop_recorded(str(tmp_path))


def test_relaunching_a_run_drops_the_end_its_server_never_took(tmp_path):
    """A run killed while its server was down kept its KILLED status for `crisscross sync`;
    launched again, it goes on RUNNING, so that end is dropped instead of sent later."""
    from crisscross.platform.pretrain.job import open_run
    from crisscross.platform.tracking import PENDING_CLOSE

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = load_config(QUICKSTART, {"run.name": "tiny", "run.output_dir": str(tmp_path)})
    run_dir = tmp_path / "tiny"
    run_id, _ = open_run(client, config, str(run_dir), "digest", "/m.parquet")
    assert read_record(str(run_dir))["mlflow_run_id"] == run_id
    (run_dir / PENDING_CLOSE).write_text(json.dumps({"run_id": run_id, "status": "KILLED"}))
    again, _ = open_run(client, config, str(run_dir), "digest", "/m.parquet")
    assert again == run_id and client.get_run(run_id).info.status == "RUNNING"
    assert not (run_dir / PENDING_CLOSE).exists()
