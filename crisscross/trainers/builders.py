"""Build the modules an experiment config describes."""

from __future__ import annotations

from crisscross.config import ExperimentConfig
from crisscross.datasets.epochs import DecodeResources
from crisscross.datasets.samples import ClipSpec
from crisscross.datasets.transforms import AugmentStrength
from crisscross.models import CrissCross, LossWeights, create_backbone


def loss_weights(config: ExperimentConfig) -> LossWeights:
    """The objective's weights and switches from the `loss` section."""
    loss = config.loss
    return LossWeights(
        w_video=loss.w_video,
        w_audio=loss.w_audio,
        w_sync=loss.w_sync,
        w_async=loss.w_async,
        intra=loss.intra,
        sync=loss.sync,
        asynchronous=loss.async_,
    )


def build_model(config: ExperimentConfig) -> CrissCross:
    """The CrissCross model of the `model` and `loss` sections, freshly initialised."""
    m = config.model
    return CrissCross(
        create_backbone(m.video_backbone, width=m.video_width),
        create_backbone(m.audio_backbone, width=m.audio_width),
        projector_layers=m.projector_layers,
        projector_dim=m.projector_dim,
        predictor_hidden=m.predictor_hidden,
        weights=loss_weights(config),
    )


def seeded_model(config: ExperimentConfig) -> CrissCross:
    """The model exactly as a run initialises it (`run.seed`, then `build_model`), leaving the
    caller's torch random state as it was: the "random init" every figure is compared with."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)
        return build_model(config)


def clip_spec(config: ExperimentConfig) -> ClipSpec:
    """Sample shapes and decoding from the `data` section."""
    d = config.data
    return ClipSpec(
        frames=d.frames,
        fps=d.fps,
        crop_size=d.crop_size,
        audio_seconds=d.audio_seconds,
        sample_rate=d.sample_rate,
        n_mels=d.n_mels,
        sampling=d.sampling,
        short_videos=d.short_videos,
        short_side=d.short_side,
        decode_threads=d.decode_threads,
        time_limit=d.sample_time_limit,
        augment_on=d.augment_on,
        augment=AugmentStrength(**config.augment.model_dump()),
    )


def decode_resources(config: ExperimentConfig) -> DecodeResources:
    """The Ray Data decode stage's resources from the `data` section."""
    d = config.data
    return DecodeResources(
        workers=d.decode_workers,
        cpus_per_worker=d.decode_cpus,
        memory_mb=d.decode_memory_mb,
        rows_per_task=d.rows_per_task,
        restarts=d.decode_restarts,
    )
