"""The in-memory pretraining harness of the recipe search (docs/learning.md): one process, no Ray.

The learning recipe (`experiments/pretext/learning.yaml`, with KEY=VALUE overrides) trained on the
motion content rendered in memory (4 x 100 clips of 4 s, 64x48, 16 fps, 16 kHz) through the
project's own per-sample function (`PretextSample.views`), `DeviceAugment`, `pretext_step` and
LARC(Adam) with the recipe's schedule; every `every` steps, kNN (k 20) of both encoders on
held-out clips (video: 4 x 30 bank, 4 x 20 queries, 4 centre views averaged; audio: the same
counts of 5 s clips, 4 windows averaged), the same kNN on each half of the class alone (up or
down; fast or slow: chance 0.5, which shows a representation that learned one factor of the
class and not the other), and the mean loss terms and collapse metrics. It is faster to iterate
on than `crisscross bench learning`, whose figures (the real pipeline, the monitor's sets) are
the ones the issue's goal is judged on; the two need not agree. Besides KEY=VALUE config
overrides: `seed=`, `seconds=` (of the pretraining clips), `desync=1` (the sound's cuts at
other times than the picture's), `glide=` and `travel=` (the corpus' class signals).

    .venv/bin/python docs/benchmarks/ssl_harness.py steps=500 every=250 optim.epochs=5
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
import yaml

from crisscross.config import load_config
from crisscross.datasets.samples import DeviceAugment, PretextSample, sample_generators
from crisscross.datasets.sampling import frame_times, pretext_windows
from crisscross.datasets.synth import motion
from crisscross.datasets.transforms.audio import log_mel
from crisscross.datasets.transforms.video import eval_clip, normalize
from crisscross.platform.storage import EXPERIMENTS
from crisscross.trainers.builders import clip_spec, seeded_model
from crisscross.trainers.knn import knn_accuracy
from crisscross.trainers.optim import build_optimizer, set_learning_rates
from crisscross.trainers.pretext_step import pretext_step

FPS, SR, SECONDS = 16.0, 16000, 4.0
TERMS = (
    "loss",
    "v1v2",
    "a1a2",
    "v1a1",
    "v2a2",
    "v1a2",
    "embed_cos/av",
    "embed_std/video",
    "embed_std/audio",
)


def render(per_class, seed, seconds, *, video=True, audio=True, desync=False):
    out = []
    for c in range(4):
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            parts = motion.segments(seconds, rng)
            sound_parts = motion.segments(seconds, rng) if desync else parts
            f = w = None
            if video:
                f = motion.render_video(
                    c, parts, seconds=seconds, fps=FPS, width=64, height=48, rng=rng
                )
            if audio:
                w = motion.render_audio(
                    c, sound_parts, seconds=seconds, sample_rate=SR, channels=1, rng=rng
                )[0]
            out.append((f, w, c))
    return out


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    steps, every = int(args.pop("steps", 1500)), int(args.pop("every", 250))
    seed = int(args.pop("seed", 0))
    desync = bool(int(args.pop("desync", 0)))
    seconds = float(args.pop("seconds", SECONDS))  # of the pretraining clips
    for name in ("GLIDE", "TRAVEL"):  # the corpus' class signals
        if name.lower() in args:
            setattr(motion, name, float(args.pop(name.lower())))
    overrides = {k: yaml.safe_load(v) for k, v in args.items()}
    overrides |= {"run.workers": 1, "run.seed": seed}
    config = load_config(EXPERIMENTS / "pretext" / "learning.yaml", overrides)
    torch.set_num_threads(2)
    spec = clip_spec(config)
    sample, augment = PretextSample(spec), DeviceAugment(spec)
    start = time.time()
    pretext = render(100, 100 + seed, seconds, desync=desync)
    sets = {
        "video": (render(30, 1, 4.0, audio=False), render(20, 2, 4.0, audio=False)),
        "audio": (render(30, 3, 5.0, video=False), render(20, 4, 5.0, video=False)),
    }
    batch_size = config.optim.batch_size
    picks = np.random.default_rng(seed)

    def batch(step):
        items = []
        for b in range(batch_size):
            rng, g = sample_generators(seed, 0, step * batch_size + b)
            frames, wave, _ = pretext[int(picks.integers(len(pretext)))]
            w = pretext_windows(
                spec.sampling,
                seconds,
                audio_seconds=spec.audio_seconds,
                video_seconds=spec.video_seconds,
                rng=rng,
            )
            times = frame_times(w.v1, spec.frames, FPS) + frame_times(w.v2, spec.frames, FPS)
            picked = frames[[min(round(t * FPS), len(frames) - 1) for t in times]]
            n = round(spec.audio_seconds * SR)
            items.append(sample.views(picked, [wave[round(s * SR) :][:n] for s in (w.a1, w.a2)], g))
        return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}

    @torch.no_grad()
    def features(encoder, data, kind):
        out = []
        for frames, wave, _ in data:
            if kind == "video":
                starts = np.linspace(0, len(frames) / FPS - spec.frames / FPS, 4)
                x = torch.stack(
                    [
                        normalize(
                            eval_clip(
                                torch.from_numpy(
                                    frames[round(s * FPS) : round(s * FPS) + spec.frames]
                                ).permute(0, 3, 1, 2),
                                spec.crop_size,
                            )
                        )
                        for s in starts
                    ]
                )
            else:
                n = int(spec.audio_seconds * SR)
                starts = np.linspace(0, len(wave) / SR - spec.audio_seconds, 4)
                x = torch.stack(
                    [
                        log_mel(torch.from_numpy(wave[int(s * SR) : int(s * SR) + n].copy()))
                        for s in starts
                    ]
                )
            out.append(encoder(x).mean(0))
        return torch.stack(out), torch.tensor([d[2] for d in data])

    def knn(model):
        model.eval()
        scores, factors = [], []  # and up/down, fast/slow alone (chance 0.5): video, then audio
        for kind, (bank, queries) in sets.items():
            encoder = model.video if kind == "video" else model.audio
            a, la = features(encoder, bank, kind)
            b, lb = features(encoder, queries, kind)
            scores.append(round(float(knn_accuracy(a, la, b, lb, k=20)), 3))
            for factor in (lambda c: (c < 2).long(), lambda c: ((c == 0) | (c == 3)).long()):
                factors.append(round(float(knn_accuracy(a, factor(la), b, factor(lb), k=20)), 3))
        model.train()
        return [*scores, f"factors {factors}"]

    torch.manual_seed(seed)
    model = seeded_model(config)
    optimizer = build_optimizer(model, config.optim)
    per_epoch = steps // config.optim.epochs
    print("step 0: kNN video, audio", knn(model), flush=True)
    history = []
    for step in range(steps):
        set_learning_rates(optimizer, step, optim=config.optim, steps_per_epoch=per_epoch)
        values = pretext_step(
            model,
            batch(step),
            optimizer,
            step=step + 1,
            device=torch.device("cpu"),
            augment=augment,
        )
        history.append(values)
        if (step + 1) % every == 0:
            means = {k: round(float(np.mean([h[k] for h in history[-every:]])), 2) for k in TERMS}
            print(
                f"step {step + 1}: kNN video, audio",
                knn(model),
                means,
                f"{time.time() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
