"""Typed, frozen experiment configs; each field's default and meaning are declared beside it.

Every section rejects unknown keys, wrong types (no silent coercion of "3" to 3 or 1 to True),
infinities and NaN, and out-of-range values.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from crisscross.models.factory import BACKBONES, backbone_modality

SamplingMode = Literal["overlapped", "same_timestamp", "adjacent", "random", "far_apart"]
PretextDataset = Literal["kinetics_sound", "kinetics400", "audioset"]
Unit = Annotated[float, Field(ge=0.0, lt=1.0)]


# Marks a key that says how a run runs, not what it computes: a resumed run may change it, and a
# sweep holds it the same for every trial (set under `set:`, never searched). On a section field,
# every key of the section.
HOW = {"how": True}


class Section(BaseModel):
    """Base of every config section: frozen, strict, closed to unknown keys."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        populate_by_name=False,
        use_attribute_docstrings=True,
    )


def _check_backbone(name: str, modality: str) -> str:
    if name not in BACKBONES or backbone_modality(name) != modality:
        choices = ", ".join(BACKBONES.names(modality=modality))
        raise PydanticCustomError(
            "backbone",
            "unknown {modality} backbone '{name}'; registered: {choices}",
            {"modality": modality, "name": name, "choices": choices},
        )
    return name


class ModelConfig(Section):
    video_backbone: str = "r2plus1d_18"
    """Registered video backbone: r2plus1d_10, r2plus1d_18 (paper) or r2plus1d_34."""
    video_width: int = Field(64, ge=1)
    """Channels of the first video stage; 64 is the paper's, the embedding is 8x this."""
    audio_backbone: str = "resnet18_audio"
    """Registered audio backbone."""
    audio_width: int = Field(64, ge=1)
    """Channels of the first audio stage; 64 is the paper's, the embedding is 8x this."""
    projector_layers: Literal[2, 3] = 3
    """Linear layers in each projector (3 in the released recipe)."""
    projector_dim: int = Field(2048, ge=1)
    """Output size of the projectors and predictors."""
    predictor_hidden: int = Field(512, ge=1)
    """Bottleneck size of the predictors."""
    sync_batchnorm: bool = False
    """Synchronise BatchNorm statistics across workers (the paper's runs do)."""

    @field_validator("video_backbone")
    @classmethod
    def _video(cls, name: str) -> str:
        return _check_backbone(name, "video")

    @field_validator("audio_backbone")
    @classmethod
    def _audio(cls, name: str) -> str:
        return _check_backbone(name, "audio")


class LossConfig(Section):
    w_video: float = Field(1.0, ge=0.0)
    """Weight of the intra-modal video term L_v1v2."""
    w_audio: float = Field(1.0, ge=0.0)
    """Weight of the intra-modal audio term L_a1a2."""
    w_sync: float = Field(1.0, ge=0.0)
    """Weight of each synchronous cross-modal term, L_v1a1 and L_v2a2."""
    w_async: float = Field(1.0, ge=0.0)
    """Weight of each asynchronous cross-modal term, L_v1a2 and L_a1v2."""
    intra: bool = True
    """Use the intra-modal terms."""
    sync: bool = True
    """Use the synchronous cross-modal terms."""
    async_: bool = Field(True, alias="async")
    """Use the asynchronous (relaxed) cross-modal terms. Written `async` in YAML and --set."""

    @model_validator(mode="after")
    def _some_term(self) -> LossConfig:
        if not (self.intra or self.sync or self.async_):
            raise PydanticCustomError(
                "no_terms",
                "every loss term is switched off (loss.intra, loss.sync and loss.async are all "
                "false): enable at least one",
            )
        enabled = {"w_video": self.intra, "w_audio": self.intra}
        enabled |= {"w_sync": self.sync, "w_async": self.async_}
        if all(getattr(self, name) == 0 for name, on in enabled.items() if on):
            raise PydanticCustomError(
                "zero_loss",
                "every enabled loss term has weight 0, so the loss is constant: give one of "
                "{names} a weight > 0",
                {"names": ", ".join(f"loss.{n}" for n, on in enabled.items() if on)},
            )
        return self


