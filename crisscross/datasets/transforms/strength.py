"""The tunable knobs of the pretraining augmentations, as one frozen value a sweep can vary."""

from __future__ import annotations

from dataclasses import dataclass

from crisscross.datasets.transforms.audio import AudioAugment
from crisscross.datasets.transforms.video import MODES, VideoAugment

_JITTER = (0.4, 0.4, 0.4, 0.2)  # brightness, contrast, saturation, hue at strength 1


@dataclass(frozen=True)
class AugmentStrength:
    """REFERENCE.md section 4 at the defaults; `video`/`audio` build the augmentations."""

    crop_min_area: float = 0.08
    flip_p: float = 0.5
    jitter_strength: float = 1.0  # scales (0.4, 0.4, 0.4, 0.2); hue is capped at 0.5
    jitter_p: float = 1.0
    gray_p: float = 0.2
    blur_p: float = 0.5
    cutout_max: int = 20
    reference_quirks: bool = True  # the reference code's blur, cutout, colour; False: clean
    blur_mode: str | None = None  # each mode, when set, overrides reference_quirks (MODES)
    cutout_mode: str | None = None
    colour_mode: str | None = None
    volume_jitter: float = 0.2  # gain drawn from U(1 - this, 1 + this)
    freq_masks: int = 2
    freq_mask_width: int = 10
    time_masks: int = 2
    time_mask_width: int = 20
    audio_crop_scale: tuple[float, float] = (0.6, 1.5)
    time_warp: int = 0

    def video(self, size: int, *, blur: bool = True) -> VideoAugment:
        s = self.jitter_strength
        jitter = (*(s * j for j in _JITTER[:3]), min(0.5, s * _JITTER[3]))
        return VideoAugment(
            size=size,
            crop_area=(self.crop_min_area, 1.0),
            flip_p=self.flip_p,
            jitter=jitter,
            jitter_p=self.jitter_p,
            gray_p=self.gray_p,
            blur_p=self.blur_p if blur else 0.0,
            cutout_max=self.cutout_max,
            **self.modes(),
        )

    def modes(self) -> dict[str, str]:
        """Each video step's version: its own `*_mode` if set, else the reference code's with
        `reference_quirks`, the clean one without."""
        version = 0 if self.reference_quirks else 1  # MODES lists the reference's first
        return {name: getattr(self, name) or modes[version] for name, modes in MODES.items()}

    def audio(self, *, sample_rate: int, n_mels: int) -> AudioAugment:
        return AudioAugment(
            volume=(1.0 - self.volume_jitter, 1.0 + self.volume_jitter),
            freq_masks=self.freq_masks,
            freq_mask_width=self.freq_mask_width,
            time_masks=self.time_masks,
            time_mask_width=self.time_mask_width,
            crop_scale=self.audio_crop_scale,
            time_warp=self.time_warp,
            sample_rate=sample_rate,
            n_mels=n_mels,
        )
