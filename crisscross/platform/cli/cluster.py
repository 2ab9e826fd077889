"""`crisscross cluster`: checking a cluster file and running its MLflow server (see the README)."""

from __future__ import annotations

import os

import click

from crisscross.platform.cli.common import BadInput


@click.group()
def cluster() -> None:
    """Check a cluster file; run the cluster's MLflow tracking server."""


@cluster.command("check")
@click.argument("cluster_file", type=click.Path(exists=True, dir_okay=False))
def check(cluster_file: str) -> None:
    """Validate CLUSTER_FILE against Ray's cluster schema and the security rules (only SSH
    reachable from outside, token authentication on every node, no credentials in the file)."""
    from crisscross.platform.cluster.check import check_cluster

    try:
        problems = check_cluster(cluster_file)
    except (OSError, ValueError) as exc:
        raise BadInput(f"{cluster_file}: {exc}") from None
    if problems:
        raise BadInput("\n".join(f"{cluster_file}: {p}" for p in problems))
    click.echo(f"{cluster_file}: valid for Ray 2.60 and the security rules")


@cluster.command("tracking-server")
@click.option("--host", help="Address to listen on [this machine's private address].")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--backend-store-uri",
    help="Database for runs and metrics [sqlite:///<state-dir>/mlflow.db]; e.g. an RDS "
    "postgresql:// URI to outlive the cluster.",
)
@click.option(
    "--artifacts-destination",
    help="Where artifacts go [$CRISSCROSS_STORAGE/mlflow, else <state-dir>/mlflow-artifacts].",
)
@click.option(
    "--state-dir",
    default="~/crisscross",
    show_default=True,
    help="Folder for the SQLite store, the log and the running server's record.",
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--detach",
    is_flag=True,
    help="Start in the background (or reuse the running one), wait until it answers, and print "
    "`export MLFLOW_TRACKING_URI=...` for eval.",
)
@click.option("--stop", is_flag=True, help="Stop the server recorded in --state-dir.")
@click.option(
    "--auth",
    is_flag=True,
    help="MLflow's basic-auth app: every request needs a user and password; the admin is "
    "$MLFLOW_TRACKING_USERNAME with $MLFLOW_TRACKING_PASSWORD (what every client sends).",
)
def tracking_server(
    host: str | None,
    port: int,
    backend_store_uri: str | None,
    artifacts_destination: str | None,
    state_dir: str,
    workers: int,
    detach: bool,
    stop: bool,
    auth: bool,
) -> None:
    """Run the MLflow tracking server for the cluster (on its head node): a database backend
    store, artifacts to the shared storage, bound to the private address."""
    from crisscross.platform.cluster.tracking_server import (
        ServerError,
        default_spec,
        server_command,
        server_env,
        start_detached,
        stop_recorded,
    )

    try:
        spec = default_spec(
            host=host,
            port=port,
            backend_store_uri=backend_store_uri,
            artifacts_destination=artifacts_destination,
            state_dir=state_dir,
            workers=workers,
            auth=auth,
        )
        if stop:
            state = stop_recorded(spec.state_dir)
            click.echo(f"stopped {state['uri']}" if state else "no server was running", err=True)
            return
        if detach:
            state = start_detached(spec)
        else:
            env = server_env(spec)
    except ServerError as exc:
        raise BadInput(str(exc)) from None
    if detach:
        what = "running" if state["reused"] else "started"
        where = f"{state['uri']} (log {state['log']})"
        click.echo(f"MLflow tracking server {what} at {where}", err=True)
        click.echo(f"export MLFLOW_TRACKING_URI={state['uri']}")
        return
    click.echo(f"MLflow tracking server at {spec.uri}", err=True)
    command = server_command(spec)
    os.execve(command[0], command, env)
