"""Metrics the tracking server did not take, kept in the run folder as JSON lines for replay.

`crisscross_metrics.jsonl` holds one {"key", "value", "timestamp", "step"} object a line. Replay
sends only what the store lacks at its (key, step) and then removes the file, so each metric
arrives exactly once even when a replay was cut short.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable

import pyarrow.fs as pafs
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from crisscross.datasets.fs import atomic_write_text, resolve

JOURNAL_FILE = "crisscross_metrics.jsonl"
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def _line(m: Metric) -> str:
    return json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step})


class MetricJournal:
    """The journal file at `path` (a local path or a URI)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, metrics: Iterable[Metric]) -> None:
        text = "".join(_line(m) + "\n" for m in metrics)
        if not text:
            return
        fs, inner = resolve(self.path)
        if isinstance(fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(inner), exist_ok=True)
            with open(inner, "a") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        else:  # object stores cannot append: the journal is rewritten whole
            atomic_write_text(self.path, self._text() + text)

    def _text(self) -> str:
        fs, inner = resolve(self.path)
        try:
            with fs.open_input_stream(inner) as stream:
                return stream.read().decode("utf-8")
        except FileNotFoundError:
            return ""

    def read(self) -> list[Metric]:
        """The journaled metrics; a line cut short by a crash is left out."""
        out = []
        for line in self._text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                d = json.loads(line)
                out.append(Metric(d["key"], float(d["value"]), int(d["timestamp"]), int(d["step"])))
        return out

    def replay(self, client: MlflowClient, run_id: str) -> int:
        """Send what the store lacks, then remove the journal; how many metrics were sent."""
        journaled = self.read()
        if not journaled:
            self.clear()
            return 0
        stored = {
            key: {m.step for m in client.get_metric_history(run_id, key)}
            for key in {m.key for m in journaled}
        }
        missing = []
        for m in journaled:  # a restarted worker group may have journaled a step twice
            if m.step not in stored[m.key]:
                stored[m.key].add(m.step)
                missing.append(m)
        for start in range(0, len(missing), BATCH):
            client.log_batch(run_id, metrics=missing[start : start + BATCH])
        self.clear()
        return len(missing)

    def clear(self) -> None:
        fs, inner = resolve(self.path)
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(inner)
