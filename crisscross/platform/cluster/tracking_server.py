"""The cluster's MLflow tracking server, run on its head (`crisscross cluster tracking-server`).

A database backend store (SQLite on the head's disk by default, or any SQLAlchemy URI such as an
RDS PostgreSQL), artifacts proxied by the server to the shared storage ($CRISSCROSS_STORAGE/mlflow),
bound to the node's private address: the cluster's nodes reach it, and the outside world only
through an SSH tunnel. Clients send artifacts through the server (--serve-artifacts), so workers
need no storage credentials of their own.

With `auth`, MLflow's basic-auth app runs in front of it: every request but /health needs a user
and password, and users other than the admin get no permission unless granted one. The admin is
the user of MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, the variables every MLflow
client sends its credentials from, so the cluster's nodes set them once (cluster.yaml) and the
server, the jobs and the workers all use them. The password is handed to the server in its
environment, never written to a file; the users' database is in the state folder.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from crisscross.datasets.fs import atomic_write_text
from crisscross.platform.redact import redact
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
    auth: bool = False  # MLflow's basic-auth app (the module's docstring)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"


def listens_everywhere(host: str) -> bool:
    """Whether binding to `host` listens on every interface: "", "*", "0.0.0.0" and the short
    IPv4 spellings the resolver accepts ("0", "0.0"), "::" and its long forms, bracketed or not."""
    host = host.strip().strip("[]").strip()
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        pass
    try:  # inet_aton reads "0", "0.0", "0x0" as 0.0.0.0, as the server's bind would
        return socket.inet_aton(host) == bytes(4)
    except OSError:
        return False


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
    auth: bool = False,
) -> ServerSpec:
    """The server's settings; what is not given comes from this machine and $CRISSCROSS_STORAGE."""
    state = Path(absolute(state_dir or "~/crisscross"))
    if host is not None and listens_everywhere(host):
        raise ServerError(
            f"--host {host!r} would listen on every interface; give the private address (leave "
            "--host out for the default) and reach the UI through an SSH tunnel"
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
        auth=auth,
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
        *(["--app-name", "basic-auth"] if spec.auth else []),
    ]


AUTH_FILE = "mlflow-auth.ini"  # in the state folder: the basic-auth app's settings, no password


def server_env(spec: ServerSpec) -> dict[str, str]:
    """The environment to start the server with: with `spec.auth`, the basic-auth app's settings
    file (written to the state folder) and the admin's password; ServerError when the
    credentials are not set."""
    env = dict(os.environ)
    if not spec.auth:
        return env
    user = env.get("MLFLOW_TRACKING_USERNAME", "").strip()
    password = env.get("MLFLOW_TRACKING_PASSWORD", "")
    if not user or len(password) < 12:
        raise ServerError(
            "--auth: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (at least 12 "
            "characters) on every node: the server's admin is that user, and every job and "
            "worker signs in with them (cluster.yaml reads them from ~/.crisscross.env)"
        )
    folder = Path(spec.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    settings = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{folder / 'mlflow-auth.db'}\n"
        f"admin_username = {user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a password's check (PBKDF2) costs about as much as a metric batch: each worker
        # process checks a user's password once a minute, not on every request
        "auth_cache_ttl_seconds = 60\n"
    )
    atomic_write_text(str(folder / AUTH_FILE), settings)
    # the app's forms need a CSRF key its workers share: a new one each start, in no file
    csrf = secrets.token_hex(32)
    return env | {
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / AUTH_FILE),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,  # read once, when the users' database is new
        "MLFLOW_FLASK_SERVER_SECRET_KEY": csrf,
    }


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
    try:
        state = json.loads(path.read_text())
        pid = int(state["pid"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ServerError(
            f"{path}: damaged ({type(exc).__name__}: {exc}); stop any MLflow server still "
            "running on this machine, delete the file and start again"
        ) from None
    try:  # alive, and still the server (not another process that got the pid since)
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return state if b"mlflow" in command else None


def start_detached(spec: ServerSpec, *, timeout: float = 120.0) -> dict:
    """Start the server in the background (its own session) unless the one recorded in the state
    folder still answers; wait until it answers. Returns {pid, uri, log, ...}."""
    state = recorded(spec.state_dir)
    if state is not None and bool(state.get("auth")) != spec.auth:
        stop_group(int(state["pid"]))  # started with(out) the basic-auth app: not reused
        state = None
    if state is not None and healthy(state["uri"]):
        return state | {"reused": True}
    folder = Path(spec.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not is_uri(spec.artifacts_destination):
        Path(spec.artifacts_destination).mkdir(parents=True, exist_ok=True)
    log = folder / "tracking-server.log"
    env = server_env(spec)
    with log.open("ab") as stream:
        process = subprocess.Popen(
            server_command(spec),
            env=env,
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command; stopped by its process group
        )
    state = asdict(spec) | {"pid": process.pid, "uri": spec.uri, "log": str(log)}
    state["backend_store_uri"] = redact(spec.backend_store_uri)  # e.g. postgresql://user:pw@..
    deadline = time.monotonic() + timeout
    while not healthy(spec.uri):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_group(process.pid)
            tail = log.read_text(errors="replace")[-2000:]
            raise ServerError(f"the MLflow server did not start on {spec.uri}; {log}:\n{tail}")
        time.sleep(0.5)
    atomic_write_text(str(folder / STATE_FILE), json.dumps(state, indent=1))
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