class DataConfig(Section):
    dataset: PretextDataset = "kinetics_sound"
    """Pretraining dataset layout: kinetics_sound, kinetics400 or audioset."""
    root: str | None = Field(None, json_schema_extra=HOW)
    """Dataset root folder or filesystem URI (s3://...); may also be given on the command line."""
    manifest: str | None = Field(None, json_schema_extra=HOW)
    """Manifest to read (Parquet); unset means <root>/crisscross_manifest_<dataset>.parquet."""
    classes_file: str | None = None
    """Kinetics-Sound only: a file of class names replacing the shipped list."""
    sampling: SamplingMode = "overlapped"
    """How the two windows are placed in a video: the degree of temporal relaxation."""
    short_videos: Literal["skip", "reference"] = "skip"
    """Videos shorter than the sampling mode's spans: skip them, or "reference": keep every video
    above 1.1 s in both streams, spans from 0 read past the end (audio zero-padded)."""
    frames: int = Field(8, ge=1)
    """Frames per video window (8 = 0.5 s at 16 fps)."""
    fps: float = Field(16.0, gt=0.0)
    """Frame rate the video is resampled to."""
    crop_size: int = Field(112, ge=8)
    """Side of the square video crop, in pixels."""
    audio_seconds: float = Field(2.0, gt=0.0)
    """Length of an audio window."""
    sample_rate: int = Field(16000, ge=1000)
    """Audio is resampled to this rate, mono."""
    n_mels: int = Field(80, ge=1)
    """Mel bins of the log-mel spectrogram."""
    short_side: int = Field(128, ge=16)
    """Frames are resized to this short side while decoding; the crop is taken from them."""
    decode_workers: int = Field(2, ge=1, json_schema_extra=HOW)
    """Ray Data decode actors feeding each training worker (augment_on: what else they do)."""
    decode_cpus: float = Field(1.0, gt=0.0, json_schema_extra=HOW)
    """CPUs reserved per decode actor."""
    decode_memory_mb: int | None = Field(None, ge=64, json_schema_extra=HOW)
    """Memory reserved per decode actor, in MiB (unset: no reservation)."""
    rows_per_task: int | None = Field(None, ge=1, json_schema_extra=HOW)
    """Samples per decode task. Unset: 8, or more where a training worker's pipeline (its share
    of one epoch, or of several consecutive ones up to 200,000 rows) would hold over 8,192
    tasks, i.e. over 65,536 rows, as each task costs Ray about 26 ms of its own time; a task's
    size changes no sample."""
    decode_restarts: int = Field(4, ge=0, json_schema_extra=HOW)
    """Times a decode actor that crashed (a decoder's segfault, say) is restarted, and its task
    retried; the file it was decoding is quarantined (skipped with its reason from then on).
    Past this, the pipeline fails with Ray's error instead of retrying without end."""
    decode_threads: int = Field(1, ge=1, json_schema_extra=HOW)
    """FFmpeg threads per decode; 1 keeps many actors from oversubscribing the CPUs."""
    sample_time_limit: float | None = Field(30.0, gt=0.0, json_schema_extra=HOW)
    """Seconds one sample's decode may take (a sample takes well under one on a healthy file);
    past it the sample is skipped and recorded with its reason, like a damaged file. Checked
    between decoded frames: a read blocked in the operating system is not cut short. Unset: no
    limit."""
    augment_on: Literal["device", "decode"] = "device"
    """Where the colour jitter, blur, cutout and audio log-mel and its augmentations run:
    "device" batched on the training device (the decode actors only decode, crop and draw the
    random parameters), "decode" in the decode actors. Both give the same samples."""


