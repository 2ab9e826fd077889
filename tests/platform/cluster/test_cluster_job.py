"""Cluster operations on one machine: a Ray head on this machine with token authentication on,
the cluster's MLflow tracking server, `crisscross pretrain` submitted as a Ray job with
`ray job submit --working-dir`, its run found in the server, its metrics in Prometheus' format,
and the dashboard's job API refusing a request without the token. About 2 minutes.

Only the processes started here are stopped, by their process group: `ray stop` would end every
Ray on the machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
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
from crisscross.platform.pretrain.job import git_commit
from crisscross.trainers.run_folder import STATE_FILE
from tests.conftest import REPO, TINY_SIZES

BIN = Path(sys.executable).parent  # the environment's ray and crisscross commands
TINY = TINY_SIZES | {  # seconds of training, one epoch
    "optim.batch_size": 4,
    "optim.epochs": 1,
    "optim.repeats_per_epoch": 1,
    "optim.warmup_epochs": 0.5,
    "run.workers": 1,
    "run.name": "job",
    "monitor.every": 0,
}


EXPORTED = {  # the training loop's Ray metrics, as Prometheus names them
    "ray_crisscross_samples_per_second",
    "ray_crisscross_data_wait_share",
    "ray_crisscross_loss",
    "ray_crisscross_epoch",
    "ray_crisscross_steps_total",
    "ray_crisscross_samples_total",
}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:  # not listening (yet)
        return 0, str(exc)


@pytest.fixture(scope="module")
def cluster(synthetic):
    """A token-authenticated Ray head and the MLflow server behind its basic-auth app, as
    cluster.yaml starts them. This test's process signs in to the server as cluster.yaml's
    nodes do, with the user's credentials in its environment; the head, and so the job, has
    them in its tracking URI instead (http://user:password@host:port, the other spelling users
    write), so that what the job writes can be searched for the password."""
    work = Path(tempfile.mkdtemp(prefix="cc-cluster-"))  # short: Ray's socket paths
    token, password = secrets.token_hex(16), secrets.token_hex(16)
    gcs, dashboard, metrics, client, agent_http, agent_grpc, runtime_env, mlflow = free_ports(8)
    credentials = {"MLFLOW_TRACKING_USERNAME": "crisscross", "MLFLOW_TRACKING_PASSWORD": password}
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    server = start_detached(
        default_spec(
            host="127.0.0.1",
            port=mlflow,
            state_dir=str(work / "head"),
            artifacts_destination=str(work / "shared" / "mlflow"),
            auth=True,
        )
    )
    ip = private_address()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))} | {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "MLFLOW_TRACKING_URI": server["uri"].replace("://", f"://crisscross:{password}@", 1),
        "CRISSCROSS_STORAGE": str(work / "shared"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # this machine may run another Ray (the test session's): name ours to its processes
        "RAY_ADDRESS": f"{ip}:{gcs}",
        # as cluster.yaml's head: `ray job stop` leaves a stopped job time for its checkpoint
        "RAY_JOB_STOP_WAIT_TIME_S": "150",
    }
    head = subprocess.Popen(
        [
            *(str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats"),
            *("--node-ip-address", ip, "--port", str(gcs), "--num-cpus", "2"),
            *("--include-dashboard", "true", "--dashboard-host", "127.0.0.1"),
            *("--dashboard-port", str(dashboard), "--metrics-export-port", str(metrics)),
            *("--ray-client-server-port", str(client)),
            *("--runtime-env-agent-port", str(runtime_env)),
            *("--dashboard-agent-listen-port", str(agent_http)),
            *("--dashboard-agent-grpc-port", str(agent_grpc), "--temp-dir", str(work / "ray")),
        ],
        env=env,
        stdout=(work / "head.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while get(f"{address}/api/jobs/", token)[0] != 200:
            assert head.poll() is None, (work / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (work / "head.log").read_text()[-3000:]
            time.sleep(1)
        yield {
            "work": work,
            "token": token,
            "password": password,
            "address": address,
            "metrics": f"http://127.0.0.1:{metrics}/metrics",
            "tracking": server["uri"],
            "env": {k: v for k, v in env.items() if k != "RAY_ADDRESS"},
            "data": synthetic["kinetics_sound"],
            "commit": git_commit(),
        }
    finally:
        stop_group(head.pid, timeout=3)  # SIGTERM, then SIGKILL: the head and all it started
        head.wait(timeout=30)
        stop_group(server["pid"])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    with pytest.raises(ProcessLookupError):  # nothing of the head's group is left running
        os.killpg(head.pid, 0)
    shutil.rmtree(work, ignore_errors=True)


def submit(cluster, submission_id: str, *args: str) -> subprocess.CompletedProcess:
    """`ray job submit` as the README writes it (the commit passed in: .git is not uploaded)."""
    sets = [f"--set={key}={value}" for key, value in TINY.items()]
    env_vars = {"env_vars": {"CRISSCROSS_GIT_COMMIT": cluster["commit"]}}
    command = [str(BIN / "ray"), "job", "submit", "--address", cluster["address"]]
    command += ["--working-dir", str(REPO), "--runtime-env-json", json.dumps(env_vars)]
    command += ["--submission-id", submission_id, "--"]
    command += ["crisscross", "pretrain", "experiments/pretext/quickstart.yaml", *sets, *args]
    return subprocess.run(
        command, env=cluster["env"], capture_output=True, text=True, timeout=600, check=False
    )


def job_cli(cluster, *args: str) -> str:
    command = [str(BIN / "ray"), "job", *args, "--address", cluster["address"]]
    out = subprocess.run(
        command, env=cluster["env"], capture_output=True, text=True, timeout=60, check=False
    )
    return out.stdout + out.stderr


def status_of(cluster, submission_id: str) -> str:
    """The job's status from the dashboard's job API (with the token)."""
    code, body = get(f"{cluster['address']}/api/jobs/{submission_id}", cluster["token"])
    assert code == 200, body
    return json.loads(body)["status"]


@pytest.fixture(scope="module")
def pretrained(cluster):
    """`crisscross pretrain experiments/pretext/quickstart.yaml` as a Ray job, then a failing one;
    what the dashboard's metrics endpoint held afterwards."""
    seen: dict[str, str] = {}  # metric name -> its last line with run="job"
    done = threading.Event()

    def scrape() -> None:  # as Prometheus does, while the job runs (gauges end with a worker)
        while not done.wait(1.0):
            _, text = get(cluster["metrics"])
            for line in text.splitlines():
                if 'run="job"' in line:
                    seen[line.split("{", 1)[0]] = line

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    ok = submit(cluster, "pretrain-ok", "--root", str(cluster["data"]))
    done.set()
    scraper.join()
    failed = submit(cluster, "pretrain-bad-root", "--root", "/no/such/dataset")
    return {"ok": ok, "failed": failed, "metrics": seen}


