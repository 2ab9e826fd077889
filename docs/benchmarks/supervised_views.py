"""Is the learning corpus' video task learnable with labels, and what do the pretraining views cost?

One process, no Ray: the motion content (`crisscross.datasets.synth.motion`) rendered in memory
at the corpus' size (64x48, 16 fps, 4 s; 4 x 100 clips to train, 4 x 40 to test), the recipe's
video encoder (R(2+1)D-18, width 8) and a linear head trained with Adam on the class, batch 32,
one 8-frame window per clip; accuracy on the test clips (4 windows averaged, the monitor's
centre view) every 100 steps. `--views` picks the training view:
  none   the monitor's centre view (no augmentation)
  crop   the recipe's random resized crop and flip only
  full   the recipe's whole video augmentation (crop, flip, colour jitter, grayscale, cutout)
Written for docs/learning.md (the in-memory harness of the recipe search); seeded, so a rerun on
2 threads gives the same figures.

    .venv/bin/python docs/benchmarks/supervised_views.py --views full --lr 1e-3 --steps 1200
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from crisscross.datasets.synth import motion
from crisscross.datasets.transforms.video import VideoAugment, eval_clip, normalize
from crisscross.models import create_backbone

FPS, FRAMES, SIZE = 16.0, 8, 32


def render(per_class: int, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    clips, labels = [], []
    for c in range(4):
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            parts = motion.segments(4.0, rng)
            frames = motion.render_video(
                c, parts, seconds=4.0, fps=FPS, width=64, height=48, rng=rng
            )
            clips.append(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous())
            labels.append(c)
    return clips, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", choices=("none", "crop", "full"), default="full")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--crop-min-area", type=float, default=0.3)
    parser.add_argument("--cutout-max", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    g = np.random.default_rng(0)
    start = time.time()
    train, train_labels = render(100, 1)
    test, test_labels = render(40, 2)
    augment = VideoAugment(  # learning.yaml's video augmentation, clean modes
        size=SIZE,
        crop_area=(args.crop_min_area, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),  # jitter_strength 0.5
        blur_p=0.0,
        cutout_max=args.cutout_max,
        blur_mode="isotropic",
        cutout_mode="fill",
        colour_mode="fast",
    )

    def view(clip: torch.Tensor) -> torch.Tensor:
        i = int(g.integers(0, len(clip) - FRAMES + 1))
        window = clip[i : i + FRAMES]
        if args.views == "none":
            return normalize(eval_clip(window, SIZE))
        if args.views == "crop":
            return normalize(augment.geometry(window, g))
        return normalize(augment(window, g))

    backbone = create_backbone("r2plus1d_18", width=8)
    model = nn.Sequential(backbone, nn.Linear(backbone.embed_dim, 4))
    adam = torch.optim.Adam(model.parameters(), lr=args.lr)

    @torch.no_grad()
    def accuracy() -> float:
        model.eval()
        right = 0
        for clip, label in zip(test, test_labels, strict=True):
            starts = np.linspace(0, len(clip) - FRAMES, 4).astype(int)
            x = torch.stack([normalize(eval_clip(clip[s : s + FRAMES], SIZE)) for s in starts])
            right += int(model(x).mean(0).argmax() == label)
        model.train()
        return right / len(test)

    print(f"views {args.views}, lr {args.lr}: step 0 accuracy {accuracy():.3f} (chance 0.250)")
    for step in range(1, args.steps + 1):
        picked = g.integers(0, len(train), 32)
        x = torch.stack([view(train[i]) for i in picked])
        y = torch.tensor([train_labels[i] for i in picked])
        loss = nn.functional.cross_entropy(model(x), y)
        adam.zero_grad()
        loss.backward()
        adam.step()
        if step % 100 == 0:
            print(
                f"step {step}: loss {loss.item():.3f}, accuracy {accuracy():.3f}, "
                f"{time.time() - start:.0f} s"
            )


if __name__ == "__main__":
    main()
