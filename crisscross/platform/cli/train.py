"""Training commands: `pretrain` and `quickstart` (`bench train` is in crisscross/bench/cli.py).

The jobs (torch, Ray, MLflow) are imported inside the commands, so that `--help` starts fast.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from crisscross.platform.cli.common import SET_OPTION, BadInput, as_exit_status, load_experiment

if TYPE_CHECKING:
    from crisscross.platform.pretrain.closing import Outcome


@click.command()
@click.argument("experiment", required=False, type=click.Path(dir_okay=False))
@SET_OPTION
@click.option("--root", help="Dataset root, a folder or URI (sets data.root).")
@click.option("--workers", type=click.IntRange(min=1), help="Ray Train workers (sets run.workers).")
@click.option(
    "--resume",
    "resume_run",
    metavar="RUN_ID",
    help="Continue the pretraining logged as MLflow run RUN_ID, from its last checkpoint "
    "(EXPERIMENT defaults to that run's config).",
)
def pretrain(
    experiment: str | None,
    sets: tuple[str, ...],
    root: str | None,
    workers: int | None,
    resume_run: str | None,
) -> None:
    """Pretrain the CrissCross encoders of EXPERIMENT on Ray Train, tracked in MLflow.

    Running the same command again continues from the last checkpoint, in the same MLflow run.
    """
    extra: dict[str, Any] = {}
    if root is not None:
        extra["data.root"] = root
    if workers is not None:
        extra["run.workers"] = workers
    with tempfile.TemporaryDirectory(prefix="crisscross-resume-") as scratch:
        if resume_run:
            from crisscross.platform.pretrain.job import PretrainError
            from crisscross.platform.pretrain.resume import resume_target

            try:
                saved, where = resume_target(resume_run, scratch)
            except PretrainError as exc:
                raise BadInput(str(exc)) from None
            experiment = experiment or saved
            extra = where | extra
        if experiment is None:
            raise BadInput("give an EXPERIMENT file (or --resume RUN_ID)")
        config = load_experiment(experiment, sets, extra)
    with as_exit_status():
        from crisscross.platform.pretrain.job import run_pretrain

        outcome = run_pretrain(config, say=click.echo)
    click.echo(report(outcome))


@click.command()
@click.option(
    "--workdir",
    default="quickstart",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the synthetic data and the run folder go.",
)
def quickstart(workdir: str) -> None:
    """Synthesise data, pretrain the tiny model with 2 Ray workers on CPU, track it in the local
    MLflow store, print the kNN accuracy of the encoders before and after, then run the ESC-50
    SVM and a short UCF101 fine-tune on the pretrained encoders and print the results table."""
    from crisscross.platform.cli.eval import summary

    start = time.perf_counter()
    with as_exit_status():
        from crisscross.platform.pretrain.quickstart import run_quickstart

        result = run_quickstart(Path(workdir), say=click.echo)
    click.echo(report(result.pretrain))
    for outcome in result.evaluations:
        click.echo(summary(outcome))
    click.echo(
        "\nWhat pretraining gained (top-1 accuracy; the random init is the run's own "
        "initial weights, evaluated the same way):\n"
    )
    click.echo(result.gains)
    click.echo("\n" + result.report)
    click.echo(f"(also in {result.report_path})")
    click.echo(f"quickstart took {time.perf_counter() - start:.0f} s")


def report(outcome: Outcome) -> str:
    lines = [
        f"done: step {outcome.final_step}; MLflow run {outcome.run_id}",
        f"  backbones (released format): {', '.join(outcome.backbones.values())} "
        "(artifacts of the run)",
        f"  checkpoints: {outcome.run_dir}",
    ]
    for key in sorted(set(outcome.knn_before) | set(outcome.knn_after)):
        before = outcome.knn_before.get(key, float("nan"))
        after = outcome.knn_after.get(key, float("nan"))
        kind, _, name = key.partition("/")
        title = "kNN" if kind == "knn" else "probe"
        against = []
        if f"init/{key}" in outcome.baseline:
            against.append(f"random init {outcome.baseline[f'init/{key}']:.3f}")
        if f"chance/{name}" in outcome.baseline:
            against.append(f"chance {outcome.baseline[f'chance/{name}']:.3f}")
        tail = f" ({', '.join(against)})" if against else ""
        lines.append(f"  {title} {name}: {before:.3f} before -> {after:.3f} after training{tail}")
    from crisscross.platform.redact import redact

    lines.append(f"  browse: mlflow ui --backend-store-uri {redact(outcome.tracking_uri)}")
    return "\n".join(lines)


@click.command()
@click.argument("run_dir")
@click.option(
    "--tracking-uri",
    help="The tracking store or server [the run record's; a masked password comes from "
    "$MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD].",
)
def sync(run_dir: str, tracking_uri: str | None) -> None:
    """Send what the pretraining run folder RUN_DIR kept while its tracking server did not
    answer: the metrics its workers journaled, and the run's final status (KILLED or FAILED)
    that could not be set when it ended. Nothing is removed until the server has taken it."""
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from crisscross.platform.cli.common import RunFailed
    from crisscross.platform.lease import Lease, LeaseError
    from crisscross.platform.pretrain.run_record import RUN_RECORD, RecordError, read_record
    from crisscross.platform.redact import redact
    from crisscross.platform.tracking import (
        PENDING_CLOSE,
        read_pending_close,
        sync_run,
        unanswered,
    )

    try:
        record, close = read_record(run_dir), read_pending_close(run_dir)
    except (RecordError, OSError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    if record is None:
        raise BadInput(f"{run_dir}: no {RUN_RECORD}: not the folder of a pretraining run")
    run_id = record["mlflow_run_id"]
    if close is not None and close["run_id"] != run_id:
        raise BadInput(
            f"{run_dir}: the status kept there is for MLflow run {close['run_id']}, but the run "
            f"record names {run_id}; delete {PENDING_CLOSE}"
        )
    client = MlflowClient(tracking_uri or recorded_uri(record, run_dir))
    try:
        with Lease(run_dir, what="command", other="`crisscross sync` once it has ended"):
            done = sync_run(client, run_id, run_dir, close)
    except LeaseError as exc:  # a run going on there sends its own metrics and status
        raise BadInput(str(exc)) from None
    except (MlflowException, requests.RequestException, OSError) as exc:
        raise RunFailed(
            f"nothing more sent: {unanswered(exc, client)}; {run_dir} keeps the rest: run this "
            "again once it answers (--tracking-uri names another server or its credentials)"
        ) from None
    where = f"MLflow run {run_id} in {redact(client.tracking_uri)}"
    click.echo(f"{where}: " + ("; ".join(done) if done else "nothing to send"))


def recorded_uri(record: dict[str, Any], run_dir: str) -> str | None:
    """The tracking URI the run record names. Records mask credentials: such a URI is taken
    from $MLFLOW_TRACKING_URI when that is the same URI, or used without its user and password
    when it is http(s) (MLflow then reads $MLFLOW_TRACKING_USERNAME and _PASSWORD); else
    BadInput asking for --tracking-uri."""
    import os
    from urllib.parse import urlsplit, urlunsplit

    from crisscross.platform.redact import redact

    recorded = str(record.get("tracking_uri") or "") or None
    if recorded is None or "***" not in recorded:
        return recorded
    environment = os.environ.get("MLFLOW_TRACKING_URI", "")
    if environment and redact(environment) == recorded:
        return environment
    parts = urlsplit(recorded)
    host = parts.netloc.rpartition("@")[2]
    if parts.scheme in ("http", "https") and "***" not in host + parts.path + parts.query:
        return urlunsplit(parts._replace(netloc=host))
    raise BadInput(
        f"{run_dir}: its record holds the tracking URI masked ({recorded}); pass the URI with "
        "--tracking-uri"
    )
