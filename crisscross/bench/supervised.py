"""The supervised reference of `bench learning`: the pretraining's encoders trained on the
pretraining set's labels with the same views, augmentations, batch, steps and learning-rate
schedule, one process. It says what the labels make learnable in that budget.

Each step: both windows of both modalities through their encoder and a linear head, cross
entropy against the clip's class, summed over the four views.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from crisscross.config import ExperimentConfig
from crisscross.datasets.epochs import PretextTorchDataset, collate_skipping_failures, epoch_order
from crisscross.datasets.samples import DeviceAugment, PretextSample
from crisscross.models import CrissCross
from crisscross.trainers.builders import clip_spec, seeded_model
from crisscross.trainers.optim import backbone_lr
from crisscross.trainers.pretext_step import to_model_inputs

log = logging.getLogger(__name__)


class LabelledRows(torch.utils.data.Dataset):
    """The per-sample function's views of each row, with the row's class as `label`."""

    def __init__(self, rows: pa.Table, sample: PretextSample, labels: Mapping[str, int]) -> None:
        self.views = PretextTorchDataset(rows, sample)
        self.labels = [labels[path] for path in rows.column("path").to_pylist()]

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> dict[str, np.ndarray] | None:
        item = self.views[i]
        return None if item is None else item | {"label": np.int64(self.labels[i])}


def train_supervised(
    config: ExperimentConfig,
    table: pa.Table,
    *,
    steps: int,
    device: torch.device,
    workers: int = 1,
    say: Callable[[str], None] = print,
) -> CrissCross:
    """The run's initial model (its seed) with both encoders trained for `steps` steps on the
    labels of `table` (usable manifest rows with `path` and `label`)."""
    model = seeded_model(config).to(device)
    classes = int(max(table.column("label").to_pylist())) + 1
    heads = nn.ModuleDict(
        {m: nn.Linear(getattr(model, m).embed_dim, classes) for m in ("video", "audio")}
    ).to(device)
    params = [*model.video.parameters(), *model.audio.parameters(), *heads.parameters()]
    optim = config.optim
    adam = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    spec = clip_spec(config)
    sample, augment = PretextSample(spec, seed=config.run.seed), DeviceAugment(spec)
    paths, classes_of = table.column("path").to_pylist(), table.column("label").to_pylist()
    labels = dict(zip(paths, classes_of, strict=True))
    batches = _batches(config, table, sample, labels, workers=workers)
    warmup = round(optim.warmup_epochs / optim.epochs * steps)
    model.train()
    for step in range(steps):
        batch = next(batches)
        for group in adam.param_groups:
            group["lr"] = backbone_lr(
                step, total=steps, warmup=warmup, peak=optim.lr, final=optim.final_lr
            )
        v1, v2, a1, a2 = to_model_inputs(batch, device, augment)
        target = batch["label"].to(device)
        loss = sum(
            F.cross_entropy(heads[m](getattr(model, m)(x)), target)
            for m, x in (("video", v1), ("video", v2), ("audio", a1), ("audio", a2))
        )
        adam.zero_grad()
        loss.backward()
        adam.step()
        if (step + 1) % max(1, steps // 5) == 0:
            say(f"supervised reference: step {step + 1}/{steps}, loss {loss.item() / 4:.3f}")
    return model


def _batches(
    config: ExperimentConfig,
    table: pa.Table,
    sample: PretextSample,
    labels: Mapping[str, int],
    *,
    workers: int,
) -> Any:
    """Full batches of the pretraining's epochs, one epoch after another, without end."""
    epoch = 0
    while True:
        rows = epoch_order(
            table, seed=config.run.seed, epoch=epoch, repeats=config.optim.repeats_per_epoch
        )
        loader = torch.utils.data.DataLoader(
            LabelledRows(rows, sample, labels),
            batch_size=config.optim.batch_size,
            drop_last=True,
            num_workers=workers,
            collate_fn=collate_skipping_failures,
        )
        yield from loader
        epoch += 1
