"""`crisscross pretrain`: check everything, then run the Ray Train job and track it in MLflow.

Order: inputs are checked (data, manifest, batch, resources, tracking store) before any worker
starts; the run folder `<run.output_dir>/<run.name>` ties Ray's checkpoints to one MLflow run, so
the same command continues where it stopped, in the same MLflow run. A lease keeps one writer per
run folder; SIGINT/SIGTERM checkpoint at the current step and close the run as KILLED.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.train
import torch
from mlflow.tracking import MlflowClient
from ray.train.torch import TorchTrainer

import crisscross
from crisscross.config import ExperimentConfig, dump_config
from crisscross.datasets.epoch_identity import identity_rows
from crisscross.datasets.fs import join, resolve
from crisscross.datasets.layouts import LayoutError
from crisscross.datasets.manifest import (
    build_manifest,
    read_manifest,
    summary,
)
from crisscross.datasets.pipeline import usable_rows
from crisscross.platform.journal import JOURNAL_FILE
from crisscross.platform.lease import Lease, LeaseError
from crisscross.platform.pretrain.closing import (
    Outcome,
    RunFailedError,
    RunInterruptedError,
    finish,
    outcome_of,
    uri_exists,
)
from crisscross.platform.pretrain.resume_check import (
    ResumeRefusedError,
    check_resume,
    record_data,
    resume_point,
)
from crisscross.platform.pretrain.run_record import write_record
from crisscross.platform.pretrain.stopping import StopNow, StopRequest
from crisscross.platform.redact import public_config, redact, redact_tree
from crisscross.platform.storage import absolute, output_location
from crisscross.platform.tracking import (
    MlflowTracker,
    TrackingError,
    check_tracking,
    close_run,
    drop_pending_close,
    experiment_id,
    flatten,
    log_params_and_tags,
    tracking_uri,
)
from crisscross.trainers.builders import clip_spec
from crisscross.trainers.monitor import MonitorSet
from crisscross.trainers.pretrain import PretrainJob
from crisscross.trainers.worker_loop import train_loop_per_worker


class PretrainError(RuntimeError):
    """Bad input or an unusable environment, found before training; the message says what to do."""


def pretext_manifest(config: ExperimentConfig, say: Callable[[str], None]) -> str:
    """The manifest to train on: data.manifest, or the root's default (built when missing)."""
    d = config.data
    if d.manifest:
        path = absolute(d.manifest)
        if not uri_exists(path):
            raise PretrainError(f"data.manifest: {d.manifest}: no such file")
        return path
    if not d.root:
        raise PretrainError(
            "data.root is not set: give the dataset folder with --root DIR "
            "(or --set data.root=DIR, or data.manifest in the experiment file)"
        )
    root = absolute(d.root)
    if not uri_exists(root):
        raise PretrainError(f"data.root: {d.root}: no such folder")
    say(f"manifest of {root}: probing new or changed files")
    try:
        return build_manifest(d.dataset, root, classes_file=d.classes_file).path
    except (LayoutError, FileNotFoundError, NotADirectoryError) as exc:
        raise PretrainError(f"data.root: {exc}") from None


def monitor_sets(config: ExperimentConfig) -> tuple[MonitorSet, ...]:
    m = config.monitor
    if not m.every:
        return ()
    sets = []
    for key, dataset, root in (
        ("monitor.video_root", m.video_dataset, m.video_root),
        ("monitor.audio_root", "esc50", m.audio_root),
    ):
        if root is None:
            continue
        root = absolute(root)
        if not uri_exists(root):
            raise PretrainError(f"{key}: {root}: no such folder")
        try:
            report = build_manifest(dataset, root)
        except (LayoutError, FileNotFoundError, NotADirectoryError) as exc:
            raise PretrainError(f"{key}: {exc}") from None
        if report.manifest.usable().num_rows < 2:
            raise PretrainError(f"{key}: {root} has fewer than 2 usable files for the kNN monitor")
        sets.append(MonitorSet(dataset, report.path))
    return tuple(sets)


def steps_per_epoch(config: ExperimentConfig, manifest_path: str) -> tuple[int, int, str]:
    """(global steps per epoch, usable clips, manifest digest), or PretrainError."""
    try:
        manifest = read_manifest(manifest_path)
    except ValueError as exc:
        raise PretrainError(f"data.manifest: {exc}") from None
    usable = usable_rows(manifest, clip_spec(config)).num_rows
    if usable == 0:
        raise PretrainError(
            f"{manifest_path}: no usable clips for pretraining ({manifest.table.num_rows} files; "
            f"none ok and long enough for the '{config.data.sampling}' windows).\n"
            + summary(manifest)
        )
    visits = usable * config.optim.repeats_per_epoch
    steps = visits // config.optim.batch_size
    if steps == 0:
        raise PretrainError(
            f"optim.batch_size {config.optim.batch_size} is larger than the dataset: "
            f"{usable} usable clips x {config.optim.repeats_per_epoch} repeats = {visits} samples "
            f"per epoch; lower optim.batch_size or raise optim.repeats_per_epoch"
        )
    return steps, usable, manifest_digest(manifest_path)


