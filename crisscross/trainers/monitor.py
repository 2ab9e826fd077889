"""The online monitor: kNN accuracy of the frozen encoders on small labelled sets.

Video: a UCF101- or HMDB51-layout set, neighbours from split 1's train list, queries from its test
list. Audio: an ESC-50-layout set, neighbours from folds 2-5, queries from fold 1. Sweeps select
on these numbers, since the pretext loss is not comparable across loss weights. Every figure comes
with two baselines: chance (the query set's largest class share) and the run's random
initialisation (the same seed's untrained encoders), so a reader sees the gain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

from crisscross.config import ExperimentConfig
from crisscross.datasets.layouts import MODALITY
from crisscross.datasets.manifest import read_manifest
from crisscross.datasets.samples import AudioClipSample, VideoClipSample
from crisscross.models import CrissCross
from crisscross.trainers.features import extract_features
from crisscross.trainers.knn import knn_accuracy


@dataclass(frozen=True)
class MonitorSet:
    """A labelled evaluation set: its layout and the path of its manifest."""

    dataset: str
    manifest: str

    @property
    def modality(self) -> str:
        return MODALITY[self.dataset]


def _even(rows: list[dict[str, Any]], at_most: int) -> list[dict[str, Any]]:
    if len(rows) <= at_most:
        return rows
    return [rows[i] for i in np.linspace(0, len(rows) - 1, at_most).round().astype(int)]


def monitor_split(
    monitor_set: MonitorSet, *, max_files: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(neighbour rows, query rows) of the set's usable files, each evenly cut to `max_files`."""
    table = read_manifest(monitor_set.manifest).usable()
    if monitor_set.modality == "video":
        member = table.column("fold1")
        train = table.filter(pc.equal(member, "train"))
        test = table.filter(pc.equal(member, "test"))
    else:
        fold = table.column("fold")
        train = table.filter(pc.not_equal(fold, 1))
        test = table.filter(pc.equal(fold, 1))
    cols = ["path", "label", "duration"]
    return (
        _even(train.select(cols).to_pylist(), max_files),
        _even(test.select(cols).to_pylist(), max_files),
    )


class KnnMonitor:
    """kNN top-1 of each modality's frozen backbone, as {"knn/video": acc, "knn/audio": acc},
    and with monitor.probe a logistic-regression probe's top-1 as "probe/video", "probe/audio"."""

    def __init__(self, sets: list[MonitorSet], config: ExperimentConfig) -> None:
        m, d = config.monitor, config.data
        self.k, self.probe = m.k, m.probe
        self.splits = {s.modality: monitor_split(s, max_files=m.max_files) for s in sets}
        self.samplers = {
            "video": VideoClipSample(
                frames=d.frames, fps=d.fps, size=d.crop_size, train=False, test_clips=m.clips
            ),
            "audio": AudioClipSample(
                seconds=d.audio_seconds,
                sample_rate=d.sample_rate,
                n_mels=d.n_mels,
                train=False,
                test_clips=m.clips,
            ),
        }

    @property
    def enabled(self) -> bool:
        return bool(self.splits)

    def chance(self) -> dict[str, float]:
        """{"chance/<modality>": the accuracy of always answering the queries' commonest class}."""
        out = {}
        for modality, (_, test_rows) in self.splits.items():
            labels = np.array([int(row["label"]) for row in test_rows])
            out[f"chance/{modality}"] = float(np.bincount(labels).max() / max(len(labels), 1))
        return out

    def baselines(self, fresh: CrissCross, device: torch.device) -> dict[str, float]:
        """Chance and the scores of `fresh` (the run's untrained model) as "init/knn/<modality>"
        (and "init/probe/<modality>")."""
        scores = self(fresh.to(device), device)
        return self.chance() | {f"init/{key}": value for key, value in scores.items()}

    @torch.no_grad()
    def __call__(self, model: CrissCross, device: torch.device) -> Mapping[str, float]:
        was_training = model.training
        model.eval()
        try:
            out = {}
            for modality, (train_rows, test_rows) in self.splits.items():
                encode = model.video if modality == "video" else model.audio
                kw = {"sample": self.samplers[modality], "key": modality, "device": device}
                train, train_labels = extract_features(encode, train_rows, **kw)
                test, test_labels = extract_features(encode, test_rows, **kw)
                out[f"knn/{modality}"] = knn_accuracy(
                    train, train_labels, test, test_labels, k=self.k
                )
                if self.probe:
                    # here, not at the top: scikit-learn costs each training worker's process
                    # 1.6 s to import on 2 cores, and most runs have no probe
                    from crisscross.trainers.svm import logistic_probe

                    predicted = logistic_probe(train.numpy(), train_labels.numpy(), test.numpy())
                    out[f"probe/{modality}"] = float((predicted == test_labels.numpy()).mean())
            return out
        finally:
            model.train(was_training)
