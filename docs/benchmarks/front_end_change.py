"""How much the log-mel front-end fix (issue 17) moves inputs and released-format audio features.

Old: zero-padded STFT, log(mel + float64 eps), constants rounded to (-5.3688, 4.41), float32.
New: crisscross.datasets.transforms.audio.log_mel (reflect padding, float32 eps, float64 STFT).
The backbone is the paper-size audio ResNet-18 saved and reloaded strictly in the released format,
seeded init (no released file is shipped), in eval mode; features are its 512-d pooled output.
    .venv/bin/python docs/benchmarks/front_end_change.py
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
import torchaudio

from crisscross.datasets.transforms.audio import log_mel
from crisscross.models.audio import AudioResNet18
from crisscross.models.weights import load_backbone, save_backbone


def old_log_mel(wave: torch.Tensor) -> torch.Tensor:
    mel = torchaudio.transforms.MelSpectrogram(
        16000,
        n_fft=1024,
        hop_length=160,
        power=2.0,
        n_mels=80,
        f_min=0.0,
        f_max=8000.0,
        center=True,
        pad_mode="constant",
        norm="slaney",
        mel_scale="slaney",
    )
    return ((mel(wave) + float(np.finfo(float).eps)).log() - -5.3688) / 4.41


def main() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    clips = {
        "silence": torch.zeros(1, 32000),
        "noise 0.1": (torch.randn(1, 32000, generator=g) * 0.1).clamp(-1, 1),
        "tone 1 kHz + 0.5 s silence": torch.cat(
            [0.5 * torch.sin(torch.arange(24000) / 16000 * 2 * torch.pi * 1000), torch.zeros(8000)]
        )[None],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = save_backbone(AudioResNet18(), f"{tmp}/aud_crisscross_test.pth.tar")
        net = load_backbone(path, modality="audio").eval()
    print("| clip | log-mel max abs diff | mean diff | feature cosine | feature rel. L2 diff |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for name, wave in clips.items():
            a, b = old_log_mel(wave)[:, None], log_mel(wave)
            fa, fb = net(a), net(b)
            cos = torch.nn.functional.cosine_similarity(fa, fb).item()
            rel = ((fa - fb).norm() / fa.norm()).item()
            d = (a - b).abs()
            print(f"| {name} | {d.max():.3f} | {(a - b).mean():+.3f} | {cos:.4f} | {rel:.3f} |")


if __name__ == "__main__":
    main()
