"""`crisscross sweep experiments/sweeps/tiny.yaml` end to end, interrupted and resumed.

The sweep starts in its own process (as a user runs it, with its own local Ray) and is stopped
with Ctrl-C once a trial has finished; it is continued with --resume, then resumed once more
after it finished (both in this process, on the session's 2-CPU Ray). About 5 minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from crisscross.config import load_config

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "experiments" / "sweeps" / "tiny.yaml"


def ledger(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (folder / "ledger").glob("*.json")}


def interrupted_after_a_finished_trial(sweep: Path, work: Path) -> tuple[int, str]:
    """Run the sweep in a child process; SIGINT (Ctrl-C) it once a trial has finished."""
    folder = work / "sweeps" / "tiny"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    command = [sys.executable, "-m", "crisscross", "sweep", str(sweep)]
    with (work / "first.log").open("w") as log:
        child = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and child.poll() is None:
            if any(end["status"] == "finished" for end in ledger(folder).values()):
                break
            time.sleep(2)
        assert child.poll() is None, (work / "first.log").read_text()[-3000:]
        child.send_signal(signal.SIGINT)  # Tune saves its state and stops
        child.wait(timeout=180)
    return child.returncode, (work / "first.log").read_text()


@pytest.fixture(scope="module")
def swept(local_ray, synthetic, tmp_path_factory):
    """The tiny sweep (paths made absolute), interrupted after its first finished trial, then
    resumed, then resumed again; what each phase printed and what the interruption left."""
    from click.testing import CliRunner

    from crisscross.cli import cli

    work = tmp_path_factory.mktemp("sweep")
    spec = yaml.safe_load(TINY.read_text())
    spec["base"] = str(TINY.parent / spec["base"])
    spec["final"]["svm"] = str(TINY.parent / spec["final"]["svm"])
    spec["output_dir"] = str(work / "sweeps")
    # smaller clips, video network and monitor subsample than the shipped example: the sweep's
    # machinery is under test here, not what it learns
    spec["synthetic"] = False  # the session's small sets, not the 880-file learning corpus
    spec["set"] |= {
        "data.root": str(synthetic["kinetics_sound"]),
        "monitor.video_root": str(synthetic["ucf101"]),
        "monitor.audio_root": str(synthetic["esc50"]),
        "optim.repeats_per_epoch": 3,  # 15 clips: 2 steps of 16 per epoch, as in tiny.yaml
        "data.crop_size": 32,
        "data.frames": 4,
        "model.video_width": 4,
        "monitor.max_files": 20,
    }
    sweep = work / "tiny.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    folder = work / "sweeps" / "tiny"
    first = interrupted_after_a_finished_trial(sweep, work)
    before = ledger(folder)
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    kept = {}
    for run in children(client, parent_id(folder)):
        trial = run.data.tags["crisscross.trial_id"]
        if before.get(trial, {}).get("status") == "finished":
            losses = client.get_metric_history(run.info.run_id, "loss")
            kept[trial] = (run.info.run_id, run.info.end_time, len(losses))
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the embedded MLflow store is ./mlflow.db
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        second = runner.invoke(cli, ["sweep", str(sweep), "--resume"], catch_exceptions=False)
        exp = client.get_run(parent_id(folder)).info.experiment_id
        svm_runs = len(client.search_runs([exp], "tags.`crisscross.eval` = 'svm'"))
        third = runner.invoke(cli, ["sweep", str(sweep), "--resume"], catch_exceptions=False)
    return {
        "work": work,
        "folder": folder,
        "first": first,
        "before": before,
        "kept": kept,
        "second": second,
        "third": third,
        "svm_runs": svm_runs,
        "client": client,
    }


def children(client: MlflowClient, parent: str) -> list:
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")


def parent_id(folder: Path) -> str:
    return json.loads((folder / "crisscross_sweep.json").read_text())["mlflow_run_id"]


def test_interrupted_sweep_says_how_to_resume(swept):
    code, output = swept["first"]
    assert code == 1, output[-3000:]
    assert "interrupted with" in output and "--resume" in output
    assert any(end["status"] == "finished" for end in swept["before"].values())


def test_resume_finishes_without_rerunning_finished_trials(swept):
    second, client = swept["second"], swept["client"]
    assert second.exit_code == 0, second.output[-3000:]
    runs = children(client, parent_id(swept["folder"]))
    by_trial = {r.data.tags["crisscross.trial_id"]: r for r in runs}
    assert len(runs) == len(by_trial) == 4  # one MLflow run per trial, resumed ones included
    assert swept["kept"], "no trial had finished before the interruption"
    for trial, (run_id, end_time, logged) in swept["kept"].items():
        run = by_trial[trial]
        assert run.info.run_id == run_id
        assert run.info.end_time == end_time  # not run again
        assert len(client.get_metric_history(run_id, "loss")) == logged == 4  # 2 epochs x 2
    for run in runs:  # interrupted trials continued in their own run, no step logged twice
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert len(steps) == len(set(steps)), run.data.tags["crisscross.trial_id"]
    ends = ledger(swept["folder"])
    for trial, end in swept["before"].items():
        assert ends[trial] == end  # how an ended trial ended is not rewritten


def test_every_trial_is_a_child_run_with_status_and_reason(swept):
    client = swept["client"]
    runs = children(client, parent_id(swept["folder"]))
    statuses = {r.info.status for r in runs}
    assert statuses <= {"FINISHED", "KILLED"}, statuses
    assert "FINISHED" in statuses
    for run in runs:
        reason = run.data.tags["crisscross.stop_reason"]
        if run.info.status == "FINISHED":
            assert reason == "completed 2 epochs"
        else:
            assert reason.startswith("stopped early by ASHA after epoch ")
        assert run.data.params["loss.w_sync"] in ("0.5", "1.0")
        knn_steps = [m.step for m in client.get_metric_history(run.info.run_id, "knn/video")]
        assert knn_steps and 0 not in knn_steps  # monitor.before_training: false in tiny.yaml


def test_the_parent_run_holds_the_pictures_the_table_and_the_best_config(swept):
    client, folder = swept["client"], swept["folder"]
    parent = client.get_run(parent_id(folder))
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "trials.csv",
        "heatmap_w_sync_w_async.png",
        "parallel_coordinates.png",
        "best.yaml",
    } <= artifacts
    best_run = client.get_run(parent.data.tags["crisscross.best_run"])
    assert best_run.info.status == "FINISHED"
    assert parent.data.metrics["trials_finished"] + parent.data.metrics["trials_stopped"] == 4
    best = load_config(folder / "best.yaml")
    assert best.loss.w_sync == float(best_run.data.params["loss.w_sync"])
    assert best.loss.w_async == float(best_run.data.params["loss.w_async"])
    assert best.run.name == "tiny-best" and best.optim.epochs == 2
    assert Path(best.data.root).is_dir() and Path(best.monitor.video_root).is_dir()


def test_final_svm_ran_on_the_finished_trials_and_chose_the_best(swept):
    client, folder = swept["client"], swept["folder"]
    parent = client.get_run(parent_id(folder))
    exp = parent.info.experiment_id
    finished = {
        r.info.run_id for r in children(client, parent.info.run_id) if r.info.status == "FINISHED"
    }
    svm_runs = client.search_runs([exp], "tags.`crisscross.eval` = 'svm'")
    top1 = {r.data.tags["crisscross.pretrain_run"]: r.data.metrics["top1_mean"] for r in svm_runs}
    assert set(top1) <= finished and len(top1) == min(2, len(finished))
    best = parent.data.tags["crisscross.best_run"]
    assert top1[best] == max(top1.values()) == parent.data.metrics["best/svm_top1"]


def test_resuming_a_finished_sweep_runs_nothing(swept):
    third, client, folder = swept["third"], swept["client"], swept["folder"]
    assert third.exit_code == 0, third.output[-3000:]
    assert "already finished; nothing to run" in third.output
    parent = client.get_run(parent_id(folder))
    assert parent.info.status == "FINISHED"
    assert len(children(client, parent.info.run_id)) == 4
    exp = parent.info.experiment_id
    assert len(client.search_runs([exp], "tags.`crisscross.eval` = 'svm'")) == swept["svm_runs"]
    assert f"best: {parent.data.tags['crisscross.best_trial']} " in third.output
