"""Full fine-tuning on UCF101/HMDB51 (REFERENCE.md section 6): the loop every Ray Train worker runs.

Train: one random augmented clip per sample, each video `clips_per_video` times per epoch, SGD
with multi-step decay. Test: `test_clips` evenly spaced centre clips per video, softmax averaged;
each worker tests its share of the videos and rank 0 gathers them. A checkpoint after every epoch
(model, optimiser, schedule, epoch, best) lets Ray restart a fold where it stopped.
Legend: B clips, V videos, C clips per video, K classes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from crisscross.config import FinetuneExperiment
from crisscross.datasets.pipeline import collate_skipping_failures
from crisscross.datasets.samples import VideoClipSample
from crisscross.datasets.transforms import normalize
from crisscross.models import Classifier, backbone_from_state
from crisscross.trainers.clips import (
    ClipDataset,
    average_clip_softmax,
    epoch_clips,
    worker_share,
)
from crisscross.trainers.pretrain import console_line, quiet_ray
from crisscross.trainers.run_folder import STATE_FILE, epoch_checkpoint
from crisscross.trainers.tracking import NullTracker, Tracker


@dataclass(frozen=True)
class FinetuneJob:
    """One fold's fine-tuning, resolved by the driver: rows are {path, label, duration} dicts."""

    config: dict[str, Any]  # FinetuneExperiment.model_dump()
    fold: int
    train_rows: list[dict[str, Any]]
    test_rows: list[dict[str, Any]]
    classes: int
    backbone: dict[str, torch.Tensor]  # released-format state_dict of the pretrained video encoder
    source: str  # where the weights came from, for error messages
    tracker: Tracker = field(default_factory=NullTracker)

    @property
    def prefix(self) -> str:
        return f"fold{self.fold}/"


def build_classifier(job: FinetuneJob, config: FinetuneExperiment) -> Classifier:
    m = config.model
    backbone = backbone_from_state(
        job.backbone,
        source=job.source,
        name=m.backbone,
        modality="video",
        **({} if m.width is None else {"width": m.width}),
    )
    return Classifier(backbone, job.classes, dropout=m.dropout)


@torch.no_grad()
def test_videos(
    model: nn.Module,
    rows: list[dict[str, Any]],
    sample: VideoClipSample,
    *,
    classes: int,
    device: torch.device,
    batch_videos: int = 2,
) -> tuple[torch.Tensor, int]:
    """((V, K) averaged softmax of `rows`, in order; videos failing to decode), the failures'
    rows being NaN."""
    model.eval()
    dataset = ClipDataset(rows, np.arange(len(rows)), np.arange(len(rows)), sample, epoch=0)
    out: list[torch.Tensor] = []
    failed = 0
    for start in range(0, len(rows), batch_videos):
        items = [dataset[i] for i in range(start, min(start + batch_videos, len(rows)))]
        kept = [item["video"] for item in items if item is not None]
        probs = iter(())
        if kept:
            clips_VCT3HW = torch.from_numpy(np.stack(kept)).to(device)
            v, c = clips_VCT3HW.shape[:2]
            logits = model(normalize(clips_VCT3HW.flatten(0, 1)))
            probs = iter(average_clip_softmax(logits.view(v, c, -1)).float().cpu())
        for item in items:
            out.append(next(probs) if item is not None else None)
            failed += item is None
    nan = torch.full((classes,), float("nan"))
    probs_VK = torch.stack([p if p is not None else nan for p in out]) if out else nan[None, :0]
    return probs_VK.reshape(len(out), classes), failed


@dataclass
class FoldState:
    """Where a fold is: what its epoch checkpoint carries besides weights and optimiser."""

    epoch: int = 0  # epochs done
    best: float = -1.0  # best test top-1 so far
    best_epoch: int = 0
    last: float = float("nan")  # the latest test top-1
    predicted: list[int] = field(default_factory=list)  # the latest test predictions (rank 0)


def _all_sum(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _gather_rows(local: torch.Tensor, world: int) -> list[torch.Tensor]:
    if world == 1:
        return [local]
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, local)
    return parts


def _interleave(parts: list[torch.Tensor], total: int) -> torch.Tensor:
    """Undo `rows[rank::world]`: the per-worker results back in row order."""
    out = torch.empty(total, parts[0].shape[1])
    for rank, part in enumerate(parts):
        out[rank :: len(parts)] = part
    return out


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    *,
    device: torch.device,
) -> tuple[float, float, float, float]:
    """One pass over the loader: (loss sum, correct, samples, failed samples) on this worker."""
    model.train()
    sums = torch.zeros(2, device=device)  # loss sum, correct: on the device, read once at the end
    seen = failed = 0
    for batch in loader:
        failed += int(batch.pop("failed"))
        optimizer.zero_grad(set_to_none=True)
        if not batch:  # every sample failed: a zero loss keeps the gradient all-reduce in step
            loss = sum(p.sum() * 0.0 for p in model.parameters())
            loss.backward()
            optimizer.step()
            continue
        clips = normalize(batch["video"][:, 0].to(device))  # one clip per training sample
        labels = batch["label"].to(device)
        logits = model(clips)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        sums += torch.stack(
            [loss.detach() * len(labels), (logits.argmax(dim=1) == labels).sum().float()]
        )
        seen += len(labels)
    loss_sum, correct = sums.tolist()
    return loss_sum, correct, float(seen), float(failed)