def manifest_digest(path: str) -> str:
    fs, inner = resolve(path)
    with fs.open_input_stream(inner) as stream:
        return hashlib.sha256(stream.read()).hexdigest()[:16]


def connect_ray() -> tuple[bool, str | None]:
    """Join $RAY_ADDRESS's cluster or start the embedded local Ray: (local, dashboard URL)."""
    address = os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():  # a caller's Ray (tests, notebooks) is used as it is
        return not address, None
    context = ray.init(
        address=address or None,
        include_dashboard=None if address else True,
        logging_level="warning",
        log_to_driver=True,
    )
    url = context.dashboard_url
    return not address, (f"http://{url}" if url and "://" not in url else url)


def tracking_and_ray(config: ExperimentConfig, say: Callable[[str], None]) -> tuple[str, bool]:
    """(the tracking URI, reachable; whether Ray is the embedded local one), or PretrainError."""
    uri = tracking_uri(config)
    try:
        check_tracking(uri)
    except TrackingError as exc:
        raise PretrainError(str(exc)) from None
    return uri, announce_ray(say)


def announce_ray(say: Callable[[str], None]) -> bool:
    """`connect_ray`, saying where the dashboard is when this call started Ray; whether Ray is
    the embedded local one."""
    local, dashboard = connect_ray()
    if dashboard:
        say(f"Ray dashboard: {dashboard}")
    return local


def cpu_request(config: ExperimentConfig) -> tuple[float, float]:
    """(training CPUs, decoding CPUs) a pretraining holds: workers, and their decode actors."""
    r, d = config.run, config.data
    return r.workers * r.cpus_per_worker, r.workers * d.decode_workers * d.decode_cpus


def check_resources(config: ExperimentConfig, *, local: bool, say: Callable[[str], None]) -> None:
    r = config.run
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    train_cpus, decode_cpus = cpu_request(config)
    problems = []
    if train_cpus > cpus:
        problems.append(
            f"run.workers {r.workers} x run.cpus_per_worker {r.cpus_per_worker} needs "
            f"{train_cpus:g} CPUs; this Ray cluster has {cpus:g}: lower run.workers or "
            "run.cpus_per_worker"
        )
    elif train_cpus + decode_cpus > cpus:
        problems.append(
            f"training ({train_cpus:g} CPUs) plus decoding (run.workers x data.decode_workers x "
            f"data.decode_cpus = {decode_cpus:g}) needs {train_cpus + decode_cpus:g} CPUs; "
            f"this Ray cluster has {cpus:g}: lower data.decode_workers or data.decode_cpus"
        )
    if r.use_gpu and gpus < r.workers:
        problems.append(
            f"run.use_gpu is true with {r.workers} workers, but this Ray cluster has {gpus:g} "
            "GPUs: set run.use_gpu false (CPU workers, gloo) or use a machine with GPUs"
        )
    if config.model.sync_batchnorm and not r.use_gpu and r.workers > 1:
        problems.append(
            "model.sync_batchnorm needs GPU workers (torch's SyncBatchNorm is CUDA-only): "
            "set it false for CPU runs"
        )
    if not problems:
        return
    if local:
        raise PretrainError("\n".join(problems))
    for problem in problems:  # an autoscaling cluster may still add the nodes
        say(f"note: {problem} (waiting for the autoscaler to add nodes)")