class AugmentConfig(Section):
    """Pretraining augmentations (REFERENCE.md section 4); the defaults are the paper's."""

    crop_min_area: float = Field(0.08, gt=0.0, le=1.0)
    """Smallest area share of the random resized video crop (the largest is 1)."""
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    """Probability of a horizontal flip."""
    jitter_strength: float = Field(1.0, ge=0.0, le=2.5)
    """Scales the colour jitter (0.4, 0.4, 0.4, 0.2) of brightness, contrast, saturation, hue."""
    jitter_p: float = Field(1.0, ge=0.0, le=1.0)
    """Probability of the colour jitter."""
    gray_p: float = Field(0.2, ge=0.0, le=1.0)
    """Probability of grayscale."""
    blur_p: float = Field(0.5, ge=0.0, le=1.0)
    """Probability of the Gaussian blur (kernel 11; its sigma: blur_mode)."""
    cutout_max: int = Field(20, ge=0)
    """Largest side of the cutout square, in pixels (0: no cutout); its use: cutout_mode."""
    reference_quirks: bool = True
    """The reference code's video blur, cutout and colour arithmetic, which produced the paper's
    numbers (REFERENCE.md section 4), or (false) the clean versions the paper describes; a
    `*_mode` key below, when set, decides its own step instead."""
    blur_mode: Literal["reference", "isotropic"] | None = None
    """"reference": a fixed sigma of 0.1 across and 2.0 down (the reference's sigma=(0.1, 2.0)
    read as (sigma_x, sigma_y)); "isotropic": one sigma per clip from U(0.1, 2.0). Unset: as
    reference_quirks says."""
    cutout_mode: Literal["reference", "fill"] | None = None
    """"reference": a square of even side randint(1, cutout_max) // 2 * 2 around a uniform centre,
    clipped at the borders, multiplied after normalisation by the first frame's mean; "fill": a
    square of side 1 to cutout_max inside the frame, set to the mean colour. Unset: as
    reference_quirks says."""
    colour_mode: Literal["reference", "fast"] | None = None
    """Colour jitter and grayscale. "reference": Pillow's uint8 arithmetic, truncated after every
    step, HSV hue (and the blur truncated to uint8), about 8x the fast version's CPU time;
    "fast": one composed affine map (YIQ hue), rounded once. Unset: as reference_quirks says."""
    volume_jitter: float = Field(0.2, ge=0.0, lt=1.0)
    """Audio gain drawn from U(1 - this, 1 + this)."""
    freq_masks: int = Field(2, ge=0)
    """Frequency masks on the spectrogram."""
    freq_mask_width: int = Field(10, ge=1)
    """Frequency mask widths are drawn from [0, this) mel bins."""
    time_masks: int = Field(2, ge=0)
    """Time masks on the spectrogram."""
    time_mask_width: int = Field(20, ge=1)
    """Time mask widths are drawn from [0, this) frames."""
    audio_crop_scale: Annotated[tuple[float, float], Field(strict=False)] = (0.6, 1.5)
    """Range of each axis' scale in the spectrogram's random resized crop."""
    time_warp: int = Field(0, ge=0)
    """SpecAugment time warp window in spectrogram frames (0: off, as in the reference's
    pretraining; its ESC-50 SVM uses 20)."""

    @model_validator(mode="after")
    def _scale_order(self) -> AugmentConfig:
        low, high = self.audio_crop_scale
        if not 0 < low <= high:
            raise PydanticCustomError(
                "scale_order",
                "audio_crop_scale must be (low, high) with 0 < low <= high, got ({low}, {high})",
                {"low": low, "high": high, "key": "audio_crop_scale"},
            )
        return self


class OptimConfig(Section):
    batch_size: int = Field(2048, ge=1)
    """Global batch size, split evenly across workers."""
    epochs: int = Field(100, ge=1)
    """Training epochs; one epoch visits every video `repeats_per_epoch` times."""
    repeats_per_epoch: int = Field(5, ge=1)
    """Visits of every video per epoch."""
    warmup_epochs: float = Field(2.0, ge=0.0)
    """Linear warm-up from 0 for backbones and projectors, per iteration."""
    lr: float = Field(2e-4, gt=0.0)
    """Peak learning rate of backbones and projectors (start of the cosine)."""
    final_lr: float = Field(1e-4, ge=0.0)
    """Learning rate of backbones and projectors at the end of the cosine."""
    predictor_lr: float = Field(2e-3, gt=0.0)
    """Constant learning rate of the predictors."""
    weight_decay: float = Field(1e-4, ge=0.0)
    """Adam weight decay."""
    betas: Annotated[tuple[Unit, Unit], Field(strict=False)] = (0.9, 0.999)
    """Adam betas, each in [0, 1)."""
    larc_trust: float = Field(1e-3, gt=0.0)
    """LARC trust coefficient."""
    larc_clip: bool = True
    """LARC clipping mode (never raise the learning rate above the group's)."""

    @model_validator(mode="after")
    def _warmup_fits(self) -> OptimConfig:
        if self.warmup_epochs > self.epochs:
            raise PydanticCustomError(
                "warmup",
                "warmup_epochs ({warmup}) is longer than epochs ({epochs})",
                {"warmup": self.warmup_epochs, "epochs": self.epochs, "key": "warmup_epochs"},
            )
        return self