def _restore(core: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> FoldState:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return FoldState()
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    core.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return FoldState(**state["fold"])


def _report(
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    fold: FoldState,
    metrics: dict[str, float],
    rank: int,
) -> None:
    """Every worker reports (a barrier); rank 0 attaches the epoch checkpoint."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    state = {
        "model": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "fold": fold.__dict__,
    }
    with tempfile.TemporaryDirectory(prefix="crisscross-ft-") as folder:
        torch.save(state, Path(folder) / STATE_FILE)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=epoch_checkpoint(fold.epoch),
        )


def _epoch_line(job: FinetuneJob, fold: FoldState, epochs: int, metrics: dict[str, float]) -> str:
    p = job.prefix
    text = (
        f"split {job.fold} epoch {fold.epoch}/{epochs} | loss {metrics[p + 'train_loss']:.4f}"
        f" | train top-1 {metrics[p + 'train_top1']:.3f}"
    )
    if p + "test_top1" in metrics:
        text += f" | test top-1 {metrics[p + 'test_top1']:.3f}"
    if metrics[p + "skipped"]:
        text += f" | {int(metrics[p + 'skipped'])} clips skipped"
    return text


def finetune_loop_per_worker(job: FinetuneJob) -> dict[str, Any]:
    """Fine-tune and test one fold; rank 0 returns accuracies and the final test predictions."""
    config = FinetuneExperiment.model_validate(job.config)
    quiet_ray()
    d, o, r = config.data, config.optim, config.run
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(r.seed * 1000 + job.fold)
    core = build_classifier(job, config)
    model = ray.train.torch.prepare_model(core) if world > 1 else core.to(device)
    optimizer = torch.optim.SGD(
        core.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(o.milestones), gamma=o.gamma
    )
    fold = _restore(core, optimizer, scheduler)
    tracker = job.tracker if rank == 0 else NullTracker()
    tracker.open()
    common = {"frames": d.frames, "fps": d.fps, "size": d.crop_size, "seed": r.seed}
    train_sample = VideoClipSample(**common, train=True, decode_threads=d.decode_threads)
    test_sample = VideoClipSample(
        **common, train=False, test_clips=d.test_clips, decode_threads=d.decode_threads
    )
    labels = torch.tensor([int(row["label"]) for row in job.test_rows])
    while fold.epoch < o.epochs:
        lr = optimizer.param_groups[0]["lr"]
        loader = _epoch_loader(job, config, train_sample, fold.epoch, rank=rank, world=world)
        sums = train_epoch(model, optimizer, loader, device=device)
        scheduler.step()
        loss_sum, correct, seen, failed = _all_sum(list(sums), world)
        fold.epoch += 1
        metrics = {
            f"{job.prefix}train_loss": loss_sum / max(seen, 1),
            f"{job.prefix}train_top1": correct / max(seen, 1),
            f"{job.prefix}lr": lr,
            f"{job.prefix}skipped": failed,
        }
        if fold.epoch % o.test_every == 0 or fold.epoch == o.epochs:
            metrics |= _test(core, job, test_sample, fold, labels, device, rank=rank, world=world)
        tracker.log_metrics(metrics, step=fold.epoch)
        tracker.flush()  # before the checkpoint: a fold's tracker keeps no journal
        if rank == 0:
            console_line(_epoch_line(job, fold, o.epochs, metrics))
        _report(core, optimizer, scheduler, fold, metrics, rank)
    return {
        "final": fold.last,
        "best": fold.best,
        "best_epoch": fold.best_epoch,
        "predicted": fold.predicted,
        "labels": labels.tolist(),
    }


def _epoch_loader(
    job: FinetuneJob,
    config: FinetuneExperiment,
    sample: VideoClipSample,
    epoch: int,
    *,
    rank: int,
    world: int,
) -> torch.utils.data.DataLoader:
    """This worker's share of the epoch's clips (every video clips_per_video times)."""
    d, o, r = config.data, config.optim, config.run
    order = epoch_clips(
        len(job.train_rows), clips_per_video=d.clips_per_video, seed=r.seed, epoch=epoch
    )
    positions, _ = worker_share(order, global_batch=o.batch_size, rank=rank, world=world)
    return torch.utils.data.DataLoader(
        ClipDataset(job.train_rows, order, positions, sample, epoch=epoch),
        batch_size=o.batch_size // world,
        num_workers=r.loader_workers,
        collate_fn=collate_skipping_failures,
    )


def _test(
    core: nn.Module,
    job: FinetuneJob,
    sample: VideoClipSample,
    fold: FoldState,
    labels: torch.Tensor,
    device: torch.device,
    *,
    rank: int,
    world: int,
) -> dict[str, float]:
    """Test every video (each worker its share, gathered in order); updates the fold's last and
    best accuracy and predictions; the test metrics."""
    probs, bad = test_videos(
        core, job.test_rows[rank::world], sample, classes=job.classes, device=device
    )
    everything = _interleave(_gather_rows(probs, world), len(job.test_rows))
    predicted = everything.argmax(dim=1)
    predicted[everything.isnan().any(dim=1)] = -1  # a failed video counts wrong
    fold.last = float((predicted == labels).float().mean())
    fold.predicted = predicted.tolist()
    if fold.last > fold.best:
        fold.best, fold.best_epoch = fold.last, fold.epoch
    return {
        f"{job.prefix}test_top1": fold.last,
        f"{job.prefix}test_skipped": _all_sum([float(bad)], world)[0],
    }