def git_commit() -> str:
    """The code's commit: $CRISSCROSS_GIT_COMMIT when set (a Ray job's working directory is
    uploaded without .git), else git's HEAD beside the package, else "unknown"."""
    if os.environ.get("CRISSCROSS_GIT_COMMIT"):
        return os.environ["CRISSCROSS_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(crisscross.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def open_run(
    client: MlflowClient,
    config: ExperimentConfig,
    run_dir: str,
    digest: str,
    manifest: str,
    *,
    tags: Mapping[str, str] | None = None,
    rows: pa.Table | None = None,
) -> tuple[str, dict[str, Any]]:
    """(MLflow run id, run record): the run recorded in the run folder, or a new one with
    `tags` besides the standard ones, its record keeping the epoch's `rows` (`identity_rows`)."""
    dumped = redact_tree(config.model_dump(by_alias=True, mode="json"))  # as the record holds it
    record = checked_record(config, run_dir)
    if record is not None:
        run_id = record["mlflow_run_id"]
        try:
            client.get_run(run_id)
        except Exception:
            raise PretrainError(
                f"{run_dir} belongs to MLflow run {run_id}, which the tracking store "
                f"{redact(client.tracking_uri)} does not have: use the store it was logged to "
                f"({record.get('tracking_uri')}), or another run.name"
            ) from None
        if record.get("finished_step") is None:
            client.update_run(run_id, status="RUNNING")
            drop_pending_close(run_dir)  # an end the server never took: the run goes on now
        return run_id, record
    exp = experiment_id(client, config.tracking.experiment)
    run = client.create_run(exp, run_name=config.run.name)
    run_id, commit = run.info.run_id, git_commit()
    log_params_and_tags(
        client,
        run_id,
        flatten(dumped),
        {
            "git.commit": commit,
            "mlflow.source.git.commit": commit,
            "crisscross.version": crisscross.__version__,
            "ray.version": ray.__version__,
            "torch.version": torch.__version__,
            "manifest.sha256": digest,
            "manifest.path": manifest,
            "crisscross.run_dir": run_dir,
        }
        | dict(tags or {}),
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(dump_config(public_config(config)))
        client.log_artifact(run_id, str(path))
    record = {"mlflow_run_id": run_id, "tracking_uri": client.tracking_uri, "config": dumped}
    if rows is not None:
        record["data"] = record_data(run_dir, rows)
    write_record(run_dir, record)
    return run_id, {}


def checked_record(
    config: ExperimentConfig,
    run_dir: str,
    rows: pa.Table | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """`check_resume`, its refusal a PretrainError."""
    try:
        return check_resume(config, run_dir, rows, say=say)
    except ResumeRefusedError as exc:
        raise PretrainError(str(exc)) from None


def checked_resume_point(
    run_dir: str, record: dict[str, Any] | None, say: Callable[[str], None]
) -> str:
    """`resume_point` of an unfinished run, said when it is a checkpoint; its refusal a
    PretrainError. "" for a new (no record) or a finished run."""
    if not record or record.get("finished_step") is not None:
        return ""
    try:
        point = resume_point(run_dir)
    except ResumeRefusedError as exc:
        raise PretrainError(str(exc)) from None
    if point:
        say(f"{run_dir} has no Ray snapshot: resuming from its newest whole checkpoint, {point}")
    return point


def last_checkpoint(job: PretrainJob, result: ray.train.Result) -> ray.train.Checkpoint | None:
    """Ray's last checkpoint of the run; the one it resumed from when this launch reported none
    (a run resumed without Ray's snapshot at its final step trains no further)."""
    if result.checkpoint is None and job.resume_from:
        return ray.train.Checkpoint(job.resume_from)
    return result.checkpoint


def run_pretrain(
    config: ExperimentConfig,
    *,
    say: Callable[[str], None] = print,
    monitor: tuple[MonitorSet, ...] | None = None,
    tags: Mapping[str, str] | None = None,
    callbacks: Sequence[Any] = (),
) -> Outcome:
    """Check, train, track; PretrainError for bad input, RunFailedError when training stops.

    A sweep's trial passes the monitor sets it prepared once, tags for its new MLflow run and
    Ray Train callbacks (the one that reports to Tune)."""
    manifest = pretext_manifest(config, say)
    steps, usable, digest = steps_per_epoch(config, manifest)
    storage = output_location(config.run.output_dir)
    run_dir = join(storage, config.run.name)
    rows = identity_rows(read_manifest(manifest), clip_spec(config))
    checked_record(config, run_dir, rows, say)  # a resume on other data: refused before Ray
    sets = monitor_sets(config) if monitor is None else monitor
    uri, local = tracking_and_ray(config, say)
    check_resources(config, local=local, say=say)

    with hold(run_dir, say):
        client = MlflowClient(uri)
        run_id, record = open_run(client, config, run_dir, digest, manifest, tags=tags, rows=rows)
        if record.get("finished_step") is not None:
            say(
                f"run '{config.run.name}' already finished at step {record['finished_step']} "
                f"(MLflow run {run_id}); nothing to do. Another run.name starts a new run."
            )
            done = outcome_of(client, run_id, uri, run_dir, record)
            return dataclasses.replace(done, trained=False)
        say(
            f"run '{config.run.name}': {usable} clips, {steps} steps/epoch x "
            f"{config.optim.epochs} epochs, {config.run.workers} worker(s); MLflow run {run_id} "
            f"({'resumed' if record else 'new'}) in {redact(uri)}; checkpoints in "
            f"{redact(run_dir)}"
        )
        job = PretrainJob(
            config=config.model_dump(by_alias=True),
            manifest=manifest,
            steps_per_epoch=steps,
            storage=run_dir,
            tracker=MlflowTracker(uri, run_id, journal=join(run_dir, JOURNAL_FILE)),
            monitor_sets=sets,
            resume_from=checked_resume_point(run_dir, record, say),  # under the lease
        )
        result = train(job, client, run_id, storage=storage, say=say, callbacks=callbacks)
        outcome, checkpoint = result.return_value or {}, last_checkpoint(job, result)
        done = finish(
            client, config, run_id, uri, run_dir, checkpoint, storage, step=outcome.get("step")
        )
        return dataclasses.replace(done, timing=dict(outcome.get("timing") or {}))


def train(
    job: PretrainJob,
    client: MlflowClient,
    run_id: str,
    *,
    storage: str,
    say: Callable[[str], None],
    callbacks: Sequence[Any] = (),
) -> ray.train.Result:
    """Run the TorchTrainer of `job`; its Result when training completed. Else RunFailedError
    with the MLflow run closed as FAILED, or, after SIGINT/SIGTERM, RunInterruptedError with
    the run closed as KILLED (the workers checkpoint at the current step first)."""
    r, run_dir = job.experiment().run, job.storage
    trainer = torch_trainer(
        _loop,
        job,
        run=r,
        name=r.name,
        storage=storage,
        keep_checkpoints=r.keep_checkpoints,
        callbacks=callbacks,
    )
    # Ray Train's own SIGINT handler aborts the workers at once, without a checkpoint: ours asks
    # them to checkpoint first (it is installed inside fit(), hence replaced on the instance)
    trainer._register_sigint_handler = lambda controller: None
    with StopRequest(run_dir, say=say) as stop:
        try:
            result = trainer.fit()
        except StopNow as now:
            raise interrupted(client, run_id, now.signum, None, run_dir) from None
        except ray.train.TrainingFailedError as exc:
            if stop.signum:
                raise interrupted(client, run_id, stop.signum, None, run_dir) from None
            note = close_run(client, run_id, "FAILED", run_dir=run_dir)
            raise RunFailedError(
                f"training failed ({_first_line(exc)}); checkpoints stay in {run_dir}: run the "
                f"same command again to continue from the last one{note}"
            ) from None
    outcome = result.return_value or {}
    if outcome.get("interrupted"):
        raise interrupted(client, run_id, stop.signum or signal.SIGTERM, result, run_dir)
    if outcome.get("stopped"):
        note = close_run(
            client, run_id, "FAILED", {"crisscross.stopped": outcome["stopped"]}, run_dir=run_dir
        )
        kept = result.checkpoint.path if result.checkpoint else "none"
        raise RunFailedError(f"{outcome['stopped']}; the last good checkpoint stays: {kept}{note}")
    return result


def interrupted(
    client: MlflowClient,
    run_id: str,
    signum: int,
    result: ray.train.Result | None,
    run_dir: str,
) -> RunInterruptedError:
    """Close the MLflow run as KILLED, saying why; the error the command ends with."""
    name = signal.Signals(signum).name
    if result is not None and result.checkpoint is not None:
        step = (result.return_value or {}).get("step")
        what = f"{name} at step {step}: checkpoint {redact(result.checkpoint.path)} written"
    else:
        what = f"{name} before a checkpoint at the current step: the last one in {run_dir} stays"
    note = close_run(client, run_id, "KILLED", {"crisscross.stopped": what}, run_dir=run_dir)
    return RunInterruptedError(
        signum, f"stopped by {what}; run the same command again to continue from it{note}"
    )


@contextmanager
def hold(run_dir: str, say: Callable[[str], None]) -> Iterator[None]:
    """The run folder's lease for the block (one writer per run folder), or PretrainError."""
    try:
        lease = Lease(run_dir, what="pretraining", say=say)
        lease.acquire()
    except LeaseError as exc:
        raise PretrainError(str(exc)) from None
    try:
        yield
    finally:
        lease.release()


def _loop(train_config: dict[str, Any]) -> dict[str, Any]:
    return train_loop_per_worker(train_config["job"])


def torch_trainer(
    loop: Callable[[dict[str, Any]], Any],
    job: Any,
    *,
    run: Any,
    name: str,
    storage: str,
    keep_checkpoints: int,
    callbacks: Sequence[Any] = (),
) -> TorchTrainer:
    """A TorchTrainer running `loop` on {"job": job} with the `run` section's workers, CPUs,
    GPUs and restarts; checkpoints under `storage`/`name`; Ray Train `callbacks`."""
    resources = {"CPU": run.cpus_per_worker} | ({"GPU": 1} if run.use_gpu else {})
    return TorchTrainer(
        loop,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.workers, use_gpu=run.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # no per-report lines
            callbacks=list(callbacks) or None,
        ),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:400] if text else type(exc).__name__
