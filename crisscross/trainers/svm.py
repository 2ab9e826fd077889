"""Classifiers on frozen features: the ESC-50 linear SVM (with its choice of C) and the probes.

Legend: N training files, M test files, R random training crops per file, C test clips per file,
D feature size, K classes. A file's prediction is the argmax of its clips' averaged scores.

The fits of one fold (each C against each held-out training group) run on a thread pool:
liblinear releases the GIL while it trains, so the driver's cores share them (16 fits of
512 x 512 features: 21.8 s on one thread, 11.1 s on two, this 2-core machine). Their results do
not depend on the order they run in (each fit has its own seed).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC


@dataclass(frozen=True)
class SvmSettings:
    grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    select: str = "cv"  # "cv": on the training folds only; "test": on the test fold (reference)
    standardize: bool = True
    max_iter: int = 2000
    seed: int = 0
    ties: str = "smaller"  # equal scores: the smaller C, or "larger" (the reference's ">=")


@dataclass
class FoldFit:
    """The chosen C, the accuracy each C reached where it was chosen, the test predictions, and
    how many of the fold's SVM fits stopped at `max_iter` before liblinear converged."""

    c: float
    scores: dict[float, float] = field(default_factory=dict)
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fits: int = 0
    unconverged: int = 0


def _svm(c: float, settings: SvmSettings) -> Pipeline:
    steps = [StandardScaler()] if settings.standardize else []
    return make_pipeline(
        *steps, LinearSVC(C=c, max_iter=settings.max_iter, random_state=settings.seed)
    )


def averaged_scores(model: Pipeline, clips_MCD: np.ndarray) -> np.ndarray:
    """(M, K) decision values of each file, averaged over its C clips."""
    m, c, d = clips_MCD.shape
    scores = model.decision_function(clips_MCD.reshape(m * c, d))
    if scores.ndim == 1:  # two classes: sklearn gives the positive class's score only
        scores = np.stack([-scores, scores], axis=1)
    return scores.reshape(m, c, -1).mean(axis=1)


def predict_files(model: Pipeline, clips_MCD: np.ndarray) -> np.ndarray:
    """(M,) labels: the class with the highest clip-averaged decision value."""
    return model.classes_[averaged_scores(model, clips_MCD).argmax(axis=1)]


Rows = np.ndarray | slice
EVERY = slice(None)  # a view of every row: no copy


class _Fits:
    """Fits SVMs on a thread pool, counting those that stopped at `max_iter` (liblinear's
    iterations reached it: what sklearn's ConvergenceWarning says) instead of warning once per
    fit; the fold's line says how many."""

    def __init__(self, settings: SvmSettings) -> None:
        self.settings, self.fits, self.unconverged = settings, 0, 0

    def many(
        self, crops_NRD: np.ndarray, labels_N: np.ndarray, jobs: list[tuple[float, Rows]]
    ) -> list[Pipeline]:
        """The SVM fitted with each (c, rows) on those rows (a boolean mask over N, or every row),
        in order; a job's rows are copied out in its own thread, one copy per thread at most."""

        def fit(job: tuple[float, Rows]) -> Pipeline:
            c, rows = job
            crops, labels = crops_NRD[rows], labels_N[rows]
            n, r, d = crops.shape
            return _svm(c, self.settings).fit(crops.reshape(n * r, d), np.repeat(labels, r))

        # the filter is set once, around the pool: warning filters are global, not per thread
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
                models = list(pool.map(fit, jobs))
        self.fits += len(models)
        self.unconverged += sum(
            int(model[-1].n_iter_ >= self.settings.max_iter) for model in models
        )
        return models

    def __call__(self, crops_NRD: np.ndarray, labels_N: np.ndarray, c: float) -> Pipeline:
        return self.many(crops_NRD, labels_N, [(c, EVERY)])[0]


def fit_svm_fold(
    *,
    train_crops: np.ndarray,
    train_clips: np.ndarray,
    train_labels: np.ndarray,
    train_groups: np.ndarray,
    test_clips: np.ndarray,
    test_labels: np.ndarray,
    settings: SvmSettings,
) -> FoldFit:
    """Choose C, fit on every training file's crops, predict the test files.

    With select "cv", each C is scored by leave-one-group-out over the training files' groups
    (ESC-50's training folds), each held-out file judged on its test-style clips like a test
    file; the test arguments are not read until C is fixed. With "test", C is the one that
    scores best on the test fold (the reference code's choice; optimistic).
    """
    scores: dict[float, float] = {}
    _fit = _Fits(settings)
    if settings.select == "cv":
        groups = np.unique(train_groups)
        if len(groups) < 2:
            raise ValueError("choosing C by cross-validation needs at least 2 training folds")
        pairs = [(c, held) for c in settings.grid for held in groups]
        models = _fit.many(
            train_crops, train_labels, [(c, train_groups != held) for c, held in pairs]
        )
        correct = dict.fromkeys(settings.grid, 0)
        for (c, held), model in zip(pairs, models, strict=True):
            judge = train_groups == held
            correct[c] += int(
                (predict_files(model, train_clips[judge]) == train_labels[judge]).sum()
            )
        scores = {c: correct[c] / len(train_labels) for c in settings.grid}
    else:
        models = _fit.many(train_crops, train_labels, [(c, EVERY) for c in settings.grid])
        for c, model in zip(settings.grid, models, strict=True):
            scores[c] = float((predict_files(model, test_clips) == test_labels).mean())
    # ties: the stronger regulariser, or the reference's last best in its increasing grid
    sign = 1 if settings.ties == "larger" else -1
    best = max(settings.grid, key=lambda c: (scores[c], sign * c))
    model = _fit(train_crops, train_labels, best)
    return FoldFit(best, scores, predict_files(model, test_clips), _fit.fits, _fit.unconverged)


def logistic_probe(
    train_ND: np.ndarray,
    train_labels: np.ndarray,
    test_MD: np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """(M,) labels predicted by a logistic regression on standardised frozen features."""
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    )
    return model.fit(train_ND, train_labels).predict(test_MD)
