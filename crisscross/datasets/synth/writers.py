"""`crisscross synth`: small datasets of real encoded files in each dataset's on-disk layout.

Kinetics/AudioSet: H.264 + AAC mp4; UCF101/HMDB51: MPEG-4 AVI; ESC-50: 16-bit PCM WAV; each with
its split or meta files. Two kinds of content: "motion" (the default, motion.py), where only what
the object does and how it sounds in step with it carries the class, so that random features score
near chance and self-supervision has something to learn; and "style" (content.py), where each
class has its own look and sound (random features already separate it; kept for the data
benchmark's codec-heavy clips). Class k is the same in every dataset, so a representation
pretrained on one synthetic set transfers to the others.
"""

from __future__ import annotations

import csv
import os
import string
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crisscross.datasets.layouts.kinetics import kinetics_sound_classes
from crisscross.datasets.media import write_av, write_wav
from crisscross.datasets.synth import content, motion
from crisscross.datasets.synth.content import class_style, event_times

CONTENTS = ("motion", "style")

UCF_NAMES = [
    "ApplyEyeMakeup",
    "Archery",
    "BabyCrawling",
    "Basketball",
    "BenchPress",
    "Biking",
    "Billiards",
    "BlowDryHair",
    "BlowingCandles",
    "Bowling",
    "BoxingPunchingBag",
    "Drumming",
]
HMDB_NAMES = [
    "brush_hair",
    "cartwheel",
    "catch",
    "chew",
    "clap",
    "climb",
    "dive",
    "draw_sword",
    "dribble",
    "drink",
    "eat",
    "fencing",
]
ESC_NAMES = [
    "dog",
    "rooster",
    "pig",
    "cow",
    "frog",
    "cat",
    "hen",
    "insects",
    "sheep",
    "crow",
    "rain",
    "sea_waves",
]
YTID_CHARS = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: counts, clip length and the media format of the videos."""

    classes: int = 4
    per_class: int = 6
    seconds: float = 4.0
    seed: int = 0
    width: int = 160
    height: int = 120
    fps: float = 25.0
    sample_rate: int = 44100
    channels: int = 2
    keyframe_every: float = 2.0
    preset: str = "ultrafast"  # x264 preset of the mp4 videos
    content: str = "motion"  # "motion": the class is the shared motion; "style": its look and sound

    def __post_init__(self) -> None:
        if self.content not in CONTENTS:
            raise ValueError(f"content must be one of {', '.join(CONTENTS)}, not {self.content!r}")
        if self.content == "motion" and self.classes > motion.CLASSES:
            raise ValueError(
                f"motion content has {motion.CLASSES} classes (up fast, up slowly, down slowly, "
                f"down fast); {self.classes} asked for: use at most {motion.CLASSES}, or "
                "content 'style' for more"
            )


@dataclass(frozen=True)
class Clip:
    rel: str
    class_id: int
    index: int  # within the dataset, for per-clip randomness


def synthesize(dataset: str, out: str | os.PathLike[str], spec: SynthSpec) -> int:
    """Write dataset `dataset` in its layout under `out`; returns the number of media files."""
    root = Path(out)
    writer = WRITERS.get(dataset)
    if writer is None:
        raise ValueError(f"unknown dataset {dataset!r}; synth knows {', '.join(sorted(WRITERS))}")
    clips, encode = writer(root, spec)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda clip: encode(root / clip.rel, clip), clips))
    return len(clips)


def _names(pool: list[str], count: int, fmt: str) -> list[str]:
    return [pool[i] if i < len(pool) else fmt.format(i) for i in range(count)]


def _render(
    spec: SynthSpec, clip: Clip, *, video: bool, channels: int | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A clip's frames and sound, sharing its event times or segments (the audio-visual
    correlation)."""
    rng = np.random.default_rng([spec.seed, clip.index])
    if spec.content == "motion":  # the class id and the clip's segments
        what, plan, module = clip.class_id, motion.segments(spec.seconds, rng), motion
    else:  # the class' style and the clip's event times
        what = class_style(clip.class_id)
        plan, module = event_times(what, spec.seconds, rng), content
    frames = sound = None
    if video:
        frames = module.render_video(
            what,
            plan,
            seconds=spec.seconds,
            fps=spec.fps,
            width=spec.width,
            height=spec.height,
            rng=rng,
        )
    if channels:
        sound = module.render_audio(
            what,
            plan,
            seconds=spec.seconds,
            sample_rate=spec.sample_rate,
            channels=channels,
            rng=rng,
        )
    return frames, sound


def _audiovisual(
    spec: SynthSpec, *, video_codec: str, with_audio: bool
) -> Callable[[Path, Clip], None]:
    def encode(path: Path, clip: Clip) -> None:
        video, audio = _render(
            spec, clip, video=True, channels=spec.channels if with_audio else None
        )
        write_av(
            path,
            video,
            fps=spec.fps,
            audio_CN=audio,
            sample_rate=spec.sample_rate,
            video_codec=video_codec,
            audio_codec="aac",
            keyframe_every=spec.keyframe_every,
            preset=spec.preset,
        )

    return encode


def _kinetics(root: Path, spec: SynthSpec, classes: list[str]) -> tuple[list[Clip], Callable]:
    rng = np.random.default_rng(spec.seed)
    clips, rows = [], {"train": [], "val": []}
    for c, name in enumerate(classes):
        for i in range(spec.per_class):
            split = "val" if i % 5 == 4 else "train"
            ytid = "".join(rng.choice(list(YTID_CHARS), size=11))
            start = int(rng.integers(0, 300))
            end = start + round(spec.seconds)
            clips.append(Clip(f"{split}/{name}/{ytid}_{start:06d}_{end:06d}.mp4", c, len(clips)))
            rows[split].append([name, ytid, start, end, split])
    for split, lines in rows.items():
        _write_csv(
            root / "annotations" / f"{split}.csv",
            ["label", "youtube_id", "time_start", "time_end", "split"],
            lines,
        )
    return clips, _audiovisual(spec, video_codec="libx264", with_audio=True)


