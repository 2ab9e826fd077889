"""`crisscross svm` and `crisscross probe`: classifiers on frozen features.

Features are extracted once per file, in parallel Ray tasks (one per run.workers, a GPU each
when run.use_gpu is set or the cluster has GPUs), batched; the classifiers are then fitted per
fold on the driver.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch

from crisscross.config import ProbeExperiment, SvmExperiment
from crisscross.datasets.crops import RepeatedDraws
from crisscross.datasets.samples import AudioClipSample, VideoClipSample
from crisscross.platform.evaluation import (
    MODALITY,
    TITLES,
    EvalOutcome,
    check_backbone,
    checked_tracking,
    labelled_set,
    log_fold,
    need_both,
    open_eval_run,
    parse_folds,
    pretrained_weights,
    split_masks,
    summarise,
    usable_files,
)
from crisscross.platform.pretrain import connect_ray
from crisscross.platform.sources import Pretrained
from crisscross.trainers.features import backbone_clip_features
from crisscross.trainers.knn import knn_predict
from crisscross.trainers.svm import SvmSettings, fit_svm_fold, logistic_probe


def svm_protocol(config: SvmExperiment) -> str:
    if config.svm.protocol == "reference":
        return f"linear SVM {config.data.seconds:g}s, reference protocol (C on test fold)"
    chosen = "C on test fold (reference code)" if config.svm.select_c == "test" else "C by CV"
    return f"linear SVM {config.data.seconds:g}s, {chosen}"


def _extract_task(
    pretrained: Pretrained,
    config: Any,
    rows: list[dict[str, Any]],
    samples: dict[str, Any],
    kind: str,
    use_gpu: bool,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    torch.set_num_threads(max(1, int(config.run.cpus_per_worker)))
    modality = MODALITY[config.data.dataset]
    backbone = pretrained.backbone(
        modality=modality, name=config.model.backbone, width=config.model.width
    )
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    return backbone_clip_features(backbone, rows, samples, key=modality, kind=kind, device=device)


def extract_parallel(
    pretrained: Pretrained,
    config: Any,
    rows: list[dict[str, Any]],
    samples: dict[str, Any],
    *,
    kind: str,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{sampler name: ((N, C, D) features, (N,) decoded)} over `run.workers` Ray tasks, each on
    a GPU when run.use_gpu is set or the cluster has GPUs."""
    r = config.run
    use_gpu = r.use_gpu or ray.cluster_resources().get("GPU", 0.0) >= 1
    task = ray.remote(_extract_task).options(
        num_cpus=r.cpus_per_worker, num_gpus=1 if use_gpu else 0
    )
    weights = ray.put(pretrained)
    shards = [s.tolist() for s in np.array_split(np.arange(len(rows)), r.workers) if len(s)]
    parts = ray.get(
        [task.remote(weights, config, [rows[i] for i in s], samples, kind, use_gpu) for s in shards]
    )
    return {
        name: (
            torch.cat([p[name][0] for p in parts]).numpy(),
            torch.cat([p[name][1] for p in parts]).numpy(),
        )
        for name in samples
    }


def _prepare(config: Any, *, source: str, folds: str, say: Callable[[str], None]):
    d = config.data
    chosen = parse_folds(folds, d.dataset)
    uri = checked_tracking(config)
    manifest = labelled_set(d.dataset, d.root, say)
    modality = MODALITY[d.dataset]
    with tempfile.TemporaryDirectory(prefix="crisscross-weights-") as scratch:
        pretrained = pretrained_weights(source, modality=modality, uri=uri, scratch=scratch)
    command = "probe" if isinstance(config, ProbeExperiment) else "svm"
    check_backbone(pretrained, config, modality=modality, command=command)
    rows = usable_files(manifest)
    connect_ray()
    return chosen, uri, manifest, pretrained, rows


