"""Stop signals on a real `crisscross pretrain` process: a checkpoint at the current step, the
MLflow run KILLED with the reason, exit status 128 + the signal, one message, no traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from crisscross.platform.lease import LEASE_FILE
from crisscross.trainers.run_folder import STATE_FILE
from crisscross.trainers.stop import STOP_FILE
from tests.conftest import REPO, TINY_SIZES

QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"


def _command(tmp_path: Path, root: Path) -> list[str]:
    values = TINY_SIZES | {
        "optim.batch_size": 4,
        "optim.epochs": 500,  # far longer than the test waits: the signal comes mid-epoch
        "optim.repeats_per_epoch": 1,
        "run.workers": 1,
        "run.name": "stopped",
        "run.output_dir": str(tmp_path / "runs"),
        "run.progress_seconds": 0.1,  # a line after every step: the test sees training under way
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "monitor.every": 0,
    }
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "crisscross", "pretrain", str(QUICKSTART)]
    return [*command, "--root", str(root), *sets]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_the_current_step_and_kills_the_run(synthetic, tmp_path, signum):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    child = subprocess.Popen(
        _command(tmp_path, synthetic["kinetics_sound"]),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ray's processes go with it on failure
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    try:
        while not any(re.search(r"epoch 1/500 at step [2-9]", line) for line in lines):
            assert child.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        child.send_signal(signum)
        child.wait(timeout=240)
    finally:  # a failed wait leaves no 500-epoch run behind (it would hold the CPUs)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=60)
    reader.join(timeout=10)
    output = "".join(lines)
    assert child.returncode == 128 + signum, output[-3000:]
    # none from the driver (Ray's actors, prefixed "(name pid=...)", may log their shutdown)
    assert not any(line.startswith("Traceback") for line in lines), output[-3000:]
    name = signal.Signals(signum).name
    (message,) = [line for line in lines if line.startswith("Error: stopped by")]
    found = re.match(
        rf"Error: stopped by {name} at step (\d+): checkpoint (\S+) written; ", message
    )
    assert found, message
    step, folder = int(found[1]), Path(found[2])
    assert folder.name == f"checkpoint_step{step:09d}"
    assert torch.load(folder / STATE_FILE, weights_only=True)["step"] == step

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("crisscross-quickstart").experiment_id]
    )
    assert run.info.status == "KILLED"
    assert run.data.tags["crisscross.stopped"].startswith(f"{name} at step {step}: checkpoint")
    logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert logged == list(range(1, step + 1))  # flushed before stopping: none lost, none twice
    run_dir = tmp_path / "runs" / "stopped"
    assert not (run_dir / STOP_FILE).exists() and not (run_dir / LEASE_FILE).exists()
