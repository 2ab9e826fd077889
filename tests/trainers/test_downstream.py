"""Downstream pieces against hand computation: clip averaging, worker shares, the SVM's choice of C."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from crisscross.config import FinetuneExperiment
from crisscross.datasets.crops import RepeatedDraws
from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.samples import AudioClipSample, VideoClipSample
from crisscross.datasets.transforms import normalize
from crisscross.models import Classifier, create_backbone, svm_features
from crisscross.trainers.clips import average_clip_softmax, epoch_clips, worker_share
from crisscross.trainers.finetune import FinetuneJob, build_classifier
from crisscross.trainers.finetune import test_videos as run_test_videos
from crisscross.trainers.svm import SvmSettings, averaged_scores, fit_svm_fold


def test_average_clip_softmax_is_the_mean_of_each_clips_softmax():
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 3.0], [0.0, 3.0]]])  # (V=2, C=2, K=2)
    e2 = np.exp(2.0) / (np.exp(2.0) + 1.0)
    e3 = np.exp(3.0) / (np.exp(3.0) + 1.0)
    expected = torch.tensor([[(0.5 + e2) / 2, (0.5 + 1 - e2) / 2], [1 - e3, e3]])
    assert torch.allclose(average_clip_softmax(logits), expected.float(), atol=1e-6)


def test_testing_averages_the_softmax_of_ten_evenly_spaced_clips(synthetic):
    manifest = build_manifest("ucf101", str(synthetic["ucf101"])).manifest
    rows = manifest.usable().select(["path", "label", "duration"]).to_pylist()[:3]
    sample = VideoClipSample(frames=4, size=32, train=False, test_clips=10)
    model = Classifier(create_backbone("r2plus1d_18", width=4), classes=3).eval()
    probs, failed = run_test_videos(model, rows, sample, classes=3, device=torch.device("cpu"))
    assert failed == 0 and probs.shape == (3, 3)
    for i, row in enumerate(rows):
        clips = torch.from_numpy(sample(row, epoch=0, index=i)["video"])
        assert clips.shape[0] == 10
        assert len({c.float().mean().item() for c in clips}) > 1  # ten different windows
        with torch.no_grad():
            per_clip = model(normalize(clips)).softmax(dim=1)  # (10, K)
        assert torch.allclose(probs[i], per_clip.mean(dim=0), atol=1e-5)
        assert not torch.allclose(probs[i], per_clip[0], atol=1e-4)  # not a single clip's


def test_each_video_appears_clips_per_video_times_an_epoch():
    order = epoch_clips(7, clips_per_video=10, seed=3, epoch=2)
    assert np.bincount(order).tolist() == [10] * 7
    assert not np.array_equal(order, epoch_clips(7, clips_per_video=10, seed=3, epoch=3))


def test_worker_shares_split_every_global_batch_and_drop_the_partial_one():
    order = np.arange(70)
    shares = [worker_share(order, global_batch=16, rank=r, world=4) for r in range(4)]
    assert {steps for _, steps in shares} == {4}  # 70 // 16
    positions = np.concatenate([p for p, _ in shares])
    assert sorted(positions.tolist()) == list(range(64))
    assert shares[1][0][:4].tolist() == [4, 5, 6, 7]  # rank 1: the 2nd quarter of batch 0
    assert shares[1][0][4:8].tolist() == [20, 21, 22, 23]


def test_classifier_max_pools_and_starts_from_an_orthogonal_head():
    backbone = create_backbone("resnet18_audio", width=4)
    model = Classifier(backbone, classes=5)
    assert backbone.pool == "max"
    w = model.head.weight  # (5, 32): orthogonal rows
    assert torch.allclose(w @ w.T, torch.eye(5), atol=1e-5)
    x = torch.randn(2, 1, 40, 101)
    with torch.no_grad():
        expected = model.head(backbone.forward_features(x).flatten(2).amax(dim=2))
        assert torch.allclose(model(x), expected)


def test_head_dropout_sits_before_the_linear_layer_and_acts_only_in_training():
    torch.manual_seed(0)
    backbone = create_backbone("resnet18_audio", width=4)  # 32 pooled features
    model = Classifier(backbone, classes=5, dropout=0.5)
    assert [type(m) for m in model.children()] == [type(backbone), nn.Dropout, nn.Linear]
    seen: dict[str, torch.Tensor] = {}
    backbone.register_forward_hook(lambda m, i, out: seen.update(pooled=out))
    model.head.register_forward_hook(lambda m, i, out: seen.update(head_in=i[0]))
    x = torch.randn(8, 1, 40, 101)
    with torch.no_grad():
        model.train()
        model(x)
        pooled, head_in = seen["pooled"], seen["head_in"]
        dropped = (head_in == 0) & (pooled != 0)
        assert 0.3 < dropped.float().mean() < 0.7  # about half of 256 features zeroed
        kept = ~dropped
        assert torch.allclose(head_in[kept], 2 * pooled[kept])  # survivors scaled by 1 / (1 - p)
        model.eval()
        out = model(x)
        assert torch.equal(seen["head_in"], seen["pooled"])  # no dropout at test time
        assert torch.allclose(out, model(x))


def test_no_dropout_layer_at_zero_and_the_same_state_dict_keys_either_way():
    plain = Classifier(create_backbone("r2plus1d_18", width=4), classes=3)
    assert plain.dropout is None
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    dropped = Classifier(create_backbone("r2plus1d_18", width=4), classes=3, dropout=0.1)
    assert dropped.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        Classifier(create_backbone("r2plus1d_18", width=4), classes=3, dropout=1.0)


def test_build_classifier_takes_the_configs_dropout():
    state = create_backbone("r2plus1d_18", width=4).state_dict()
    for p in (0.0, 0.5):
        config = FinetuneExperiment.model_validate({"model": {"dropout": p}})
        job = FinetuneJob(config.model_dump(), 1, [], [], 3, state, "vid_tiny.pth.tar")
        model = build_classifier(job, config)
        assert (model.dropout.p if model.dropout is not None else 0.0) == p
        assert torch.equal(model.backbone.state_dict()["conv1.0.weight"], state["conv1.0.weight"])


def test_svm_features_are_4608_wide_for_a_2_second_clip_at_paper_width():
    backbone = create_backbone("resnet18_audio", width=64).eval()
    with torch.no_grad():
        out = svm_features(backbone, torch.randn(2, 1, 80, 201))
        conv5 = backbone.forward_features(torch.randn(1, 1, 80, 201))
    assert out.shape == (2, 4608)
    assert conv5.shape == (1, 512, 3, 7)  # max pool (1, 3) stride (1, 2): 7 -> 3 frames


def test_reference_svm_features_are_l2_normalised_over_time():
    backbone = create_backbone("resnet18_audio", width=64).eval()
    x = torch.randn(2, 1, 80, 201)
    with torch.no_grad():
        plain = svm_features(backbone, x).view(2, 512, 3, 3)
        ours = svm_features(backbone, x, l2_time=True).view(2, 512, 3, 3)
    alive = plain.norm(dim=-1) > 0  # a row of ReLU zeros stays zero
    assert alive.float().mean() > 0.5
    assert torch.allclose(ours.norm(dim=-1)[alive], torch.ones(int(alive.sum())), atol=1e-5)
    assert (ours.norm(dim=-1)[~alive] == 0).all()
    assert torch.allclose(ours * plain.norm(dim=-1, keepdim=True), plain, atol=1e-5)


def test_reference_test_clips_are_the_first_two_seconds(synthetic):
    """The reference trims each file to 2 s and takes 10 windows of 200 frames at the integer
    parts of linspace(0, 1, 10): nine at frame 0, one at frame 1."""
    from crisscross.datasets.decode import read_clip
    from crisscross.datasets.transforms import log_mel

    manifest = build_manifest("esc50", str(synthetic["esc50"])).manifest
    row = manifest.usable().to_pylist()[0]
    sample = AudioClipSample(n_mels=40, train=False, protocol="reference")
    clips = sample(row, epoch=0, index=0)["audio"]
    assert clips.shape == (10, 1, 40, 200)
    _, (wave,) = read_clip(row["path"], audio_spans=[(0.0, 2.0)], sample_rate=16000)
    whole = log_mel(torch.from_numpy(wave), n_mels=40).numpy()  # (1, 40, 201)
    for k in range(9):
        assert np.array_equal(clips[k], whole[..., 0:200])
    assert np.array_equal(clips[9], whole[..., 1:201])


def test_reference_ties_go_to_the_larger_c():
    crops, labels = _blobs(np.random.default_rng(3), 6, spread=0.1)  # every C is perfect
    common = {
        "train_crops": crops,
        "train_clips": crops,
        "train_labels": labels,
        "train_groups": np.tile(np.arange(2), 9),
        "test_clips": crops,
        "test_labels": labels,
    }
    grid = (1e-2, 1e-1, 1.0)
    clean = fit_svm_fold(**common, settings=SvmSettings(grid=grid, select="test"))
    ref = fit_svm_fold(**common, settings=SvmSettings(grid=grid, select="test", ties="larger"))
    assert set(clean.scores.values()) == {1.0}
    assert (clean.c, ref.c) == (1e-2, 1.0)


def test_repeated_draws_differ_and_repeat(synthetic):
    manifest = build_manifest("esc50", str(synthetic["esc50"])).manifest
    row = manifest.usable().to_pylist()[0]
    draws = RepeatedDraws(AudioClipSample(n_mels=40, train=True), times=3, key="audio")
    first = draws(row, epoch=0, index=0)["audio"]
    assert first.shape[0] == 3
    assert not np.allclose(first[0], first[1])
    assert np.array_equal(first, draws(row, epoch=0, index=0)["audio"])


def _blobs(rng, n_per_class, classes=3, clips=4, dim=6, spread=1.0):
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(0, 3, (classes, dim))
    x = centres[labels][:, None, :] + rng.normal(0, spread, (len(labels), clips, dim))
    return x.astype(np.float32), labels


def test_c_is_chosen_on_the_training_folds_without_reading_the_test_data():
    rng = np.random.default_rng(0)
    crops, labels = _blobs(rng, 12, spread=2.5)
    clips, _ = _blobs(np.random.default_rng(0), 12, spread=2.5)
    groups = np.tile(np.arange(4), 9)
    test_clips, test_labels = _blobs(rng, 4)
    settings = SvmSettings(grid=(1e-4, 1e-2, 1.0), select="cv")
    common = {
        "train_crops": crops,
        "train_clips": clips,
        "train_labels": labels,
        "train_groups": groups,
        "settings": settings,
    }
    fit = fit_svm_fold(test_clips=test_clips, test_labels=test_labels, **common)
    garbage = fit_svm_fold(
        test_clips=rng.normal(0, 50, test_clips.shape).astype(np.float32),
        test_labels=np.zeros_like(test_labels),
        **common,
    )
    assert fit.c == garbage.c and fit.scores == garbage.scores  # the test fold played no part
    assert set(fit.scores) == {1e-4, 1e-2, 1.0}
    assert fit.predicted.shape == test_labels.shape
    # choosing on the test fold is possible, and then the test data does decide
    on_test = SvmSettings(grid=(1e-4, 1e-2, 1.0), select="test")
    chosen = fit_svm_fold(
        test_clips=test_clips, test_labels=test_labels, **common | {"settings": on_test}
    )
    flipped = fit_svm_fold(
        test_clips=test_clips, test_labels=(test_labels + 1) % 3, **common | {"settings": on_test}
    )
    assert chosen.scores != flipped.scores


def test_cv_needs_two_training_folds():
    crops, labels = _blobs(np.random.default_rng(1), 4)
    with pytest.raises(ValueError, match="at least 2 training folds"):
        fit_svm_fold(
            train_crops=crops,
            train_clips=crops,
            train_labels=labels,
            train_groups=np.zeros(len(labels)),
            test_clips=crops,
            test_labels=labels,
            settings=SvmSettings(),
        )


@pytest.mark.parametrize("classes", [2, 3])
def test_test_decision_values_are_averaged_over_clips(classes):
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(2)
    x, y = _blobs(rng, 10, classes=classes)
    model = LinearSVC(C=1.0).fit(x.reshape(-1, x.shape[-1]), np.repeat(y, x.shape[1]))
    scores = averaged_scores(model, x[:3])
    by_hand = np.stack([model.decision_function(x[i]) for i in range(3)]).mean(axis=1)
    if classes == 2:
        by_hand = np.stack([-by_hand, by_hand], axis=1)
    assert np.allclose(scores, by_hand)


def test_fits_that_stop_at_max_iter_are_counted_not_warned_one_by_one():
    crops, labels = _blobs(np.random.default_rng(4), 12, spread=2.5)
    common = {
        "train_crops": crops,
        "train_clips": crops,
        "train_labels": labels,
        "train_groups": np.tile(np.arange(4), 9),
        "test_clips": crops,
        "test_labels": labels,
    }
    grid = (1e-2, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # none may reach the console
        stopped = fit_svm_fold(**common, settings=SvmSettings(grid=grid, max_iter=1))
        converged = fit_svm_fold(**common, settings=SvmSettings(grid=grid, max_iter=100_000))
    assert stopped.fits == converged.fits == len(grid) * 4 + 1  # 4 held-out folds per C, final
    assert stopped.unconverged == stopped.fits
    assert converged.unconverged == 0