def run_svm(
    config: SvmExperiment, *, source: str, folds: str, say: Callable[[str], None] = print
) -> EvalOutcome:
    """ESC-50 linear SVM on frozen audio conv5 features, per fold and averaged."""
    config, changed = config.resolved()
    if changed:
        say("svm.protocol reference sets " + "; ".join(changed))
    chosen, uri, manifest, pretrained, rows = _prepare(config, source=source, folds=folds, say=say)
    d, s = config.data, config.svm
    common = {
        "seconds": d.seconds,
        "sample_rate": d.sample_rate,
        "n_mels": d.n_mels,
        "protocol": s.protocol,
    }
    samples = {
        "train": RepeatedDraws(
            AudioClipSample(**common, train=True, seed=config.run.seed), d.train_crops, "audio"
        ),
        "test": AudioClipSample(**common, train=False, test_clips=d.test_clips),
    }
    run = open_eval_run(
        uri,
        config,
        kind="svm",
        dataset="esc50",
        protocol=svm_protocol(config),
        pretrained=pretrained,
        folds=chosen,
        extra_tags={"svm.select_c": s.select_c, "svm.protocol": s.protocol},
    )
    say(
        f"extracting SVM features of {len(rows)} files from {pretrained.where}; "
        f"MLflow run {run.run_id}"
    )
    kind = "svm_reference" if s.protocol == "reference" else "svm"
    features = extract_parallel(pretrained, config, rows, samples, kind=kind)
    crops, crops_ok = features["train"]
    clips, clips_ok = features["test"]
    _say_failures(rows, crops_ok & clips_ok, say)
    labels = np.array([row["label"] for row in rows])
    fold_of = np.array([row["fold"] for row in rows])
    settings = SvmSettings(
        s.c_grid,
        s.select_c,
        s.standardize,
        s.max_iter,
        config.run.seed,
        ties="larger" if s.protocol == "reference" else "smaller",
    )
    per_fold = {}
    for fold in chosen:
        train, test = split_masks(rows, "esc50", fold)
        train &= crops_ok & clips_ok
        need_both(train, test, fold, root=manifest.root)
        fit = fit_svm_fold(
            train_crops=crops[train],
            train_clips=clips[train],
            train_labels=labels[train],
            train_groups=fold_of[train],
            test_clips=clips[test],
            test_labels=labels[test],
            settings=settings,
        )
        predicted = np.where(clips_ok[test], fit.predicted, -1)  # undecodable: counted wrong
        per_fold[fold] = log_fold(
            run,
            fold,
            labels=labels[test].tolist(),
            predicted=predicted.tolist(),
            classes=manifest.classes,
        )
        run.client.log_metric(run.run_id, f"fold{fold}/top1", per_fold[fold])
        run.client.log_metric(run.run_id, f"fold{fold}/C", fit.c)
        for i, c in enumerate(s.c_grid):
            run.client.log_metric(
                run.run_id, f"fold{fold}/{s.select_c}_top1", fit.scores[c], step=i
            )
        say(
            f"  fold {fold}: top-1 {per_fold[fold]:.3f} with C={fit.c:g} "
            f"(chosen on {'the training folds' if s.select_c == 'cv' else 'the TEST fold'})"
        )
    mean, std = summarise(run, per_fold)
    run.client.set_terminated(run.run_id, status="FINISHED")
    return EvalOutcome(
        run.run_id, uri, "svm", "esc50", svm_protocol(config), pretrained.label, per_fold, mean, std
    )


def run_probe(
    config: ProbeExperiment, *, source: str, folds: str, say: Callable[[str], None] = print
) -> EvalOutcome:
    """Logistic regression (and kNN) on frozen pooled embeddings, per split and averaged."""
    chosen, uri, manifest, pretrained, rows = _prepare(config, source=source, folds=folds, say=say)
    d, p = config.data, config.probe
    modality = MODALITY[d.dataset]
    sample = (
        VideoClipSample(
            frames=d.frames, fps=d.fps, size=d.crop_size, train=False, test_clips=d.clips
        )
        if modality == "video"
        else AudioClipSample(
            seconds=d.seconds,
            sample_rate=d.sample_rate,
            n_mels=d.n_mels,
            train=False,
            test_clips=d.clips,
        )
    )
    protocol = f"logistic probe ({modality})"
    run = open_eval_run(
        uri,
        config,
        kind="probe",
        dataset=d.dataset,
        protocol=protocol,
        pretrained=pretrained,
        folds=chosen,
    )
    say(f"extracting embeddings of {len(rows)} {TITLES[d.dataset]} files; MLflow run {run.run_id}")
    clips, ok = extract_parallel(pretrained, config, rows, {"eval": sample}, kind="embedding")[
        "eval"
    ]
    _say_failures(rows, ok, say)
    features = clips.mean(axis=1)
    labels = np.array([row["label"] for row in rows])
    per_fold, knn = {}, {}
    for fold in chosen:
        train, test = split_masks(rows, d.dataset, fold)
        train &= ok
        need_both(train, test, fold, root=manifest.root)
        predicted = logistic_probe(
            features[train],
            labels[train],
            features[test],
            c=p.c,
            max_iter=p.max_iter,
            seed=config.run.seed,
        )
        predicted = np.where(ok[test], predicted, -1)
        per_fold[fold] = log_fold(
            run,
            fold,
            labels=labels[test].tolist(),
            predicted=predicted.tolist(),
            classes=manifest.classes,
        )
        near = knn_predict(
            torch.from_numpy(features[train]),
            torch.from_numpy(labels[train]),
            torch.from_numpy(features[test]),
            k=p.k,
            classes=len(manifest.classes),
        ).numpy()
        knn[fold] = float((near == labels[test]).mean())
        run.client.log_metric(run.run_id, f"fold{fold}/top1", per_fold[fold])
        run.client.log_metric(run.run_id, f"fold{fold}/knn_top1", knn[fold])
        say(f"  split {fold}: logistic top-1 {per_fold[fold]:.3f}, kNN top-1 {knn[fold]:.3f}")
    mean, std = summarise(run, per_fold)
    knn_mean, _ = summarise(run, knn, key="knn_top1")
    run.client.set_terminated(run.run_id, status="FINISHED")
    return EvalOutcome(
        run.run_id,
        uri,
        "probe",
        d.dataset,
        protocol,
        pretrained.label,
        per_fold,
        mean,
        std,
        {"knn": knn, "knn_mean": knn_mean},
    )


def _say_failures(rows: list[dict[str, Any]], ok: np.ndarray, say: Callable[[str], None]) -> None:
    bad = [rows[i]["path"] for i in np.flatnonzero(~ok)]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        say(
            f"  {len(bad)} file(s) failed to decode (left out of training, counted wrong if "
            f"tested): {shown}"
        )
