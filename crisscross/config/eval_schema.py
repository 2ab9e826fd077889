"""Typed, frozen configs of the downstream protocols (REFERENCE.md section 6).

Three experiment kinds share the `model`, `run` and `tracking` sections: full fine-tuning on
UCF101/HMDB51 (`FinetuneExperiment`), the ESC-50 linear SVM (`SvmExperiment`) and the cheap
logistic-regression/kNN probe of frozen features (`ProbeExperiment`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from crisscross.config.schema import Section, TrackingConfig

VideoDataset = Literal["ucf101", "hmdb51"]
EvalDataset = Literal["ucf101", "hmdb51", "esc50"]
Positive = Annotated[float, Field(gt=0.0)]


class EvalModelConfig(Section):
    """Which backbone is evaluated; unset keys are read from the weights themselves."""

    backbone: str | None = None
    """Registered backbone the weights must match (unset: whatever the weights hold)."""
    width: int | None = Field(None, ge=1)
    """Its width (unset: the weights' width)."""


class FinetuneModelConfig(EvalModelConfig):
    """The fine-tuned backbone and its linear head."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the max-pooled features right before the linear head (0: no dropout layer).
    The reference uses it only after AudioSet pretraining: 0.1 for UCF101 8f, 0.5 for HMDB51."""


class EvalRunConfig(Section):
    name: str = Field("eval", min_length=1)
    """Run name shown in MLflow (the pretraining's name is added to it)."""
    seed: int = Field(0, ge=0)
    """Seed of every random draw (head initialisation, clip choice, augmentation)."""
    workers: int = Field(1, ge=1)
    """Ray workers: training workers per fold (fine-tune) or feature extraction tasks."""
    use_gpu: bool = False
    """Run on GPUs (one per worker)."""
    cpus_per_worker: float = Field(1.0, gt=0.0)
    """CPUs reserved per worker."""
    loader_workers: int = Field(0, ge=0)
    """Decoding processes per worker (torch DataLoader workers; 0 decodes in the worker)."""
    output_dir: str = Field("runs", min_length=1)
    """Where fine-tuning checkpoints go: a folder or a shared-storage URI."""
    max_failures: int = Field(0, ge=-1)
    """Restarts of a fold's workers from its last epoch checkpoint after a worker dies."""


class FinetuneDataConfig(Section):
    dataset: VideoDataset = "ucf101"
    """Layout of the root: ucf101 or hmdb51 (3 official splits each)."""
    root: str | None = None
    """Dataset root folder or URI; may also be given with --root."""
    frames: int = Field(8, ge=1)
    """Frames per clip: 8 ("8f", 0.5 s) or 32 ("32f", 2 s) at 16 fps."""
    fps: float = Field(16.0, gt=0.0)
    """Frame rate clips are resampled to."""
    crop_size: int = Field(224, ge=8)
    """Side of the square crop; test clips are resized to crop_size / 0.875 (256 for 224)."""
    clips_per_video: int = Field(10, ge=1)
    """Random training clips per video per epoch (each an independent sample)."""
    test_clips: int = Field(10, ge=1)
    """Evenly spaced test clips per video whose softmax outputs are averaged."""
    decode_threads: int = Field(1, ge=1)
    """FFmpeg threads per decode."""


class FinetuneOptimConfig(Section):
    epochs: int = Field(20, ge=1)
    """Training epochs."""
    batch_size: int = Field(64, ge=1)
    """Global batch size, split evenly across workers."""
    lr: float = Field(5e-4, gt=0.0)
    """Initial learning rate (SGD)."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """SGD momentum."""
    weight_decay: float = Field(0.0, ge=0.0)
    """SGD weight decay (none in the paper)."""
    milestones: tuple[int, ...] = Field((6, 10, 14), strict=False)
    """Epochs after which the learning rate is multiplied by gamma."""
    gamma: float = Field(0.3, gt=0.0, le=1.0)
    """Multi-step decay factor."""
    test_every: int = Field(1, ge=1)
    """Test every this many epochs (and always after the last)."""

    @model_validator(mode="after")
    def _milestones_rise(self) -> FinetuneOptimConfig:
        if list(self.milestones) != sorted(set(self.milestones)) or any(
            m < 1 for m in self.milestones
        ):
            raise PydanticCustomError(
                "milestones",
                "milestones must be distinct epochs >= 1 in rising order, got {got}",
                {"got": list(self.milestones), "key": "milestones"},
            )
        return self


class FinetuneExperiment(Section):
    """Full fine-tuning: max-pooled backbone + linear head, trained on one split, tested on it."""

    model: FinetuneModelConfig = FinetuneModelConfig()
    data: FinetuneDataConfig = FinetuneDataConfig()
    optim: FinetuneOptimConfig = FinetuneOptimConfig()
    run: EvalRunConfig = EvalRunConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _batch_splits(self) -> FinetuneExperiment:
        if self.optim.batch_size % self.run.workers:
            raise PydanticCustomError(
                "batch_split",
                "global batch {batch} does not split evenly across {workers} workers (run.workers)",
                {
                    "batch": self.optim.batch_size,
                    "workers": self.run.workers,
                    "key": "optim.batch_size",
                },
            )
        return self


class AudioDataConfig(Section):
    dataset: Literal["esc50"] = "esc50"
    """Layout of the root (ESC-50, 5 official folds)."""
    root: str | None = None
    """Dataset root folder or URI; may also be given with --root."""
    seconds: float = Field(2.0, gt=0.0)
    """Length of each audio crop (2 s in the paper; 5 s is the whole ESC-50 clip)."""
    sample_rate: int = Field(16000, ge=1000)
    """Audio is resampled to this rate, mono."""
    n_mels: int = Field(80, ge=1)
    """Mel bins of the log-mel spectrogram."""
    train_crops: int = Field(10, ge=1)
    """Random augmented crops per training file, each a training example."""
    test_clips: int = Field(10, ge=1)
    """Evenly spaced crops per test file whose decision values are averaged."""


class SvmConfig(Section):
    protocol: Literal["clean", "reference"] = "clean"
    """"clean": the settings below as given. "reference": the reference code's ESC-50 SVM, which
    produced the paper's numbers: conv5 features l2-normalised over time, no scaling, 100
    time-warped training crops per file, test clips from the first 2 s, its C grid, C chosen on
    the test fold (ties to the larger C), 1000 iterations. It replaces data.train_crops,
    data.test_clips, svm.c_grid, svm.select_c, svm.standardize and svm.max_iter, and says so."""
    c_grid: tuple[Positive, ...] = Field((1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), strict=False)
    """The C values tried."""
    select_c: Literal["cv", "test"] = "cv"
    """How C is chosen: "cv" by leave-one-fold-out on the training folds only; "test" on the
    test fold, as the reference code did (optimistic; for comparison with the paper only)."""
    standardize: bool = True
    """Scale features to zero mean, unit variance (fitted on the training folds)."""
    max_iter: int = Field(2000, ge=1)
    """LinearSVC iterations."""

    @model_validator(mode="after")
    def _grid(self) -> SvmConfig:
        if not self.c_grid:
            raise PydanticCustomError("empty_grid", "give at least one C value", {"key": "c_grid"})
        return self


class SvmExperiment(Section):
    """Linear SVM on frozen audio conv5 features (max pool (1,3) stride (1,2), flattened)."""

    model: EvalModelConfig = EvalModelConfig()
    data: AudioDataConfig = AudioDataConfig()
    svm: SvmConfig = SvmConfig()
    run: EvalRunConfig = EvalRunConfig()
    tracking: TrackingConfig = TrackingConfig()

    def resolved(self) -> tuple[SvmExperiment, list[str]]:
        """The experiment with its protocol's fixed settings applied, and one line per setting
        that this changed (empty for the clean protocol)."""
        if self.svm.protocol != "reference":
            return self, []
        fixed = {"data": REFERENCE_SVM_DATA, "svm": REFERENCE_SVM}
        notes, sections = [], {}
        for name, values in fixed.items():
            section = getattr(self, name)
            for key, value in values.items():
                if getattr(section, key) != value:
                    notes.append(f"{name}.{key} {value} (the config said {getattr(section, key)})")
            sections[name] = section.model_copy(update=values)
        return self.model_copy(update=sections), notes


# The reference code's ESC-50 SVM (evaluate/configs/downstream/esc50/config_fold*_2s.yaml).
REFERENCE_SVM_DATA = {"train_crops": 100, "test_clips": 10}
REFERENCE_SVM = {
    "c_grid": (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1.0),
    "select_c": "test",
    "standardize": False,
    "max_iter": 1000,
}


class ProbeDataConfig(Section):
    dataset: EvalDataset = "ucf101"
    """Layout of the root: ucf101, hmdb51 (video encoder) or esc50 (audio encoder)."""
    root: str | None = None
    """Dataset root folder or URI; may also be given with --root."""
    frames: int = Field(8, ge=1)
    """Video: frames per clip at `fps`."""
    fps: float = Field(16.0, gt=0.0)
    """Video: frame rate clips are resampled to."""
    crop_size: int = Field(112, ge=8)
    """Video: side of the centre crop."""
    seconds: float = Field(2.0, gt=0.0)
    """Audio: length of each crop."""
    sample_rate: int = Field(16000, ge=1000)
    """Audio: resampling rate, mono."""
    n_mels: int = Field(80, ge=1)
    """Audio: mel bins."""
    clips: int = Field(4, ge=1)
    """Evenly spaced clips per file whose pooled embeddings are averaged into its feature."""


class ProbeConfig(Section):
    c: float = Field(1.0, gt=0.0)
    """Inverse regularisation strength of the logistic regression."""
    max_iter: int = Field(1000, ge=1)
    """Solver iterations."""
    k: int = Field(20, ge=1)
    """Neighbours voting in the kNN classifier reported beside it."""


class ProbeExperiment(Section):
    """Logistic regression and kNN on frozen, globally pooled embeddings."""

    model: EvalModelConfig = EvalModelConfig()
    data: ProbeDataConfig = ProbeDataConfig()
    probe: ProbeConfig = ProbeConfig()
    run: EvalRunConfig = EvalRunConfig()
    tracking: TrackingConfig = TrackingConfig()
