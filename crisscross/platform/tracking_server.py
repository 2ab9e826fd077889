"""The cluster's MLflow tracking server, run on its head (`crisscross cluster tracking-server`).

A database backend store (SQLite on the head's disk by default, or any SQLAlchemy URI such as an
RDS PostgreSQL), artifacts proxied by the server to the shared storage ($CRISSCROSS_STORAGE/mlflow),
bound to the node's private address: the cluster's nodes reach it, and the outside world only
through an SSH tunnel. Clients send artifacts through the server (--serve-artifacts), so workers
need no storage credentials of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from crisscross.platform.storage import absolute, is_uri, shared_storage

STATE_FILE = "tracking-server.json"  # in the state folder: the running server's pid and URI


class ServerError(RuntimeError):
    """The server could not start, or its settings cannot work; the message says why."""


@dataclass(frozen=True)
class ServerSpec:
    host: str
    port: int
    backend_store_uri: str
    artifacts_destination: str
    state_dir: str  # where the state file and the log go
    workers: int = 2

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"


def private_address() -> str:
    """This machine's address on its primary network: the interface the default route uses (a
    UDP socket's local end once 'connected' to a private address; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def default_spec(
    *,
    host: str | None = None,
    port: int = 5000,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    state_dir: str | None = None,
    workers: int = 2,
) -> ServerSpec:
    """The server's settings; what is not given comes from this machine and $CRISSCROSS_STORAGE."""
    state = Path(absolute(state_dir or "~/crisscross"))
    if host in ("0.0.0.0", "::"):
        raise ServerError(
            f"--host {host} would listen on every interface; give the private address (the "
            "default) and reach the UI through an SSH tunnel"
        )
    storage = shared_storage()
    artifacts = artifacts_destination or (
        f"{storage}/mlflow" if storage else str(state / "mlflow-artifacts")
    )
    return ServerSpec(
        host=host or private_address(),
        port=port,
        backend_store_uri=backend_store_uri or f"sqlite:///{state / 'mlflow.db'}",
        artifacts_destination=artifacts if is_uri(artifacts) else absolute(artifacts),
        state_dir=str(state),
        workers=workers,
    )


def server_command(spec: ServerSpec) -> list[str]:
    """The `mlflow server` command line for `spec` (this interpreter's MLflow)."""
    hosts = {spec.host, "localhost", "127.0.0.1"}
    allowed = ",".join(sorted(f"{h}:{spec.port}" for h in hosts) + sorted(hosts))
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--backend-store-uri",
        spec.backend_store_uri,
        "--artifacts-destination",
        spec.artifacts_destination,
        "--serve-artifacts",
        "--allowed-hosts",
        allowed,
        "--workers",
        str(spec.workers),
    ]


def healthy(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def recorded(state_dir: str) -> dict | None:
    """The server this state folder recorded, if its process is still alive."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    try:  # alive, and still the server (not another process that got the pid since)
        command = Path(f"/proc/{int(state['pid'])}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError):
        return None
    return state if b"mlflow" in command else None


def start_detached(spec: ServerSpec, *, timeout: float = 120.0) -> dict:
    """Start the server in the background (its own session) unless the one recorded in the state
    folder still answers; wait until it answers. Returns {pid, uri, log, ...}."""
    state = recorded(spec.state_dir)
    if state is not None and healthy(state["uri"]):
        return state | {"reused": True}
    folder = Path(spec.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_uri(spec.artifacts_destination):
        Path(spec.artifacts_destination).mkdir(parents=True, exist_ok=True)
    log = folder / "tracking-server.log"
    with log.open("ab") as stream:
        process = subprocess.Popen(
            server_command(spec),
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command; stopped by its process group
        )
    state = asdict(spec) | {"pid": process.pid, "uri": spec.uri, "log": str(log)}
    deadline = time.monotonic() + timeout
    while not healthy(spec.uri):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_group(process.pid)
            tail = log.read_text(errors="replace")[-2000:]
            raise ServerError(f"the MLflow server did not start on {spec.uri}; {log}:\n{tail}")
        time.sleep(0.5)
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))
    return state | {"reused": False}


def stop_group(pid: int, *, timeout: float = 20.0) -> None:
    """SIGTERM the process group this module started (the server and its workers), then KILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect `pid`'s exit status when it is this process's child (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_recorded(state_dir: str) -> dict | None:
    """Stop the server recorded in `state_dir` (the one `start_detached` started), if running."""
    state = recorded(state_dir)
    if state is not None:
        stop_group(int(state["pid"]))
        (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return state
