"""cluster.yaml: valid for Ray 2.60's own cluster schema and the security rules; what a job or
`ray up` copies from the working directory; where outputs land with shared storage."""

from __future__ import annotations

import copy
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from crisscross.platform.cluster.check import check_cluster
from tests.conftest import REPO

CLUSTER = REPO / "cluster.yaml"


def variant(tmp_path: Path, change) -> Path:
    config = yaml.safe_load(CLUSTER.read_text())
    change(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_shipped_cluster_file_passes_ray_schema_and_security_rules(run_cli):
    assert check_cluster(CLUSTER) == []
    result = run_cli("cluster", "check", str(CLUSTER))
    assert result.exit_code == 0, result.output
    assert "valid for Ray 2.60 and the security rules" in result.output


def test_shipped_cluster_file_has_the_three_node_types_and_secure_defaults():
    config = yaml.safe_load(CLUSTER.read_text())
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert types["gpu_worker"]["docker"]["worker_image"] == "rayproject/ray:2.60.0-py311-gpu"
    assert types["cpu_worker"]["docker"]["worker_image"] == "rayproject/ray:2.60.0-py311-cpu"
    assert all(t.get("max_workers", 0) > 0 for n, t in types.items() if n != "head")
    assert "IpPermissions" not in config["provider"]["security_group"]
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    head = " ".join(config["head_start_ray_commands"])
    assert "crisscross cluster tracking-server --detach --auth" in head  # private, signed in
    assert config["file_mounts"]["/home/ray/.crisscross/mlflow_password"] == (
        "~/.crisscross/mlflow_password"
    )
    env = " ".join(config["setup_commands"])
    assert 'MLFLOW_TRACKING_PASSWORD="$(cat ~/.crisscross/mlflow_password)"' in env
    assert "--dashboard-host=127.0.0.1" in head  # the dashboard on the head's loopback only
    # `ray job stop`: SIGKILL only after the stop's checkpoint had its 120 s (test_cluster_job)
    assert "export RAY_JOB_STOP_WAIT_TIME_S=150 && ray start --head" in head
    workers = " ".join(config["worker_start_ray_commands"])
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    # per-file work (probing, prepare) runs on the CPU worker type (datasets/ray_map.py)
    assert types["cpu_worker"]["resources"] == {"cpu_worker": 1}
    assert "export CRISSCROSS_CPU_RESOURCE=cpu_worker" in env
    assert all(
        "cpu_worker" not in (t["resources"] or {}) for n, t in types.items() if n != "cpu_worker"
    )


BROKEN = {
    "dashboard open to the world": (
        lambda c: c["provider"]["security_group"].update(
            IpPermissions=[
                {
                    "FromPort": 8265,
                    "ToPort": 8265,
                    "IpProtocol": "tcp",
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ]
        ),
        "opens ports 8265-8265 to 0.0.0.0/0: only SSH (22) may be reachable from outside",
    ),
    "every protocol open to the world": (  # AWS ignores the ports of an IpProtocol -1 rule
        lambda c: c["provider"]["security_group"].update(
            IpPermissions=[
                {
                    "IpProtocol": "-1",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ]
        ),
        "opens every protocol and port to 0.0.0.0/0: only SSH (22) may be reachable from outside",
    ),
    "every protocol open over IPv6": (
        lambda c: c["provider"]["security_group"].update(
            IpPermissions=[{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]
        ),
        "opens every protocol and port to ::/0",
    ),
    "a port open to a prefix list": (
        lambda c: c["provider"]["security_group"].update(
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 5000,
                    "ToPort": 5000,
                    "PrefixListIds": [{"PrefixListId": "pl-0123abcd"}],
                }
            ]
        ),
        "opens ports 5000-5000 to prefix list pl-0123abcd: only SSH (22) may be reachable",
    ),
    "dashboard on every interface": (
        lambda c: c["head_start_ray_commands"].__setitem__(
            1, c["head_start_ray_commands"][1].replace("127.0.0.1", "0.0.0.0")
        ),
        "head_start_ray_commands: the Ray dashboard listens on every interface",
    ),
    "token authentication off": (
        lambda c: c["docker"].update(run_options=["--env RAY_AUTH_MODE=disabled"]),
        "token authentication is not switched on for every node",
    ),
    "token not distributed": (
        lambda c: c["file_mounts"].pop("/home/ray/.ray/auth_token"),
        "file_mounts does not copy ~/.ray/auth_token",
    ),
    "mlflow without auth": (
        lambda c: c["head_start_ray_commands"].__setitem__(
            1, c["head_start_ray_commands"][1].replace(" --auth", "")
        ),
        "head_start_ray_commands: the MLflow server runs without --auth",
    ),
    "mlflow password not distributed": (
        lambda c: c["file_mounts"].pop("/home/ray/.crisscross/mlflow_password"),
        "file_mounts does not copy ~/.crisscross/mlflow_password",
    ),
    "mlflow password in the file": (
        lambda c: c["setup_commands"].append("export MLFLOW_TRACKING_PASSWORD=hunter2hunter2"),
        "MLflow credentials: use instance profiles or the environment, never the file",
    ),
    "key in the file": (
        lambda c: c["setup_commands"].append("export AWS_SECRET_ACCESS_KEY=abc"),
        "AWS keys: use instance profiles or the environment, never the file",
    ),
    "mlflow on every interface": (
        lambda c: c["head_start_ray_commands"].append("mlflow server --host 0.0.0.0"),
        "head_start_ray_commands: the MLflow server listens on every interface",
    ),
    "mlflow on every IPv6 interface": (
        lambda c: c["head_start_ray_commands"].append("mlflow server --host [::] --port 5000"),
        "head_start_ray_commands: the MLflow server listens on every interface",
    ),
    "mlflow on a short wildcard": (
        lambda c: c["setup_commands"].append("mlflow ui --host=0"),
        "setup_commands: the MLflow server listens on every interface",
    ),
    "another ray": (
        lambda c: c["docker"].update(image="rayproject/ray:2.40.0-py311-cpu"),
        "docker.image: rayproject/ray:2.40.0-py311-cpu is not a rayproject/ray 2.60 image",
    ),
    "package not installed": (
        lambda c: c["setup_commands"].pop(1),
        "setup_commands do not pip install this package on every node",
    ),
    "storage named twice": (
        lambda c: c["setup_commands"].append("export CRISSCROSS_STORAGE=s3://other"),
        "name CRISSCROSS_STORAGE 2 times: name the shared storage exactly once",
    ),
    "cpu resource on no node type": (
        lambda c: c["available_node_types"]["cpu_worker"].update(resources={}),
        "set CRISSCROSS_CPU_RESOURCE=cpu_worker, but no node type in available_node_types has "
        "cpu_worker in its resources",
    ),
    "not Ray's schema": (
        lambda c: c.update(head_node="x"),
        "Additional properties are not allowed ('head_node' was unexpected) (Ray's cluster schema)",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_broken_rule_is_named(run_cli, tmp_path, case):
    change, expected = BROKEN[case]
    path = variant(tmp_path, change)
    problems = check_cluster(path)
    assert any(expected in p for p in problems), problems
    result = run_cli("cluster", "check", str(path))
    assert result.exit_code == 2 and expected in result.output
    assert "Traceback" not in result.output


def test_a_job_uploads_code_and_configs_but_no_data_or_outputs(tmp_path):
    """Ray's own packaging of a working directory with the repo's .gitignore and .rayignore."""
    from ray._private.runtime_env.packaging import create_package

    work = tmp_path / "repo"
    for rel in (
        ".gitignore",
        ".rayignore",
        "crisscross/__init__.py",
        "crisscross/datasets/data/kinetics_sound_classes.txt",
        "experiments/pretext/quickstart.yaml",
        "quickstart/data/kinetics_sound/train/a/x.mp4",
        "quickstart/runs/q/state.pt",
        "data/ucf101/UCF-101/A/v.avi",
        "runs/sweeps/tiny/trials.csv",
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "bench-data.json",
        "manifest.parquet",
        ".venv/bin/python",
    ):
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        source = REPO / rel
        path.write_bytes(source.read_bytes() if source.is_file() else b"x")
    package = tmp_path / "package.zip"
    create_package(str(work), package, include_gitignore=True)
    names = {n for n in zipfile.ZipFile(package).namelist() if not n.endswith("/")}
    assert names == {
        ".gitignore",
        ".rayignore",
        "crisscross/__init__.py",
        "crisscross/datasets/data/kinetics_sound_classes.txt",  # package data travels
        "experiments/pretext/quickstart.yaml",
    }


@pytest.mark.parametrize(
    ("storage", "path", "expected"),
    [
        (None, "runs", "{cwd}/runs"),
        ("s3://bucket/cc", "runs", "s3://bucket/cc/runs"),
        ("s3://bucket/cc/", "runs/sweeps", "s3://bucket/cc/runs/sweeps"),
        ("/mnt/shared", "runs", "/mnt/shared/runs"),
        ("s3://bucket/cc", "/abs/runs", "/abs/runs"),
        ("s3://bucket/cc", "gs://other/runs", "gs://other/runs"),
    ],
)
def test_relative_outputs_land_on_the_shared_storage(
    monkeypatch, tmp_path, storage, path, expected
):
    from crisscross.platform.storage import STORAGE_ENV, local_output_folder, output_location

    monkeypatch.chdir(tmp_path)
    if storage is None:
        monkeypatch.delenv(STORAGE_ENV, raising=False)
    else:
        monkeypatch.setenv(STORAGE_ENV, storage)
    assert output_location(path) == expected.format(cwd=tmp_path.resolve())
    if "://" not in expected:
        assert local_output_folder(path) == Path(expected.format(cwd=tmp_path.resolve()))


def test_a_sweep_keeps_its_state_on_this_machine_and_its_trials_on_shared_storage(
    monkeypatch, tmp_path
):
    from crisscross.platform.sweep.plan import plan_sweep

    monkeypatch.setenv("CRISSCROSS_STORAGE", "s3://bucket/cc")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sweep = tmp_path / "s.yaml"
    quickstart = REPO / "experiments" / "pretext" / "quickstart.yaml"
    sweep.write_text(
        f"name: s\nbase: {quickstart}\nset:\n  monitor.video_root: /d/ucf\n  "
        "monitor.audio_root: /d/esc\nspace:\n  loss.w_sync: {grid: [0.5, 1.0]}\n"
    )
    plan = plan_sweep(sweep)
    assert plan.folder == str(tmp_path / "home" / "crisscross" / "runs" / "sweeps" / "s")
    assert plan.trial_runs == "s3://bucket/cc/runs/sweeps/s/pretraining"


@pytest.mark.parametrize("host", ["0", "0.0.0.0", "::", "[::]", "*", "", "0:0:0:0:0:0:0:0", "0x0"])
def test_the_tracking_server_refuses_every_spelling_of_every_interface(run_cli, tmp_path, host):
    from crisscross.platform.cluster.tracking_server import ServerError, default_spec

    with pytest.raises(ServerError, match=f"--host {re.escape(repr(host))} would listen on every"):
        default_spec(host=host, state_dir=str(tmp_path))
    result = run_cli("cluster", "tracking-server", "--host", host, "--state-dir", str(tmp_path))
    assert result.exit_code == 2 and "would listen on every interface" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


@pytest.mark.parametrize("host", ["10.0.1.5", "127.0.0.1", "::1", "head.internal"])
def test_the_tracking_server_takes_a_single_address(tmp_path, host):
    from crisscross.platform.cluster.tracking_server import default_spec

    assert default_spec(host=host, state_dir=str(tmp_path)).host == host


def test_the_tracking_server_refuses_every_interface_and_defaults_to_shared_storage(
    monkeypatch, tmp_path
):
    from crisscross.platform.cluster.tracking_server import (
        ServerError,
        default_spec,
        server_command,
    )

    monkeypatch.setenv("CRISSCROSS_STORAGE", "s3://bucket/cc")
    with pytest.raises(ServerError, match="would listen on every interface"):
        default_spec(host="0.0.0.0", state_dir=str(tmp_path))
    spec = default_spec(host="10.0.1.5", state_dir=str(tmp_path))
    command = server_command(copy.deepcopy(spec))
    assert command[command.index("--host") + 1] == "10.0.1.5"
    assert command[command.index("--artifacts-destination") + 1] == "s3://bucket/cc/mlflow"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlflow.db"
    assert "--serve-artifacts" in command
    assert "10.0.1.5:5000" in command[command.index("--allowed-hosts") + 1].split(",")


def test_the_tracking_server_with_auth_signs_in_its_user_and_writes_no_password(
    monkeypatch, tmp_path
):
    """`--auth`: MLflow's basic-auth app with the admin from MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD (the client's own variables), handed over in the environment; the
    settings file holds no password. The server itself runs in test_cluster_job's cluster."""
    import uuid

    from crisscross.platform.cluster.tracking_server import (
        AUTH_FILE,
        ServerError,
        default_spec,
        server_command,
        server_env,
    )

    monkeypatch.delenv("CRISSCROSS_STORAGE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "crisscross")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    spec = default_spec(host="10.0.1.5", state_dir=str(tmp_path), workers=1, auth=True)
    assert server_command(spec)[-2:] == ["--app-name", "basic-auth"]
    assert "--app-name" not in server_command(default_spec(host="10.0.1.5", state_dir="x"))
    with pytest.raises(ServerError, match="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASS"):
        server_env(spec)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "short")
    with pytest.raises(ServerError, match="at least 12 characters"):
        server_env(spec)
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    env = server_env(spec)
    settings = (tmp_path / AUTH_FILE).read_text()
    assert password not in settings and "admin_username = crisscross" in settings
    assert "default_permission = NO_PERMISSIONS" in settings
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / AUTH_FILE)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == password
    assert password not in env["MLFLOW_FLASK_SERVER_SECRET_KEY"]


def test_a_server_started_without_auth_is_not_reused_for_auth(monkeypatch, tmp_path):
    """`--detach --auth` finding a running server without the basic-auth app (one from before
    an upgrade: `ray stop` does not stop it) stops it and starts another; the same settings
    reuse it."""
    from crisscross.platform.cluster import tracking_server as ts

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "crisscross")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a-long-enough-password")
    running = {"pid": 4242, "uri": "http://10.0.1.5:5000", "auth": False}
    stopped = []
    monkeypatch.setattr(ts, "recorded", lambda state_dir: dict(running))
    monkeypatch.setattr(ts, "healthy", lambda uri, timeout=2.0: True)
    monkeypatch.setattr(ts, "stop_group", lambda pid, timeout=20.0: stopped.append(pid))

    class StartedError(Exception):
        pass

    def popen(*args, **kwargs):
        raise StartedError

    monkeypatch.setattr(ts.subprocess, "Popen", popen)
    plain = ts.default_spec(host="10.0.1.5", state_dir=str(tmp_path))
    assert ts.start_detached(plain)["reused"] is True and stopped == []
    with pytest.raises(StartedError):
        ts.start_detached(ts.default_spec(host="10.0.1.5", state_dir=str(tmp_path), auth=True))
    assert stopped == [4242]
