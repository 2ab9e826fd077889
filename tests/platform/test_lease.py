"""One writer per run folder: a second live writer is refused, a stale lease is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crisscross.platform.lease import LEASE_FILE, STALE_SECONDS, Lease, LeaseError
from tests.conftest import REPO

HOLD = """
import sys, time
from crisscross.platform.lease import Lease
Lease(sys.argv[1], what="pretraining").acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lease of tmp_path/run (killed at the end)."""
    folder = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    yield folder, child
    if child.poll() is None:
        child.kill()
        child.wait()


def test_second_live_writer_is_refused_naming_the_holder(holder):
    folder, child = holder
    with pytest.raises(LeaseError) as caught:
        Lease(str(folder), what="pretraining").acquire()
    message = str(caught.value)
    assert f"in use by another pretraining: pid {child.pid} on host {socket.gethostname()}" in (
        message
    )
    assert "Wait for it to end or stop it, or use another run.name" in message
    assert json.loads((folder / LEASE_FILE).read_text())["pid"] == child.pid  # left as it was


def test_lease_of_a_dead_process_is_taken_over(holder):
    folder, child = holder
    child.send_signal(signal.SIGKILL)  # a crash: the lease file stays behind
    child.wait()
    said: list[str] = []
    with Lease(str(folder), what="pretraining", say=said.append):
        held = json.loads((folder / LEASE_FILE).read_text())
        assert held["pid"] == os.getpid()
    assert said == [
        f"taking over {folder / LEASE_FILE} from pid {child.pid} on host "
        f"{socket.gethostname()}, " + said[0].split(", ", 1)[1]
    ]
    assert f"its process {child.pid} on this host is gone" in said[0]
    assert not (folder / LEASE_FILE).exists()  # released at the end of the block


def _planted(folder: Path, *, heartbeat_age: float) -> None:
    folder.mkdir(parents=True)
    now = time.time()
    lease = {"host": "node-7", "pid": 4242, "started": now - 3600, "token": "x"}
    (folder / LEASE_FILE).write_text(json.dumps(lease | {"heartbeat": now - heartbeat_age}))


def test_other_hosts_lease_is_judged_by_its_heartbeat(tmp_path):
    _planted(tmp_path / "fresh", heartbeat_age=10)
    with pytest.raises(LeaseError, match=r"pid 4242 on host node-7, .* last heartbeat 10 s ago"):
        Lease(str(tmp_path / "fresh"), what="sweep").acquire()
    _planted(tmp_path / "old", heartbeat_age=STALE_SECONDS + 60)
    said: list[str] = []
    with Lease(str(tmp_path / "old"), what="sweep", say=said.append):
        pass
    assert "its heartbeat stopped" in said[0]


def test_damaged_lease_is_taken_over(tmp_path):
    (tmp_path / LEASE_FILE).write_text("")  # a crash while a lease was written
    said: list[str] = []
    with Lease(str(tmp_path), what="pretraining", say=said.append):
        assert json.loads((tmp_path / LEASE_FILE).read_text())["pid"] == os.getpid()
    assert len(said) == 1


def test_second_pretrain_on_the_same_run_folder_is_refused(run_cli, local_ray, synthetic, holder):
    """`crisscross pretrain` on a run folder another live process holds: exit 2, one message,
    nothing written into the folder."""
    folder, child = holder
    result = run_cli(
        "pretrain",
        str(REPO / "experiments" / "pretext" / "quickstart.yaml"),
        "--root",
        str(synthetic["kinetics_sound"]),
        "--set",
        f"run.output_dir={folder.parent}",
        "--set",
        f"run.name={folder.name}",
        "--set",
        f"tracking.uri=sqlite:///{folder.parent / 'mlflow.db'}",
    )
    assert result.exit_code == 2, result.output
    assert f"in use by another pretraining: pid {child.pid}" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [LEASE_FILE]


def test_second_sweep_on_the_same_sweep_folder_is_refused(tmp_path):
    """`sweep --resume` twice: the second is refused before it checks data or starts Ray."""
    from crisscross.platform.sweep.plan import plan_sweep
    from crisscross.platform.sweep.run import SweepError, run_sweep

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"name: s\nbase: {REPO / 'experiments' / 'pretext' / 'quickstart.yaml'}\n"
        f"output_dir: {tmp_path / 'out'}\nset:\n  monitor.video_root: /data/ucf101\n"
        "space:\n  loss.w_sync: {grid: [0.5, 1.0]}\n"
    )
    plan = plan_sweep(sweep)
    _planted(Path(plan.folder), heartbeat_age=5)
    with pytest.raises(SweepError, match=r"in use by another sweep: pid 4242 on host node-7"):
        run_sweep(plan, resume=True, say=lambda _: None)
    assert [p.name for p in Path(plan.folder).iterdir() if p.name[0] != "."] == [LEASE_FILE]