def test_pretraining_job_succeeds_and_its_run_is_in_the_tracking_server(cluster, pretrained):
    ok = pretrained["ok"]
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-4000:]
    assert "Job 'pretrain-ok' succeeded" in ok.stdout + ok.stderr
    assert status_of(cluster, "pretrain-ok") == "SUCCEEDED"
    assert "done: step 3; MLflow run" in job_cli(cluster, "logs", "pretrain-ok")
    client = MlflowClient(cluster["tracking"])  # the job read MLFLOW_TRACKING_URI from the head
    experiment = client.get_experiment_by_name("crisscross-quickstart")
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'job'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["git.commit"] == cluster["commit"]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # sent through the server
    shared = cluster["work"] / "shared"
    # the relative run.output_dir landed on the shared storage, not in the job's temporary copy
    assert run.data.tags["crisscross.run_dir"] == str(shared / "runs" / "job")
    assert (shared / "runs" / "job" / "crisscross_run.json").is_file()
    stored = {p.name for p in (shared / "mlflow").rglob("*.pth.tar")}
    assert stored == {"vid_job.pth.tar", "aud_job.pth.tar"}  # artifacts on the shared storage


def test_a_failing_job_reports_its_exit_status_and_message(cluster, pretrained):
    failed = pretrained["failed"]
    assert failed.returncode != 0
    assert status_of(cluster, "pretrain-bad-root") == "FAILED"
    assert "exit code 2" in job_cli(cluster, "status", "pretrain-bad-root")
    logs = job_cli(cluster, "logs", "pretrain-bad-root")
    assert "data.root: /no/such/dataset: no such folder" in logs
    assert "Traceback" not in logs


def test_the_training_loop_exports_its_metrics_to_prometheus(pretrained):
    seen = pretrained["metrics"]
    assert set(seen) >= EXPORTED, sorted(seen)
    steps = seen["ray_crisscross_steps_total"]
    assert float(steps.rsplit(" ", 1)[1]) == 3.0  # 15 clips, batch 4: 3 steps
    assert 'rank="0"' in steps


def test_the_job_api_refuses_requests_without_the_token(cluster, pretrained):
    status, _ = get(f"{cluster['address']}/api/jobs/")
    assert status in (401, 403)
    status, _ = get(f"{cluster['address']}/api/jobs/", "0" * 32)  # a wrong token
    assert status in (401, 403)
    status, body = get(f"{cluster['address']}/api/jobs/", cluster["token"])
    assert status == 200
    assert {job["submission_id"] for job in json.loads(body)} >= {"pretrain-ok"}


