"""What a cluster does to a run, on a real multi-node Ray cluster on this machine: a head with
no CPUs (the driver's node, as cluster.yaml's head) and worker nodes joined with
`ray start --address`, one at a time, as spot nodes come and go. One `crisscross pretrain`
(max_failures 2) through four faults, each injected at a training step the driver printed:

1. the MLflow tracking server (a real `mlflow server`) stopped: training goes on, metrics are
   journaled in the run folder;
2. a preemption notice for the worker node (`ray drain-node`, reason PREEMPTION, a deadline):
   a checkpoint at the current step and another 15 s before the deadline; at the deadline Ray
   restarts the group on the next node (joined before) from the latest checkpoint, charged to
   preemption (Ray's controller log says so), not to max_failures;
3. the tracking server started again, while the run goes on;
4. the worker node killed outright, no notice: the run resumes from its last checkpoint on a
   new node, charged to max_failures. Its 2, not 1: in 1 of 4 runs here the group Ray restarted
   at the preemption deadline died within seconds, a second restart Ray charged to it (its
   failure log actor had landed on the drained node; now pinned to its creator's node).

The run must end FINISHED with every step's metrics exactly once and no step lost beyond a
checkpoint interval. About 4 minutes. Only the processes started here are stopped, by their
process group (`ray stop` would end every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from crisscross.platform.cluster.tracking_server import (
    default_spec,
    private_address,
    start_detached,
    stop_group,
)
from crisscross.platform.journal import JOURNAL_FILE
from crisscross.trainers.stop import LAST_CALL_SECONDS
from tests.conftest import REPO, TINY_SIZES
from tests.platform.cluster.test_cluster_job import free_ports

pytestmark = pytest.mark.multinode  # run alone: pytest -m multinode -n 0 (pyproject.toml)
BIN = Path(sys.executable).parent
QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"
EPOCHS, STEPS = 8, 37  # 15 clips x 10 repeats / batch 4: more steps than the faults take
CHECKPOINT_EVERY = 10  # steps: the most a node killed without notice may cost
DEADLINE_S = 30  # the preemption notice's: Ray Train restarts the group when it passes
RESUMED = r"pid=(\d+)\).*resuming at step (\d+)"  # a restarted worker's first words
FAST = {  # Ray notices a drain or a dead node within seconds, not its production minutes
    "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "1",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


class Events:
    """The driver's output lines, each with the time it came, read in a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def step(self, before: int | None = None) -> int:
        """The last step a progress line showed (before line `before`)."""
        pattern = r"\(total (\d+)\)|resuming at step (\d+)"
        found = [re.search(pattern, line) for _, line in self.lines[:before]]
        return max((int(m[1] or m[2]) for m in found if m), default=0)

    def wait(
        self, pattern: str, child: subprocess.Popen, timeout: float = 240, seen: set = frozenset()
    ) -> tuple[int, re.Match]:
        """The first line matching `pattern` whose first group is not in `seen` (workers' pids),
        and its index, waiting for it while the driver runs."""
        deadline = time.monotonic() + timeout
        while True:
            for index, (_, line) in enumerate(list(self.lines)):
                found = re.search(pattern, line)
                if found and not (seen and found[1] in seen):
                    return index, found
            assert child.poll() is None, f"ended before {pattern!r}:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r}:\n{self.text()[-4000:]}"
            time.sleep(0.1)

    def until_step(self, step: int, child: subprocess.Popen, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while self.step() < step:
            assert child.poll() is None, f"ended before step {step}:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"no step {step}:\n{self.text()[-4000:]}"
            time.sleep(0.1)

    def resumes(self) -> list[tuple[str, int, int]]:
        """(worker pid, last step shown before, step resumed at) of each restarted group."""
        seen: dict[str, tuple[str, int, int]] = {}
        for index, (_, line) in enumerate(list(self.lines)):
            if (found := re.search(RESUMED, line)) and found[1] not in seen:
                seen[found[1]] = (found[1], self.step(before=index), int(found[2]))
        return list(seen.values())

    def when(self, found: re.Match) -> float:
        """When the line holding `found` came."""
        return next(t for t, line in self.lines if found[0] in line)


def charged_to(logs: Path) -> list[str]:
    """What Ray Train's controller charged each restart to ("preemption", "worker group"), in
    order, from its log."""
    charged = []
    for path in sorted(logs.glob("ray-train-sys-controller-*.log")):
        for line in path.read_text().splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if "[FailurePolicy]" in message and (found := re.search(r"Source: ([a-z ]+)", message)):
                charged.append(found[1].strip())
    return charged


class Nodes:
    """A head with no CPUs and worker nodes started and killed one at a time, each by its own
    process group (the raylet, its agents and its workers)."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env, self.ip = work, env, private_address()
        self.gcs, self.dashboard = free_ports(2)
        self.address = f"{self.ip}:{self.gcs}"
        self.started: list[subprocess.Popen] = []
        self._start("head", "--head", "--port", str(self.gcs), "--num-cpus", "0")
        self._wait(lambda nodes: len(nodes) == 1, "the head")

    def _start(self, name: str, *args: str) -> None:
        metrics, runtime_env, agent_http, agent_grpc = free_ports(4)
        command = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args]
        command += ["--node-ip-address", self.ip, "--labels", f"crisscross-test={name}"]
        command += ["--object-store-memory", str(100 * 2**20)]
        command += ["--metrics-export-port", str(metrics)]
        command += ["--runtime-env-agent-port", str(runtime_env)]
        command += ["--dashboard-agent-listen-port", str(agent_http)]
        command += ["--dashboard-agent-grpc-port", str(agent_grpc)]
        if "--head" in args:  # the dashboard: Ray Train's cleaner and this test ask its state API
            command += ["--temp-dir", str(self.work / "ray"), "--include-dashboard", "true"]
            command += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard)]
        self.started.append(
            subprocess.Popen(
                command,
                env=self.env,
                stdout=(self.work / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def alive(self) -> list[dict]:
        """Ray's alive nodes (node_id, labels, ...), from the dashboard's state API."""
        url = f"http://127.0.0.1:{self.dashboard}/api/v0/nodes?detail=1&limit=100"
        request = urllib.request.Request(url)
        request.add_header("Authorization", f"Bearer {self.env['RAY_AUTH_TOKEN']}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                nodes = json.loads(response.read())["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):  # not answering (yet)
            return []
        return [node for node in nodes if node.get("state") == "ALIVE"]

    def _wait(self, ready, what: str, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not ready(nodes := self.alive()):
            assert time.monotonic() < deadline, f"{what} did not join: {nodes}"
            time.sleep(0.5)
        return nodes

    def join(self, name: str) -> str:
        """A worker node with 2 CPUs; its Ray node id once the cluster sees it."""
        self._start(name, "--address", self.address, "--num-cpus", "2")

        def named(nodes: list[dict]) -> list[str]:
            return [n["node_id"] for n in nodes if n["labels"].get("crisscross-test") == name]

        return named(self._wait(lambda nodes: bool(named(nodes)), name))[0]

    def kill(self, index: int) -> None:
        """SIGKILL worker node `index`'s process group: a reclaimed spot machine."""
        process = self.started[index]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in reversed(self.started):
            stop_group(process.pid, timeout=3)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def faults(synthetic):
    work = Path(tempfile.mkdtemp(prefix="cc-nodes-"))  # short: Ray's socket paths
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env |= FAST | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    spec = default_spec(
        host="127.0.0.1",
        port=free_ports(1)[0],
        state_dir=str(work / "tracking"),
        artifacts_destination=str(work / "artifacts"),
    )
    server = start_detached(spec)
    nodes = Nodes(work, env)
    child = None
    record: dict = {"work": work, "tracking": spec.uri, "injected": []}
    try:
        first = nodes.join("node-1")
        values = TINY_SIZES | {
            "optim.batch_size": 4,
            "optim.epochs": EPOCHS,
            "optim.repeats_per_epoch": 10,
            "run.workers": 1,
            "run.name": "faults",
            "run.output_dir": str(work / "runs"),
            "run.max_failures": 2,
            "run.checkpoint_every": CHECKPOINT_EVERY,
            "run.keep_checkpoints": 100,
            "run.progress_seconds": 0.1,
            "tracking.uri": spec.uri,
            "monitor.every": 0,
        }
        sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
        command = [sys.executable, "-m", "crisscross", "pretrain", str(QUICKSTART)]
        command += ["--root", str(synthetic["kinetics_sound"]), *sets]
        child = subprocess.Popen(
            command,
            cwd=work,
            env=env | {"RAY_ADDRESS": nodes.address},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        events = Events(child.stdout)
        record["events"] = events

        events.wait(r"epoch 1/\d+ at step [2-9]", child)
        stop_group(server["pid"])  # 1. the tracking server goes away
        record["injected"].append(("tracking server stopped", events.step()))

        nodes.join("node-2")  # once training is on node-1: idle until node-1's reclaim
        events.until_step(record["injected"][-1][1] + 3, child)
        drained = time.monotonic()
        drain = [str(BIN / "ray"), "drain-node", "--address", nodes.address, "--node-id", first]
        drain += ["--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim"]
        subprocess.run(
            [*drain, "--deadline-remaining-seconds", str(DEADLINE_S)],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )  # 2. a preemption notice; Ray ends the node's raylet at the deadline
        record["injected"].append(("preemption notice", events.step()))
        _, notice = events.wait(r"step (\d+): checkpoint on a preemption notice", child)
        record["notice"] = {"step": int(notice[1]), "seconds": events.when(notice) - drained}
        _, resumed = events.wait(RESUMED, child)
        nodes.kill(1)  # whatever of the reclaimed machine is left

        server = start_detached(spec)  # 3. the tracking server back
        record["injected"].append(("tracking server started", events.step()))
        events.until_step(int(resumed[2]) + CHECKPOINT_EVERY + 2, child)
        nodes.join("node-3")  # once the group runs on node-2: idle until node-2 is killed
        record["injected"].append(("node killed without notice", events.step()))
        nodes.kill(2)  # 4. a node killed outright
        events.wait(RESUMED, child, seen={pid for pid, _, _ in events.resumes()})
        record["code"] = child.wait(timeout=600)
        events.thread.join(timeout=10)
        record["restarts"] = [(shown, step) for _, shown, step in events.resumes()]
        record["charged"] = charged_to(work / "ray" / "session_latest" / "logs" / "train")
        record["last_call"] = re.findall(
            r"step (\d+): checkpoint before the preemption", events.text()
        )
        # steps that began after the last call fell due, before the restart: the first one
        # makes it (a slow or stalled drained node may run none; README, "Faults on a cluster")
        due = drained + DEADLINE_S - LAST_CALL_SECONDS + 1
        first = next(i for i, (_, line) in enumerate(events.lines) if re.search(RESUMED, line))
        shown = {
            int(found[1])
            for at, line in events.lines[:first]
            if at >= due and (found := re.search(r"\(total (\d+)\)", line))
        }
        record["steps_after_due"] = max(len(shown) - 1, 0)
        yield record
    finally:
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=60)
        nodes.stop()
        stop_group(server["pid"])
    shutil.rmtree(work, ignore_errors=True)


def test_the_run_survives_every_fault_and_ends_finished(faults):
    events = faults["events"]
    print("\nfaults injected (what, at the driver's last shown step):")
    for what, step in faults["injected"]:
        print(f"  {what}: step {step}")
    print(f"notice {faults['notice']}; last call at {faults['last_call']}", end="; ")
    print(f"steps begun after it fell due: {faults['steps_after_due']}")
    print("restarts (last step shown, resumed at):", faults["restarts"])
    print("Ray charged them to:", faults["charged"])
    assert faults["code"] == 0, events.text()[-6000:]
    done = re.search(r"done: step (\d+); MLflow run", events.text())
    assert done and int(done[1]) == STEPS * EPOCHS, events.text()[-3000:]
    # none from the driver (Ray's actors, prefixed "(name pid=...)", may log their shutdown)
    assert not any(line.startswith("Traceback") for _, line in events.lines)
    client = MlflowClient(faults["tracking"])
    (run,) = client.search_runs(
        [client.get_experiment_by_name("crisscross-quickstart").experiment_id]
    )
    assert run.info.status == "FINISHED"
    for key in ("loss", "v1a2", "samples_per_s"):
        logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert logged == list(range(1, STEPS * EPOCHS + 1)), key  # each step once, none lost
    assert not (faults["work"] / "runs" / "faults" / JOURNAL_FILE).exists()


def test_a_preemption_notice_is_checkpointed_before_its_deadline_and_not_charged(faults):
    """The notice's checkpoint comes before the deadline, and another one 15 s before it;
    Ray charged the preemption's restart to preemption, the node killed later to
    max_failures."""
    notice = faults["notice"]
    assert notice["seconds"] < DEADLINE_S, notice
    step = notice["step"]
    assert (faults["work"] / "runs" / "faults" / f"checkpoint_step{step:09d}").is_dir()
    assert faults["restarts"][0][1] >= step  # resumed from that checkpoint or a later one
    assert faults["charged"][0] == "preemption", faults["charged"]
    assert faults["charged"][-1] == "worker group", faults["charged"]
    assert len(set(faults["last_call"])) <= 1, faults["last_call"]  # once (lines repeat: nodes)
    if faults["steps_after_due"]:  # a step began after it fell due, before the restart
        assert notice["step"] <= int(faults["last_call"][0]) <= faults["restarts"][0][0]


def test_no_restart_loses_more_than_a_checkpoint_interval(faults):
    for shown, resumed in faults["restarts"]:
        assert 0 <= shown - resumed <= CHECKPOINT_EVERY, faults["restarts"]
