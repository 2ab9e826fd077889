"""The pretraining loop's own figures as Ray metrics, beside Ray's in Prometheus and Grafana.

Every worker exports, tagged with the run name and its rank: `crisscross_samples_per_second`
(global samples over its last step's time), `crisscross_data_wait_share` (the share of that
step spent waiting for a batch), `crisscross_loss`, `crisscross_epoch`, and the counters
`crisscross_steps_total` and `crisscross_samples_total` (its own samples). Prometheus sees them
with Ray's `ray_` prefix, on each node's metrics export port.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge

TAGS = ("run", "rank")


class TrainMetrics:
    """One worker's gauges and counters; `step` after every optimisation step."""

    def __init__(self, run: str, rank: int) -> None:
        tags = {"run": run, "rank": str(rank)}

        def gauge(name: str, description: str) -> Gauge:
            metric = Gauge(name, description=description, tag_keys=TAGS)
            metric.set_default_tags(tags)
            return metric

        def counter(name: str, description: str) -> Counter:
            metric = Counter(name, description=description, tag_keys=TAGS)
            metric.set_default_tags(tags)
            return metric

        self.samples_per_second = gauge(
            "crisscross_samples_per_second", "Global samples per second over the last step."
        )
        self.data_wait = gauge(
            "crisscross_data_wait_share", "Share of the last step spent waiting for a batch."
        )
        self.loss = gauge("crisscross_loss", "Total CrissCross loss of the last step.")
        self.epoch = gauge("crisscross_epoch", "The epoch under way (1-based).")
        self.steps = counter("crisscross_steps_total", "Optimisation steps done by this worker.")
        self.samples = counter("crisscross_samples_total", "Samples trained on by this worker.")

    def step(
        self, *, global_samples: int, own_samples: int, seconds: float, wait: float, loss: float
    ) -> None:
        seconds = max(seconds, 1e-9)
        self.samples_per_second.set(global_samples / seconds)
        self.data_wait.set(wait / seconds)
        self.loss.set(loss)
        self.steps.inc()
        self.samples.inc(own_samples)

    def epoch_started(self, epoch: int) -> None:
        self.epoch.set(epoch + 1)
