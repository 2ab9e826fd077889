"""kNN accuracy by hand; frozen features of a labelled set; the synthetic classes are separable."""

from __future__ import annotations

import math

import pytest
import torch

from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.samples import AudioClipSample, VideoClipSample
from crisscross.datasets.synth import SynthSpec, synthesize
from crisscross.models import create_backbone
from crisscross.trainers.features import extract_features
from crisscross.trainers.knn import knn_accuracy, knn_predict

CPU = torch.device("cpu")


def test_knn_votes_by_similarity():
    angles = torch.tensor([0.0, 0.1, -0.1, math.pi, math.pi + 0.1, math.pi - 0.1])
    train = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    test = torch.tensor([[1.0, 0.05], [-2.0, 0.0], [0.0, 1.0]])
    assert knn_predict(train, labels, test, k=3).tolist()[:2] == [0, 1]
    assert knn_accuracy(train, labels, test[:2], torch.tensor([0, 1]), k=3) == 1.0
    # k larger than the training set uses all of it; weights still favour the nearest class
    assert knn_predict(train, labels, test[:1], k=50).tolist() == [0]
    with pytest.raises(ValueError, match="at least one training feature"):
        knn_predict(train[:0], labels[:0], test)


@pytest.fixture(scope="module")
def ucf(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("f") / "u.parquet"
    rows = (
        build_manifest("ucf101", str(synthetic["ucf101"]), out=str(out))
        .manifest.usable()
        .to_pylist()
    )
    return [r for r in rows if r["fold1"] == "train"], [r for r in rows if r["fold1"] == "test"]


def test_features_of_a_backbone(ucf):
    train, _ = ucf
    backbone = create_backbone("r2plus1d_10", width=2).eval()
    sample = VideoClipSample(size=32, train=False, test_clips=3)
    features, labels = extract_features(
        backbone, train, sample, key="video", device=CPU, batch_clips=4
    )
    assert features.shape == (len(train), 16) and torch.isfinite(features).all()
    assert labels.tolist() == [r["label"] for r in train]


@pytest.fixture(scope="module")
def style(tmp_path_factory):
    """The "style" content, whose classes differ in colour and timbre: static features separate
    them, so extraction and kNN can be checked against a known answer. (The default "motion"
    content hides the class from such features on purpose.)"""
    base = tmp_path_factory.mktemp("style")
    roots = {}
    for name, seconds in (("ucf101", 4.0), ("esc50", 5.0)):
        spec = SynthSpec(classes=3, per_class=5, seconds=seconds, content="style")
        synthesize(name, base / name, spec)
        roots[name] = base / name
    return roots


def test_synthetic_video_classes_are_separable(style, tmp_path):
    rows = (
        build_manifest("ucf101", str(style["ucf101"]), out=str(tmp_path / "u.parquet"))
        .manifest.usable()
        .to_pylist()
    )
    train, test = (
        [r for r in rows if r["fold1"] == "train"],
        [r for r in rows if r["fold1"] == "test"],
    )
    mean_colour = lambda x: x.mean(dim=(2, 3, 4))  # noqa: E731  (B, 3, T, H, W) -> (B, 3)
    sample = VideoClipSample(size=32, train=False, test_clips=2)
    xtr, ytr = extract_features(mean_colour, train, sample, key="video", device=CPU)
    xte, yte = extract_features(mean_colour, test, sample, key="video", device=CPU)
    assert knn_accuracy(xtr, ytr, xte, yte, k=3) == 1.0


def test_synthetic_audio_classes_are_separable(style, tmp_path):
    rows = (
        build_manifest("esc50", str(style["esc50"]), out=str(tmp_path / "e.parquet"))
        .manifest.usable()
        .to_pylist()
    )
    train, test = [r for r in rows if r["fold"] != 1], [r for r in rows if r["fold"] == 1]
    spectrum = lambda x: x.mean(dim=(1, 3))  # noqa: E731  (B, 1, F, T) -> (B, F)
    sample = AudioClipSample(train=False, test_clips=2)
    xtr, ytr = extract_features(spectrum, train, sample, key="audio", device=CPU)
    xte, yte = extract_features(spectrum, test, sample, key="audio", device=CPU)
    assert knn_accuracy(xtr, ytr, xte, yte, k=3) == 1.0
