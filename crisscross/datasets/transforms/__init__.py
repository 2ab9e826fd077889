"""Video and audio transforms: pure functions of tensors and an explicit random generator."""

from crisscross.datasets.transforms.audio import AudioAugment, log_mel
from crisscross.datasets.transforms.strength import AugmentStrength
from crisscross.datasets.transforms.video import VideoAugment, eval_clip, normalize

__all__ = ["AudioAugment", "AugmentStrength", "VideoAugment", "eval_clip", "log_mel", "normalize"]
