"""What every evaluation command shares: the labelled set and its folds, the weights, and the
MLflow run (tagged with the pretraining it evaluates) with per-fold results and plots."""

from __future__ import annotations

import csv
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

import crisscross
from crisscross.config import dump_config
from crisscross.datasets.layouts import FOLDS, MODALITY, TITLES, LayoutError
from crisscross.datasets.manifest import Manifest, build_manifest, summary
from crisscross.models import WeightsError
from crisscross.platform.evaluation.sources import Pretrained, SourceError, resolve_pretrained
from crisscross.platform.pretrain.job import git_commit, uri_exists
from crisscross.platform.redact import public_config
from crisscross.platform.storage import absolute
from crisscross.platform.tracking import (
    TrackingError,
    check_tracking,
    experiment_id,
    flatten,
    log_params_and_tags,
    tracking_uri,
)

ROW_COLUMNS = ["path", "label", "duration", "fold", "fold1", "fold2", "fold3"]


class EvalError(RuntimeError):
    """Bad input found before evaluating; the message names the file, key or item."""


def parse_folds(text: str, dataset: str) -> tuple[int, ...]:
    """`--fold 2` -> (2,), `--fold all` -> every official split of `dataset`."""
    valid = FOLDS[dataset]
    if text == "all":
        return valid
    if not text.isdigit() or int(text) not in valid:
        choices = "|".join(map(str, valid))
        raise EvalError(f"--fold {text}: {TITLES[dataset]} has splits {choices}; or give 'all'")
    return (int(text),)


def labelled_set(dataset: str, root: str | None, say: Callable[[str], None]) -> Manifest:
    """The manifest of a labelled dataset root (built or refreshed), or EvalError saying why."""
    if not root:
        raise EvalError("data.root is not set: give the dataset folder with --root DIR")
    root = absolute(root)
    if not uri_exists(root):
        raise EvalError(f"data.root: {root}: no such folder")
    say(f"manifest of {root}: probing new or changed files")
    try:
        manifest = build_manifest(dataset, root).manifest
    except (LayoutError, FileNotFoundError, NotADirectoryError) as exc:
        raise EvalError(f"data.root: {exc}") from None
    if manifest.usable().num_rows == 0:
        raise EvalError(f"{root}: no usable {TITLES[dataset]} files.\n" + summary(manifest))
    return manifest


def usable_files(manifest: Manifest) -> list[dict[str, Any]]:
    """The usable files as {path, label, duration, fold, fold1, fold2, fold3} dicts."""
    return manifest.usable().select(ROW_COLUMNS).to_pylist()


def split_masks(
    rows: list[dict[str, Any]], dataset: str, fold: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) boolean masks of `rows` for an official split.

    UCF101/HMDB51: the split's train and test lists (HMDB51's unused videos are in neither);
    ESC-50: every other fold against this one.
    """
    if MODALITY[dataset] == "audio":
        folds = np.array([row["fold"] for row in rows])
        return folds != fold, folds == fold
    member = np.array([row[f"fold{fold}"] for row in rows], dtype=object)
    return member == "train", member == "test"


def need_both(train: np.ndarray, test: np.ndarray, fold: int, *, root: str) -> None:
    if not train.any() or not test.any():
        raise EvalError(
            f"{root}: split {fold} has {int(train.sum())} usable training and "
            f"{int(test.sum())} usable test files; both must be non-empty"
        )


def fold_rows(
    manifest: Manifest, dataset: str, fold: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, test rows) of an official split (see `split_masks`), usable files only."""
    rows = usable_files(manifest)
    train, test = split_masks(rows, dataset, fold)
    need_both(train, test, fold, root=manifest.root)
    return [rows[i] for i in np.flatnonzero(train)], [rows[i] for i in np.flatnonzero(test)]


def checked_tracking(config: Any) -> str:
    uri = tracking_uri(config)
    try:
        check_tracking(uri)
    except TrackingError as exc:
        raise EvalError(str(exc)) from None
    return uri


def pretrained_weights(source: str, *, modality: str, uri: str, scratch: str) -> Pretrained:
    try:
        return resolve_pretrained(source, modality=modality, tracking_uri=uri, scratch=scratch)
    except (SourceError, WeightsError) as exc:
        raise EvalError(str(exc)) from None


def check_backbone(pretrained: Pretrained, config: Any, *, modality: str, command: str) -> None:
    """Load the weights once on the driver, so a wrong file is reported before any work."""
    try:
        pretrained.backbone(modality=modality, name=config.model.backbone, width=config.model.width)
    except WeightsError as exc:
        prefix = "vid" if modality == "video" else "aud"
        raise EvalError(
            f"{exc}\n`crisscross {command}` evaluates the {modality} encoder: give its "
            f"{prefix}_*.pth.tar file, or a pretraining run or checkpoint holding both"
        ) from None


