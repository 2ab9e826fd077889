"""`crisscross finetune`: full fine-tuning of a pretrained video encoder on UCF101/HMDB51 splits,
each split a Ray Train run (run side by side when the cluster has room), one MLflow run in all."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import ray
import ray.train

from crisscross.config import FinetuneExperiment
from crisscross.platform.evaluation.common import (
    TITLES,
    EvalError,
    EvalOutcome,
    EvalRun,
    check_backbone,
    checked_tracking,
    fold_rows,
    labelled_set,
    log_fold,
    open_eval_run,
    parse_folds,
    pretrained_weights,
    summarise,
)
from crisscross.platform.pretrain.closing import RunFailedError
from crisscross.platform.pretrain.job import connect_ray, torch_trainer
from crisscross.platform.storage import output_location
from crisscross.platform.tracking import MlflowTracker
from crisscross.trainers.finetune import FinetuneJob, finetune_loop_per_worker


def protocol_name(config: FinetuneExperiment) -> str:
    return f"finetune {config.data.frames}f"


def run_finetune(
    config: FinetuneExperiment, *, source: str, folds: str, say: Callable[[str], None] = print
) -> EvalOutcome:
    """Check everything, fine-tune each split, log per-fold and mean top-1; EvalError for bad
    input, RunFailedError when a split's training fails."""
    d, r = config.data, config.run
    chosen = parse_folds(folds, d.dataset)
    uri = checked_tracking(config)
    manifest = labelled_set(d.dataset, d.root, say)
    splits = {fold: fold_rows(manifest, d.dataset, fold) for fold in chosen}
    _check_epochs(config, splits)
    with tempfile.TemporaryDirectory(prefix="crisscross-weights-") as scratch:
        pretrained = pretrained_weights(source, modality="video", uri=uri, scratch=scratch)
    check_backbone(pretrained, config, modality="video", command="finetune")
    cpus = _cluster_cpus(config, say)
    run = open_eval_run(
        uri,
        config,
        kind="finetune",
        dataset=d.dataset,
        protocol=protocol_name(config),
        pretrained=pretrained,
        folds=chosen,
    )
    side_by_side = len(chosen) > 1 and r.workers * r.cpus_per_worker * len(chosen) <= cpus
    say(
        f"fine-tuning {TITLES[d.dataset]} split(s) {', '.join(map(str, chosen))} "
        f"({'side by side' if side_by_side else 'one after another'}) from {pretrained.where}; "
        f"MLflow run {run.run_id}"
    )
    jobs = [
        FinetuneJob(
            config=config.model_dump(by_alias=True),
            fold=fold,
            train_rows=train,
            test_rows=test,
            classes=len(manifest.classes),
            backbone=pretrained.state,
            source=pretrained.where,
            tracker=MlflowTracker(uri, run.run_id),
        )
        for fold, (train, test) in splits.items()
    ]
    per_fold, best = _fit_all(run, jobs, manifest.classes, config, side_by_side=side_by_side)
    return _conclude(run, config, dict(sorted(per_fold.items())), best, pretrained.label)


def _check_epochs(config: FinetuneExperiment, splits: dict[int, tuple[list, list]]) -> None:
    """Every split's epoch holds at least one global batch."""
    d = config.data
    for fold, (train, _) in splits.items():
        samples = len(train) * d.clips_per_video
        if samples < config.optim.batch_size:
            raise EvalError(
                f"optim.batch_size {config.optim.batch_size} is larger than split {fold}'s epoch "
                f"({len(train)} videos x {d.clips_per_video} clips = {samples}): lower it"
            )


