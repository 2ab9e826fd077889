"""`crisscross svm` and `crisscross probe`: classifiers on frozen features.

Features are extracted once per file, in parallel Ray tasks over chunks of files (`extract`:
progress, parts an interrupted run resumes from); the classifiers are then fitted per fold on
the driver.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from crisscross.config import ProbeExperiment, SvmExperiment
from crisscross.datasets.crops import RepeatedDraws
from crisscross.datasets.samples import AudioClipSample, VideoClipSample
from crisscross.platform.evaluation.common import (
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
from crisscross.platform.evaluation.extract import extract_parallel, parts_folder, remove_parts
from crisscross.platform.pretrain.job import connect_ray
from crisscross.trainers.knn import knn_predict
from crisscross.trainers.svm import FoldFit, SvmSettings, fit_svm_fold, logistic_probe


def svm_protocol(config: SvmExperiment) -> str:
    if config.svm.protocol == "reference":
        return f"linear SVM {config.data.seconds:g}s, reference protocol (C on test fold)"
    chosen = "C on test fold (reference code)" if config.svm.select_c == "test" else "C by CV"
    return f"linear SVM {config.data.seconds:g}s, {chosen}"


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


@dataclass
class _Folds:
    """What a frozen-feature protocol's folds share: the run, the files and their labels."""

    run: Any
    manifest: Any
    rows: list[dict[str, Any]]
    dataset: str
    labels: np.ndarray

    def evaluate(
        self,
        chosen: tuple[int, ...],
        usable: np.ndarray,
        fit: Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, str]],
        say: Callable[[str], None],
    ) -> dict[int, float]:
        """Top-1 per fold: `fit(fold, train, test)` gives the test files' predictions and the
        fold's line to print ({top1} stands for its top-1); files that failed to decode train
        on nothing and count wrong as tests."""
        per_fold = {}
        for fold in chosen:
            train, test = split_masks(self.rows, self.dataset, fold)
            train &= usable
            need_both(train, test, fold, root=self.manifest.root)
            predicted, line = fit(fold, train, test)
            predicted = np.where(usable[test], predicted, -1)
            per_fold[fold] = log_fold(
                self.run,
                fold,
                labels=self.labels[test].tolist(),
                predicted=predicted.tolist(),
                classes=self.manifest.classes,
            )
            self.run.client.log_metric(self.run.run_id, f"fold{fold}/top1", per_fold[fold])
            say(line.format(top1=per_fold[fold]))
        return per_fold


def run_svm(
    config: SvmExperiment, *, source: str, folds: str, say: Callable[[str], None] = print
) -> EvalOutcome:
    """ESC-50 linear SVM on frozen audio conv5 features, per fold and averaged."""
    config, changed = config.resolved()
    if changed:
        say("svm.protocol reference sets " + "; ".join(changed))
    chosen, uri, manifest, pretrained, rows = _prepare(config, source=source, folds=folds, say=say)
    s = config.svm
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
    parts = parts_folder(pretrained, config, rows, kind)
    samples = _svm_samples(config)
    features = extract_parallel(pretrained, config, rows, samples, kind=kind, parts=parts, say=say)
    (crops, crops_ok), (clips, clips_ok) = features["train"], features["test"]
    _say_failures(rows, crops_ok & clips_ok, say)
    folds_ = _Folds(run, manifest, rows, "esc50", np.array([row["label"] for row in rows]))
    fold_of = np.array([row["fold"] for row in rows])
    settings = _svm_settings(config)
    where = "the training folds" if s.select_c == "cv" else "the TEST fold"

    def fit(fold: int, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, str]:
        labels = folds_.labels
        result = fit_svm_fold(
            train_crops=crops[train],
            train_clips=clips[train],
            train_labels=labels[train],
            train_groups=fold_of[train],
            test_clips=clips[test],
            test_labels=labels[test],
            settings=settings,
        )
        run.client.log_metric(run.run_id, f"fold{fold}/C", result.c)
        for i, c in enumerate(s.c_grid):
            run.client.log_metric(
                run.run_id, f"fold{fold}/{s.select_c}_top1", result.scores[c], step=i
            )
        return result.predicted, _fold_line(fold, result, where, s.max_iter)

    per_fold = folds_.evaluate(chosen, crops_ok & clips_ok, fit, say)
    mean, std = summarise(run, per_fold)
    run.client.set_terminated(run.run_id, status="FINISHED")
    remove_parts(parts)
    return EvalOutcome(
        run.run_id, uri, "svm", "esc50", svm_protocol(config), pretrained.label, per_fold, mean, std
    )