@dataclass(frozen=True)
class EvalOutcome:
    """One evaluation's result: top-1 per fold, their mean and std, and where it is logged."""

    run_id: str
    uri: str
    kind: str
    dataset: str
    protocol: str
    pretrain_label: str
    per_fold: dict[int, float]
    mean: float
    std: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalRun:
    """The MLflow run of one evaluation."""

    client: MlflowClient
    run_id: str
    uri: str

    def log_artifact_text(self, name: str, text: str, folder: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / name
            path.write_text(text)
            self.client.log_artifact(self.run_id, str(path), folder)


def open_eval_run(
    uri: str,
    config: Any,
    *,
    kind: str,
    dataset: str,
    protocol: str,
    pretrained: Pretrained,
    folds: Sequence[int],
    extra_tags: dict[str, str] | None = None,
) -> EvalRun:
    """A new MLflow run for one evaluation, with the config and what it evaluates as tags."""
    client = MlflowClient(uri)
    exp = experiment_id(client, config.tracking.experiment)
    run = client.create_run(exp, run_name=f"{config.run.name}-{pretrained.label}")
    commit = git_commit()
    tags = {
        "crisscross.eval": kind,
        "crisscross.dataset": dataset,
        "crisscross.protocol": protocol,
        "crisscross.folds": ",".join(map(str, folds)),
        "crisscross.pretrained": pretrained.source,
        "crisscross.pretrained_kind": pretrained.kind,
        "crisscross.pretrained_path": pretrained.where,
        "crisscross.pretrain_label": pretrained.label,
        "crisscross.pretrain_dataset": pretrained.dataset or "unknown",
        "git.commit": commit,
        "mlflow.source.git.commit": commit,
        "crisscross.version": crisscross.__version__,
    }
    if pretrained.pretrain_run_id:
        tags["crisscross.pretrain_run"] = pretrained.pretrain_run_id
    log_params_and_tags(
        client,
        run.info.run_id,
        flatten(config.model_dump(mode="json", by_alias=True)),
        tags | (extra_tags or {}),
    )
    out = EvalRun(client, run.info.run_id, uri)
    out.log_artifact_text("config.yaml", dump_config(public_config(config)))
    return out


def log_fold(
    run: EvalRun,
    fold: int,
    *,
    labels: Sequence[int],
    predicted: Sequence[int],
    classes: Sequence[str],
) -> float:
    """Top-1 of one fold; logs its confusion matrix (PNG + CSV) and per-class accuracy (CSV)."""
    k = len(classes)
    matrix = np.zeros((k, k), np.int64)
    for truth, guess in zip(labels, predicted, strict=True):
        if 0 <= guess < k:  # -1: a test file that failed to decode, counted wrong
            matrix[truth, guess] += 1
    totals = np.bincount(np.asarray(labels, np.int64), minlength=k)
    top1 = float(np.trace(matrix) / max(len(labels), 1))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        with open(folder / "per_class_accuracy.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "label", "test_files", "correct", "accuracy"])
            for i, name in enumerate(classes):
                acc = matrix[i, i] / totals[i] if totals[i] else float("nan")
                writer.writerow([name, i, int(totals[i]), int(matrix[i, i]), f"{acc:.4f}"])
        with open(folder / "confusion_matrix.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *classes])
            for i, name in enumerate(classes):
                writer.writerow([name, *matrix[i].tolist()])
        plot_confusion(matrix, classes, folder / "confusion_matrix.png", title=f"split {fold}")
        run.client.log_artifacts(run.run_id, str(folder), f"fold{fold}")
    return top1


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    side = min(4 + 0.18 * k, 24)
    fig, ax = plt.subplots(figsize=(side, side))
    rows = matrix.sum(axis=1, keepdims=True)
    ax.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    if k <= 60:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=max(4, 9 - k // 12))
        ax.set_yticks(range(k), classes, fontsize=max(4, 9 - k // 12))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: top-1 {np.trace(matrix) / max(matrix.sum(), 1):.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarise(
    run: EvalRun, per_fold: dict[int, float], *, key: str = "top1"
) -> tuple[float, float]:
    """Log `<key>_mean` and `<key>_std` (population std over folds) and close the run."""
    values = list(per_fold.values())
    mean = float(np.mean(values))
    std = float(np.std(values)) if len(values) > 1 else 0.0
    run.client.log_metric(run.run_id, f"{key}_mean", mean)
    run.client.log_metric(run.run_id, f"{key}_std", std)
    run.client.log_metric(run.run_id, "folds", len(values))
    return mean, std


def fmt_pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"