def _cluster_cpus(config: FinetuneExperiment, say: Callable[[str], None]) -> float:
    """Connect to Ray; the cluster's CPUs, EvalError when a local one cannot hold one split."""
    r = config.run
    local, dashboard = connect_ray()
    if dashboard:
        say(f"Ray dashboard: {dashboard}")
    cpus = ray.cluster_resources().get("CPU", 0.0)
    need = r.workers * r.cpus_per_worker
    if local and need > cpus:
        raise EvalError(
            f"run.workers {r.workers} x run.cpus_per_worker {r.cpus_per_worker} needs {need:g} "
            f"CPUs; this Ray cluster has {cpus:g}"
        )
    return cpus


def _fit_all(
    run: Any,
    jobs: list[FinetuneJob],
    classes: list[str],
    config: FinetuneExperiment,
    *,
    side_by_side: bool,
) -> tuple[dict[int, float], dict[int, float]]:
    """Fine-tune every split (side by side as Ray tasks, or one after another); each split is
    logged as soon as it ends, so a failure of another loses nothing."""
    storage = output_location(config.run.output_dir)
    per_fold: dict[int, float] = {}
    best: dict[int, float] = {}
    try:
        if side_by_side:
            pending = {_fit_remote.remote(job, storage, run.run_id): job for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                _log_result(run, job, ray.get(done[0]), classes, per_fold, best)
        else:
            for job in jobs:
                result = fit_fold(job, storage, run.run_id)
                _log_result(run, job, result, classes, per_fold, best)
    except (ray.train.TrainingFailedError, ray.exceptions.RayError) as exc:
        run.client.set_terminated(run.run_id, status="FAILED")
        kept = ", ".join(map(str, sorted(per_fold)))
        done = f"; split(s) {kept} finished and logged" if per_fold else ""
        raise RunFailedError(
            f"fine-tuning failed ({str(exc).strip().splitlines()[-1]}){done}"
        ) from None
    return per_fold, best


def fit_fold(job: FinetuneJob, storage: str, run_id: str) -> dict[str, Any]:
    """One split's Ray Train run; rank 0's result dict."""
    config = FinetuneExperiment.model_validate(job.config)
    trainer = torch_trainer(
        _loop,
        job,
        run=config.run,
        name=f"{config.run.name}-{run_id[:8]}-fold{job.fold}",
        storage=storage,
        keep_checkpoints=1,
    )
    return trainer.fit().return_value


# max_calls=1: the worker process exits after its split, and with it the Train controller
# actor it owns (an idle pooled worker would keep that actor, about 1 GB, alive until Ray ends)
@ray.remote(num_cpus=0, max_calls=1)
def _fit_remote(job: FinetuneJob, storage: str, run_id: str) -> dict[str, Any]:
    return fit_fold(job, storage, run_id)


def _loop(train_config: dict[str, Any]) -> dict[str, Any]:
    return finetune_loop_per_worker(train_config["job"])


def _log_result(
    run: EvalRun,
    job: FinetuneJob,
    result: dict[str, Any],
    classes: list[str],
    per_fold: dict[int, float],
    best: dict[int, float],
) -> None:
    top1 = log_fold(
        run, job.fold, labels=result["labels"], predicted=result["predicted"], classes=classes
    )
    per_fold[job.fold], best[job.fold] = top1, result["best"]
    run.client.log_metric(run.run_id, f"fold{job.fold}/top1", top1)
    run.client.log_metric(run.run_id, f"fold{job.fold}/top1_best", result["best"])
    run.client.log_metric(run.run_id, f"fold{job.fold}/best_epoch", result["best_epoch"])


def _conclude(
    run: EvalRun,
    config: FinetuneExperiment,
    per_fold: dict[int, float],
    best: dict[int, float],
    label: str,
) -> EvalOutcome:
    mean, std = summarise(run, per_fold)
    best_mean, _ = summarise(run, best, key="top1_best")
    run.client.set_terminated(run.run_id, status="FINISHED")
    return EvalOutcome(
        run.run_id,
        run.uri,
        "finetune",
        config.data.dataset,
        protocol_name(config),
        label,
        per_fold,
        mean,
        std,
        {"best": best, "best_mean": best_mean},
    )
