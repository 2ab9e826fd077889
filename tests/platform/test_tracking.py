"""Tracking under faults: a fresh sqlite store opened by several processes at once, a server
that is down at the start or stops answering mid-run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from crisscross.platform import tracking
from crisscross.platform.journal import JOURNAL_FILE, MetricJournal
from crisscross.platform.tracking import WORKER_HTTP, MlflowTracker, close_run
from tests.conftest import REPO

CHECK = """
import sys
from crisscross.platform.tracking import check_tracking
check_tracking(sys.argv[1])
print("ok")
"""
OPEN = """
import sys
from mlflow.tracking import MlflowClient
MlflowClient(sys.argv[1]).search_experiments(max_results=1)
print("ok")
"""


def _at_once(script: str, uri: str, n: int = 3) -> list[subprocess.CompletedProcess]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, uri],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    return [
        subprocess.CompletedProcess(c.args, c.wait(timeout=120), *c.communicate()) for c in children
    ]


def test_three_processes_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    """Without the lock, all but one fail in MLflow's schema migration (`table experiments
    already exists`) and the store is left half-made."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for done in _at_once(CHECK, uri):
        assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("Default") is not None  # a whole, usable store


def test_workers_open_a_store_the_driver_created(tmp_path):
    """The driver's check creates the store; workers then open it at once without migrating."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-c", CHECK, uri], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "ok"
    for done in _at_once(OPEN, uri):
        assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def _down_uri() -> str:
    """An http:// tracking URI where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def worker_env(monkeypatch):
    """No MLflow HTTP settings in the environment, and whatever a test sets undone after it."""
    for key in WORKER_HTTP:
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


def test_server_down_on_a_worker_costs_seconds_and_journals_the_metrics(tmp_path, worker_env):
    """MLflow's defaults (7 retries with backoff) make one flush take minutes, then raise and kill
    the worker; a worker fails fast instead, and keeps the metrics in the run folder."""
    journal = tmp_path / "run" / JOURNAL_FILE
    tracker = MlflowTracker(_down_uri(), "r1", flush_seconds=0.0, journal=str(journal))
    start = time.monotonic()
    tracker.open()  # the run's history cannot be read: training starts anyway
    for step in (1, 2, 3):
        tracker.log_metrics({"loss": 10.0 + step, "lr/video": 0.1}, step)
    tracker.flush()
    assert time.monotonic() - start < 30
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        == WORKER_HTTP["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    )
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted((d["key"], d["step"], d["value"]) for d in lines) == [
        ("loss", 1, 11.0),
        ("loss", 2, 12.0),
        ("loss", 3, 13.0),
        ("lr/video", 1, 0.1),
        ("lr/video", 2, 0.1),
        ("lr/video", 3, 0.1),
    ]


def _store_with_run(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_run(client.create_experiment("t")).info.run_id


def _steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_journal_is_replayed_exactly_once_by_the_next_open(tmp_path, worker_env):
    uri, client, run_id = _store_with_run(tmp_path)
    journal = MetricJournal(str(tmp_path / JOURNAL_FILE))
    journal.append(Metric("loss", float(s), 0, s) for s in (1, 2, 3))
    journal.append([Metric("loss", 2.0, 0, 2)])  # a restarted worker group journaled it again
    client.log_metric(run_id, "loss", 1.0, step=1)  # a replay cut short had sent step 1
    tracker = MlflowTracker(uri, run_id, journal=journal.path)
    tracker.open()
    assert _steps(client, run_id, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert not Path(journal.path).exists()
    tracker.log_metrics({"loss": 3.5}, 3)  # stored now: dropped, as after any restart
    tracker.log_metrics({"loss": 4.0}, 4)
    tracker.flush()
    assert _steps(client, run_id, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]


def test_outage_mid_run_loses_and_repeats_nothing(tmp_path, worker_env, monkeypatch):
    """The server stops answering for two flushes (an injected fault), then answers again."""
    uri, client, run_id = _store_with_run(tmp_path)
    monkeypatch.setattr(tracking, "RETRY_SECONDS", 0.0)
    tracker = MlflowTracker(uri, run_id, flush_seconds=0.0, journal=str(tmp_path / JOURNAL_FILE))
    tracker.open()
    real = tracker._client.log_batch
    now = {"step": 0, "refused": 0}

    def flaky(*args, **kwargs):
        if now["step"] in (3, 4):
            now["refused"] += 1
            raise MlflowException("API request failed: Connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker._client, "log_batch", flaky)
    for step in range(1, 7):
        now["step"] = step
        tracker.log_metrics({"loss": float(step)}, step)  # flushes: flush_seconds is 0
        assert (tmp_path / JOURNAL_FILE).exists() == (step in (3, 4))
    assert now["refused"] == 2
    assert _steps(client, run_id, "loss") == [(s, float(s)) for s in range(1, 7)]
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_final_status_with_the_server_down_is_a_sentence_not_a_traceback(worker_env):
    uri = _down_uri()
    start = time.monotonic()
    note = close_run(MlflowClient(uri), "r1", "KILLED", {"crisscross.stopped": "SIGTERM"})
    assert time.monotonic() - start < 30
    assert note.startswith(
        f" (MLflow run r1 still shows RUNNING, not KILLED: the tracking server {uri} did not answer"
    )


def test_metrics_persisted_before_a_checkpoint_survive_a_crash_and_arrive_once(
    tmp_path, worker_env, monkeypatch
):
    """The loop persists, checkpoints, then flushes: a worker that dies between the checkpoint
    and the flush leaves the metrics in the journal, and the next open sends them once; a flush
    that succeeds removes the copy; one that fails keeps everything for the replay."""
    uri, client, run_id = _store_with_run(tmp_path)
    journal = tmp_path / JOURNAL_FILE
    tracker = MlflowTracker(uri, run_id, flush_seconds=3600.0, journal=str(journal))
    tracker.open()
    for step in (1, 2):
        tracker.log_metrics({"loss": float(step)}, step)
    tracker.persist()
    assert [json.loads(line)["step"] for line in journal.read_text().splitlines()] == [1, 2]
    assert _steps(client, run_id, "loss") == []  # persist never talks to the server
    tracker.flush()
    assert _steps(client, run_id, "loss") == [(1, 1.0), (2, 2.0)]
    assert not journal.exists()

    tracker.log_metrics({"loss": 3.0}, 3)
    tracker.persist()
    del tracker  # the worker dies after its checkpoint, before the flush
    again = MlflowTracker(uri, run_id, flush_seconds=3600.0, journal=str(journal))
    again.open()
    assert _steps(client, run_id, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert not journal.exists()

    monkeypatch.setattr(tracking, "RETRY_SECONDS", 0.0)
    real, down = again._client.log_batch, {"now": True}

    def flaky(*args, **kwargs):
        if down["now"]:
            raise MlflowException("API request failed: Connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(again._client, "log_batch", flaky)
    again.log_metrics({"loss": 4.0}, 4)
    again.persist()
    again.flush()  # refused: the copy and the buffer both wait in the journal
    again.log_metrics({"loss": 5.0}, 5)
    again.persist()
    down["now"] = False
    again.flush()
    assert _steps(client, run_id, "loss") == [(s, float(s)) for s in range(1, 6)]
    assert not journal.exists()


def test_an_end_the_server_did_not_take_is_kept_and_synced_once_it_answers(
    tmp_path, worker_env, run_cli
):
    """A run stopped while its server was down: close_run keeps the status (and the tags) in
    the run folder, beside the workers' journaled metrics; `crisscross sync` sends both once
    a server answers and removes them; while none answers it keeps them."""
    from crisscross.platform.pretrain.run_record import write_record
    from crisscross.platform.tracking import PENDING_CLOSE

    uri, client, run_id = _store_with_run(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    write_record(str(run_dir), {"mlflow_run_id": run_id, "tracking_uri": uri, "config": {}})
    MetricJournal(str(run_dir / JOURNAL_FILE)).append(Metric("loss", 0.5, 0, s) for s in (7, 8))
    down = _down_uri()
    note = close_run(
        MlflowClient(down),
        run_id,
        "KILLED",
        {"crisscross.stopped": "SIGTERM"},
        run_dir=str(run_dir),
    )
    assert f"kept in {run_dir / PENDING_CLOSE}: `crisscross sync {run_dir}` sets it" in note
    assert json.loads((run_dir / PENDING_CLOSE).read_text()) == {
        "run_id": run_id,
        "status": "KILLED",
        "tags": {"crisscross.stopped": "SIGTERM"},
    }

    still_down = run_cli("sync", str(run_dir), "--tracking-uri", down)
    assert still_down.exit_code == 1 and "Traceback" not in still_down.output
    assert f"the tracking server {down} did not answer" in still_down.output
    assert (run_dir / PENDING_CLOSE).is_file() and (run_dir / JOURNAL_FILE).is_file()
    assert client.get_run(run_id).info.status == "RUNNING"

    synced = run_cli("sync", str(run_dir))  # the store the run record names
    assert synced.exit_code == 0, synced.output
    assert f"metrics: 2 sent from {run_dir / JOURNAL_FILE}; status: KILLED" in synced.output
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["crisscross.stopped"]) == ("KILLED", "SIGTERM")
    assert _steps(client, run_id, "loss") == [(7, 0.5), (8, 0.5)]
    assert not (run_dir / PENDING_CLOSE).exists() and not (run_dir / JOURNAL_FILE).exists()
    again = run_cli("sync", str(run_dir))
    assert again.exit_code == 0 and "nothing to send" in again.output
    assert _steps(client, run_id, "loss") == [(7, 0.5), (8, 0.5)]  # nothing twice


def test_sync_names_a_folder_that_is_not_a_run(tmp_path, run_cli):
    result = run_cli("sync", str(tmp_path))
    assert result.exit_code == 2
    assert f"{tmp_path}: no crisscross_run.json: not the folder of a pretraining run" in (
        result.output
    )


def test_a_recorded_uri_with_a_masked_password_is_the_environments_or_asked_for(monkeypatch):
    from crisscross.platform.cli.common import BadInput
    from crisscross.platform.cli.train import recorded_uri

    masked = {"tracking_uri": "http://alice:***@mlflow.internal:5000"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pw@mlflow.internal:5000")
    assert recorded_uri(masked, "r") == "http://alice:pw@mlflow.internal:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://other:5000")  # credentials from the env
    assert recorded_uri(masked, "r") == "http://mlflow.internal:5000"
    assert recorded_uri({"tracking_uri": "sqlite:////runs/mlflow.db"}, "r") == (
        "sqlite:////runs/mlflow.db"
    )
    database = {"tracking_uri": "postgresql://alice:***@db.internal/mlflow"}
    with pytest.raises(BadInput, match=r"r: its record holds the tracking URI masked \(post"):
        recorded_uri(database, "r")


def test_sync_refuses_a_folder_in_use_and_a_damaged_kept_status(tmp_path, worker_env, run_cli):
    """A run going on sends its own metrics and status: sync waits for it to end; a damaged
    kept status is named, not taken for none."""
    from crisscross.platform.lease import Lease
    from crisscross.platform.pretrain.run_record import write_record
    from crisscross.platform.tracking import PENDING_CLOSE

    uri, _, run_id = _store_with_run(tmp_path)
    run_dir = tmp_path / "run"
    write_record(str(run_dir), {"mlflow_run_id": run_id, "tracking_uri": uri, "config": {}})
    with Lease(str(run_dir), what="pretraining"):
        busy = run_cli("sync", str(run_dir))
    assert busy.exit_code == 2 and f"{run_dir} is in use by another command" in busy.output
    (run_dir / PENDING_CLOSE).write_text('{"run_id": "x", "stat')
    damaged = run_cli("sync", str(run_dir))
    assert damaged.exit_code == 2
    assert f"{run_dir / PENDING_CLOSE}: damaged (" in damaged.output
    (run_dir / PENDING_CLOSE).write_text(json.dumps({"run_id": "other", "status": "KILLED"}))
    other = run_cli("sync", str(run_dir))
    assert other.exit_code == 2 and "is for MLflow run other, but the run record names" in (
        other.output
    )