class RunConfig(Section):
    name: str = Field("crisscross", min_length=1)
    """Run name shown in MLflow and the Ray dashboard."""
    seed: int = Field(0, ge=0)
    """Seed of every random draw (weights, sampling, augmentation)."""
    workers: int = Field(1, ge=1, json_schema_extra=HOW)
    """Ray Train workers (one per GPU on a GPU cluster)."""
    use_gpu: bool = Field(False, json_schema_extra=HOW)
    """Train on GPUs (NCCL); on CPUs workers use gloo."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Mixed precision: auto is bf16 autocast on GPU and fp32 on CPU."""
    channels_last: bool | Literal["auto"] = Field("auto", json_schema_extra=HOW)
    """Channels-last weights and inputs (channels_last_3d for video); auto: on GPU only."""
    compile: bool = Field(False, json_schema_extra=HOW)
    """torch.compile the model (the first steps compile); see `crisscross bench train --device`."""
    fused_optimizer: bool | Literal["auto"] = Field("auto", json_schema_extra=HOW)
    """Adam's fused kernel; auto: on GPU only."""
    output_dir: str = Field("runs", min_length=1)
    """Where checkpoints and exported weights go: a folder or a shared-storage URI."""
    cpus_per_worker: float = Field(1.0, gt=0.0, json_schema_extra=HOW)
    """CPUs reserved per training worker (the decode actors reserve their own)."""
    checkpoint_every: int = Field(0, ge=0, json_schema_extra=HOW)
    """Also checkpoint every this many steps (0: only at the end of each epoch)."""
    checkpoint_minutes: float = Field(10.0, ge=0.0, json_schema_extra=HOW)
    """Also checkpoint when this many minutes passed since the last checkpoint (0: off), so a
    crash or a stop loses at most that much training."""
    keep_checkpoints: int = Field(3, ge=1, json_schema_extra=HOW)
    """How many of the latest checkpoints to keep in the run's storage."""
    max_failures: int = Field(0, ge=-1, json_schema_extra=HOW)
    """Worker-group restarts from the last checkpoint after a worker dies (-1: no limit)."""
    deterministic: bool = Field(False, json_schema_extra=HOW)
    """Same batches in the same order on every run: Ray Data keeps the epoch's row order, at
    some cost in decode overlap (seeds already fix the order, windows and augmentations)."""
    progress_seconds: float = Field(30.0, gt=0.0, json_schema_extra=HOW)
    """Seconds between progress lines inside an epoch (an epoch always ends with one)."""


class TrackingConfig(Section):
    uri: str | None = None
    """MLflow tracking URI; unset means $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db here."""
    experiment: str = Field("crisscross", min_length=1)
    """MLflow experiment name."""


class MonitorConfig(Section):
    """The online monitor: kNN accuracy of the frozen encoders on small labelled sets."""

    every: int = Field(1, ge=0)
    """Run it every this many epochs, and once before training (0: never)."""
    before_training: bool = True
    """Also run it before the first step, for the "before" of kNN before/after (sweeps, which
    select on the epochs' figures, can skip it)."""
    video_root: str | None = None
    """A UCF101- or HMDB51-layout folder (see video_dataset) for the video encoder; unset: skip."""
    video_dataset: Literal["ucf101", "hmdb51"] = "ucf101"
    """Layout of video_root; kNN trains on split 1's train list and tests on its test list."""
    audio_root: str | None = None
    """An ESC-50-layout folder for the audio encoder (train folds 2-5, test fold 1); unset: skip."""
    clips: int = Field(2, ge=1)
    """Evenly spaced clips per file whose features are averaged."""
    k: int = Field(20, ge=1)
    """Neighbours that vote."""
    max_files: int = Field(2000, ge=2)
    """At most this many files per set (an even subsample), to bound the monitor's cost."""
    probe: bool = False
    """Also fit a logistic-regression probe on the same features (probe/video, probe/audio)."""


class ExperimentConfig(Section):
    """A whole experiment: what to build, what to optimise, on which data, how to run and track."""

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    tracking: TrackingConfig = Field(TrackingConfig(), json_schema_extra=HOW)
    monitor: MonitorConfig = Field(MonitorConfig(), json_schema_extra=HOW)

    @model_validator(mode="after")
    def _batch_splits(self) -> ExperimentConfig:
        batch, workers = self.optim.batch_size, self.run.workers
        if batch % workers:
            raise PydanticCustomError(
                "batch_split",
                "global batch {batch} does not split evenly across {workers} workers (run.workers)",
                {"batch": batch, "workers": workers, "key": "optim.batch_size"},
            )
        return self


@functools.cache
def how_keys(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys marked HOW ("run.workers"), a marked section as its prefix ("tracking.")."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        section = info.annotation if isinstance(info.annotation, type) else None
        is_section = section is not None and issubclass(section, Section)
        if (info.json_schema_extra or {}).get("how"):
            keys.append(key + "." if is_section else key)
        elif is_section:
            keys += how_keys(section, key + ".")
    return tuple(keys)


def runs_how(key: str) -> bool:
    """Whether a dotted key says how a run runs (HOW), not what it computes."""
    return any(key.startswith(k) if k.endswith(".") else key == k for k in how_keys())