def _fold_line(fold: int, result: FoldFit, where: str, max_iter: int) -> str:
    """One fold's line, `{top1}` left for the fold skeleton to fill in."""
    line = f"  fold {fold}: top-1 {{top1:.3f}} with C={result.c:g} (chosen on {where})"
    if result.unconverged:
        line += (
            f"; {result.unconverged} of {result.fits} SVM fits stopped at svm.max_iter="
            f"{max_iter} before converging"
        )
    return line


def _svm_settings(config: SvmExperiment) -> SvmSettings:
    s = config.svm
    ties = "larger" if s.protocol == "reference" else "smaller"  # the reference's ">="
    return SvmSettings(s.c_grid, s.select_c, s.standardize, s.max_iter, config.run.seed, ties)


def _svm_samples(config: SvmExperiment) -> dict[str, Any]:
    """The SVM's samplers: `train_crops` augmented crops per file, and the test clips."""
    d = config.data
    common = {
        "seconds": d.seconds,
        "sample_rate": d.sample_rate,
        "n_mels": d.n_mels,
        "protocol": config.svm.protocol,
    }
    return {
        "train": RepeatedDraws(
            AudioClipSample(**common, train=True, seed=config.run.seed), d.train_crops, "audio"
        ),
        "test": AudioClipSample(**common, train=False, test_clips=d.test_clips),
    }


def run_probe(
    config: ProbeExperiment, *, source: str, folds: str, say: Callable[[str], None] = print
) -> EvalOutcome:
    """Logistic regression (and kNN) on frozen pooled embeddings, per split and averaged."""
    chosen, uri, manifest, pretrained, rows = _prepare(config, source=source, folds=folds, say=say)
    d, p = config.data, config.probe
    protocol = f"logistic probe ({MODALITY[d.dataset]})"
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
    samples = {"eval": _probe_sample(config)}
    parts = parts_folder(pretrained, config, rows, "embedding")
    clips, ok = extract_parallel(
        pretrained, config, rows, samples, kind="embedding", parts=parts, say=say
    )["eval"]
    _say_failures(rows, ok, say)
    features = clips.mean(axis=1)
    folds_ = _Folds(run, manifest, rows, d.dataset, np.array([row["label"] for row in rows]))
    knn = {}

    def fit(fold: int, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, str]:
        labels = folds_.labels
        predicted = logistic_probe(
            features[train],
            labels[train],
            features[test],
            c=p.c,
            max_iter=p.max_iter,
            seed=config.run.seed,
        )
        near = knn_predict(
            torch.from_numpy(features[train]),
            torch.from_numpy(labels[train]),
            torch.from_numpy(features[test]),
            k=p.k,
            classes=len(manifest.classes),
        ).numpy()
        knn[fold] = float((near == labels[test]).mean())
        run.client.log_metric(run.run_id, f"fold{fold}/knn_top1", knn[fold])
        return predicted, f"  split {fold}: logistic top-1 {{top1:.3f}}, kNN top-1 {knn[fold]:.3f}"

    per_fold = folds_.evaluate(chosen, ok, fit, say)
    mean, std = summarise(run, per_fold)
    knn_mean, _ = summarise(run, knn, key="knn_top1")
    run.client.set_terminated(run.run_id, status="FINISHED")
    remove_parts(parts)
    extra = {"knn": knn, "knn_mean": knn_mean}
    return EvalOutcome(
        run.run_id, uri, "probe", d.dataset, protocol, pretrained.label, per_fold, mean, std, extra
    )


def _probe_sample(config: ProbeExperiment) -> Any:
    """Evenly spaced evaluation clips of each file, of the dataset's modality."""
    d = config.data
    if MODALITY[d.dataset] == "video":
        return VideoClipSample(
            frames=d.frames, fps=d.fps, size=d.crop_size, train=False, test_clips=d.clips
        )
    return AudioClipSample(
        seconds=d.seconds,
        sample_rate=d.sample_rate,
        n_mels=d.n_mels,
        train=False,
        test_clips=d.clips,
    )


def _say_failures(rows: list[dict[str, Any]], ok: np.ndarray, say: Callable[[str], None]) -> None:
    bad = [rows[i]["path"] for i in np.flatnonzero(~ok)]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        say(
            f"  {len(bad)} file(s) failed to decode (left out of training, counted wrong if "
            f"tested): {shown}"
        )