def _kinetics400(root: Path, spec: SynthSpec):
    return _kinetics(
        root, spec, _names(kinetics_sound_classes(), spec.classes, "synthetic class {}")
    )


def _kinetics_sound(root: Path, spec: SynthSpec):
    names = kinetics_sound_classes()
    if spec.classes > len(names):
        raise ValueError(f"kinetics_sound has {len(names)} classes; asked for {spec.classes}")
    return _kinetics(root, spec, names[: spec.classes])


def _audioset(root: Path, spec: SynthSpec):
    rng = np.random.default_rng(spec.seed)
    mids = [f"/m/synth{c}" for c in range(spec.classes)]
    clips, rows = [], {"balanced_train": [], "eval": []}
    for c in range(spec.classes):
        for i in range(spec.per_class):
            split = "eval" if i % 5 == 4 else "balanced_train"
            ytid = "".join(rng.choice(list(YTID_CHARS), size=11))
            start = int(rng.integers(0, 300))
            clips.append(Clip(f"{split}/{ytid}_{start}.mp4", c, len(clips)))
            rows[split].append(f'{ytid}, {start:.3f}, {start + spec.seconds:.3f}, "{mids[c]}"')
    for split, lines in rows.items():
        header = [
            "# Segments csv created by crisscross synth",
            f"# num_ytids={len(lines)}, num_segs={len(lines)}, num_unique_labels={len(mids)}",
            "# YTID, start_seconds, end_seconds, positive_labels",
        ]
        (root / f"{split}_segments.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}_segments.csv").write_text("\n".join(header + lines) + "\n")
    _write_csv(
        root / "class_labels_indices.csv",
        ["index", "mid", "display_name"],
        [[c, mid, f"synthetic sound {c}"] for c, mid in enumerate(mids)],
    )
    return clips, _audiovisual(spec, video_codec="libx264", with_audio=True)


def _ucf101(root: Path, spec: SynthSpec):
    names = _names(UCF_NAMES, spec.classes, "SynthClass{:02d}")
    clips, lists = [], {f"{kind}list0{n}.txt": [] for kind in ("train", "test") for n in (1, 2, 3)}
    for c, name in enumerate(names):
        for i in range(spec.per_class):
            group, clip = 1 + (i * 4) % 25, 1 + i // 7
            rel = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
            clips.append(Clip(f"UCF-101/{rel}", c, len(clips)))
            for n in (1, 2, 3):  # the official rule: split n tests groups 7(n-1)+1 .. 7n
                if 7 * (n - 1) < group <= 7 * n:
                    lists[f"testlist0{n}.txt"].append(rel)
                else:
                    lists[f"trainlist0{n}.txt"].append(f"{rel} {c + 1}")
    listdir = root / "ucfTrainTestlist"
    listdir.mkdir(parents=True, exist_ok=True)
    (listdir / "classInd.txt").write_text("".join(f"{c + 1} {n}\n" for c, n in enumerate(names)))
    for file, lines in lists.items():
        (listdir / file).write_text("".join(f"{line}\n" for line in lines))
    return clips, _audiovisual(spec, video_codec="mpeg4", with_audio=False)


def _hmdb51(root: Path, spec: SynthSpec):
    names = _names(HMDB_NAMES, spec.classes, "synth_class_{:02d}")
    clips, splitdir = [], root / "testTrainMulti_7030_splits"
    splitdir.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(names):
        files = [f"clip{i:03d}_{name}_f_cm_np1_ri_med_{i % 3}.avi" for i in range(spec.per_class)]
        clips += [Clip(f"{name}/{file}", c, len(clips) + i) for i, file in enumerate(files)]
        for n in (1, 2, 3):  # 70 % train, 30 % test (every 10 files), another draw per split;
            # 3 is coprime with 10, so even 5 files per class have a test video in each split
            ids = ["1" if (3 * i + n) % 10 < 7 else "2" for i in range(len(files))]
            text = "".join(f"{file} {tag} \n" for file, tag in zip(files, ids, strict=True))
            (splitdir / f"{name}_test_split{n}.txt").write_text(text)
    return clips, _audiovisual(spec, video_codec="mpeg4", with_audio=False)


def _esc50(root: Path, spec: SynthSpec):
    names = _names(ESC_NAMES, spec.classes, "synthetic_sound_{}")
    clips, rows = [], []
    for c, name in enumerate(names):
        for i in range(spec.per_class):
            fold, source = 1 + i % 5, f"{100000 + c * 1000 + i}"
            file = f"{fold}-{source}-A-{c}.wav"
            clips.append(Clip(f"audio/{file}", c, len(clips)))
            rows.append([file, fold, c, name, "False", source, "A"])
    _write_csv(
        root / "meta" / "esc50.csv",
        ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
        rows,
    )

    def encode(path: Path, clip: Clip) -> None:
        _, audio = _render(spec, clip, video=False, channels=1)
        write_wav(path, audio, spec.sample_rate)

    return clips, encode


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


WRITERS = {
    "kinetics400": _kinetics400,
    "kinetics_sound": _kinetics_sound,
    "audioset": _audioset,
    "ucf101": _ucf101,
    "hmdb51": _hmdb51,
    "esc50": _esc50,
}
