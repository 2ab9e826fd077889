"""Classifiers on frozen features: the ESC-50 linear SVM (with its choice of C) and the probes.

Legend: N training files, M test files, R random training crops per file, C test clips per file,
D feature size, K classes. A file's prediction is the argmax of its clips' averaged scores.
"""

from __future__ import annotations

import warnings
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


class _Fits:
    """Fits SVMs, counting those that stopped at `max_iter` instead of warning once per fit
    (the fold's line says how many)."""

    def __init__(self, settings: SvmSettings) -> None:
        self.settings, self.fits, self.unconverged = settings, 0, 0

    def __call__(self, crops_NRD: np.ndarray, labels_N: np.ndarray, c: float) -> Pipeline:
        n, r, d = crops_NRD.shape
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = _svm(c, self.settings).fit(crops_NRD.reshape(n * r, d), np.repeat(labels_N, r))
        self.fits += 1
        self.unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for other in (w for w in caught if not issubclass(w.category, ConvergenceWarning)):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
        return model


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
        for c in settings.grid:
            correct = 0
            for held in groups:
                fit_on, judge = train_groups != held, train_groups == held
                model = _fit(train_crops[fit_on], train_labels[fit_on], c)
                correct += int(
                    (predict_files(model, train_clips[judge]) == train_labels[judge]).sum()
                )
            scores[c] = correct / len(train_labels)
    else:
        for c in settings.grid:
            model = _fit(train_crops, train_labels, c)
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