def test_the_tracking_server_lets_in_only_its_user(cluster, monkeypatch):
    """The job above signed in with the user's credentials; a client with a wrong password is
    told what to set, one with none is refused; the password is in none of the server's
    files."""
    from crisscross.platform.cluster.tracking_server import AUTH_FILE, STATE_FILE
    from crisscross.platform.tracking import TrackingError, check_tracking

    for name in (AUTH_FILE, STATE_FILE, "tracking-server.log"):
        assert cluster["password"] not in (cluster["work"] / "head" / name).read_text(), name
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(TrackingError, match=r"refused this client .*set MLFLOW_TRACKING_USER"):
        check_tracking(cluster["tracking"])
    search = f"{cluster['tracking']}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(search, timeout=10)  # no credentials at all
    assert refused.value.code == 401


def test_the_password_in_the_tracking_uri_is_nowhere_the_job_wrote(cluster, pretrained):
    """The job signed in through the password in its tracking URI: the run's params and tags,
    its artifacts, the run folder, the job's logs, Ray's session logs and the server's files
    hold the URI only with the password masked."""
    secret = cluster["password"]
    client = MlflowClient(cluster["tracking"])
    experiment = client.get_experiment_by_name("crisscross-quickstart")
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'job'")
    assert secret not in json.dumps(run.data.params) + json.dumps(run.data.tags)
    logs = job_cli(cluster, "logs", "pretrain-ok") + job_cli(cluster, "logs", "pretrain-bad-root")
    for done in (pretrained["ok"], pretrained["failed"]):
        logs += done.stdout + done.stderr
    assert secret not in logs
    assert "crisscross:***@127.0.0.1" in logs  # the URI was printed, masked
    searched, leaked = 0, []
    # the artifacts (shared/mlflow), the run folder (shared/runs), Ray's logs, the server's state
    for folder in ("shared", "ray", "head"):
        for parent, _, names in os.walk(cluster["work"] / folder):
            for path in (Path(parent) / name for name in names):
                if path.is_file() and not path.is_symlink():
                    searched += 1
                    if secret.encode() in path.read_bytes():
                        leaked.append(str(path))
    assert leaked == []
    record = json.loads(
        (cluster["work"] / "shared" / "runs" / "job" / "crisscross_run.json").read_text()
    )
    assert "crisscross:***@127.0.0.1" in json.dumps(record)
    assert searched > 50  # the run folder, the artifacts and Ray's logs were there to search


def test_ray_job_stop_checkpoints_the_current_step_and_kills_the_run(cluster):
    """`ray job stop` sends SIGTERM, then SIGKILL once RAY_JOB_STOP_WAIT_TIME_S passed (set on
    the head, as cluster.yaml does): the job checkpoints at its current step, marks its MLflow
    run KILLED and says how to continue; Ray shows the job STOPPED."""
    values = TINY | {"optim.epochs": 500, "run.name": "stopped", "run.progress_seconds": 0.1}
    env_vars = {"env_vars": {"CRISSCROSS_GIT_COMMIT": cluster["commit"]}}
    command = [str(BIN / "ray"), "job", "submit", "--address", cluster["address"], "--no-wait"]
    command += ["--working-dir", str(REPO), "--runtime-env-json", json.dumps(env_vars)]
    command += ["--submission-id", "pretrain-stopped", "--"]
    command += ["crisscross", "pretrain", "experiments/pretext/quickstart.yaml"]
    command += ["--root", str(cluster["data"])]
    command += [f"--set={key}={value}" for key, value in values.items()]
    subprocess.run(command, env=cluster["env"], check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 300
    while not re.search(r"epoch 1/500 at step [2-9]", job_cli(cluster, "logs", "pretrain-stopped")):
        assert status_of(cluster, "pretrain-stopped") in ("PENDING", "RUNNING")
        assert time.monotonic() < deadline, job_cli(cluster, "logs", "pretrain-stopped")[-3000:]
        time.sleep(2)
    job_cli(cluster, "stop", "pretrain-stopped")
    while status_of(cluster, "pretrain-stopped") != "STOPPED":
        assert time.monotonic() < deadline + 200, status_of(cluster, "pretrain-stopped")
        time.sleep(2)
    logs = job_cli(cluster, "logs", "pretrain-stopped")
    found = re.search(r"Error: stopped by SIGTERM at step (\d+): checkpoint (\S+) written", logs)
    assert found, logs[-3000:]
    step, folder = int(found[1]), Path(found[2])
    assert folder.name == f"checkpoint_step{step:09d}" and (folder / STATE_FILE).is_file()
    client = MlflowClient(cluster["tracking"])
    experiment = client.get_experiment_by_name("crisscross-quickstart")
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'stopped'")
    assert run.info.status == "KILLED"
    assert run.data.tags["crisscross.stopped"].startswith(f"SIGTERM at step {step}: checkpoint")
