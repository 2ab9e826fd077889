"""What a sweep trial's Ray Train run tells Tune: the selection score of each monitored epoch.

Kept apart from the rest of the sweep code: the callback runs in the Train controller of every
trial, which then imports this module and Ray Tune only (not MLflow, torch or the platform).
"""

from __future__ import annotations

from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

SCORE = "score"  # the key Tune ranks trials by: the sweep's search.metric


def selection_score(metrics: dict[str, Any], metric: str) -> float | None:
    """`metric` from one epoch's metrics; "knn/mean" is the mean of the kNN figures present."""
    prefix, _, what = metric.partition("/")
    if what != "mean":
        value = metrics.get(metric)
        return None if value is None else float(value)
    found = [float(v) for k, v in metrics.items() if k.startswith(prefix + "/")]
    return sum(found) / len(found) if found else None


class ScoreReport(TuneReportCallback):
    """Forwards to Tune the epoch ends before the last that carry the monitor's accuracy, with
    `score`. The last epoch is reported by `run_trial` once the run has exported its backbones
    and closed: ASHA may stop a trial at a rung on its last epoch, and a trial stopped there
    before `finish` would count as finished with no backbones and an open MLflow run."""

    def __init__(self, metric: str, epochs: int) -> None:
        super().__init__()
        self.metric, self.epochs = metric, epochs

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
        score = selection_score(metrics[0], self.metric) if metrics else None
        if score is None or "epoch" not in metrics[0] or metrics[0]["epoch"] >= self.epochs:
            return
        super().after_report(run_context, [metrics[0] | {SCORE: score}], checkpoint)
