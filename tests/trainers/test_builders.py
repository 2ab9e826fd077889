"""Building the model an experiment file describes; one paper-size training step."""

from __future__ import annotations

import torch

from crisscross.config import apply_overrides, load_config
from crisscross.trainers.builders import build_model, loss_weights
from tests.conftest import REPO
from tests.models.test_crisscross import batch


def test_quickstart_config_builds_the_tiny_model():
    config = load_config(REPO / "experiments/pretext/quickstart.yaml")
    model = build_model(config)
    assert model.video.embed_dim == 8 * config.model.video_width
    assert len(model.video_projector) == 3 * config.model.projector_layers - 1
    out = model(*batch(2, config.data.crop_size))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_paper_size_one_step():
    config = load_config(REPO / "experiments/pretext/kinetics_sound.yaml")
    model = build_model(config)
    optimizer = torch.optim.Adam(
        [{"params": params} for params in model.parameter_groups().values()], lr=1e-3
    )
    v1, v2 = torch.randn(2, 3, 8, 112, 112), torch.randn(2, 3, 8, 112, 112)
    a1, a2 = torch.randn(2, 1, 80, 201), torch.randn(2, 1, 80, 201)
    before = model.video.conv1[0].weight.detach().clone()
    out = model(v1, v2, a1, a2)
    out["loss"].backward()
    optimizer.step()
    assert torch.isfinite(out["loss"])
    assert not torch.equal(before, model.video.conv1[0].weight)
    assert model.video_projector[-2].out_features == 2048


def test_loss_section_maps_to_the_objective():
    config = apply_overrides(
        load_config(REPO / "experiments/pretext/quickstart.yaml"),
        {"loss.w_sync": 0.25, "loss.async": False},
    )
    weights = loss_weights(config)
    assert (weights.w_sync, weights.asynchronous, weights.intra) == (0.25, False, True)
    assert build_model(config).weights == weights


def test_data_section_maps_to_clip_spec_and_decode_resources():
    from crisscross.trainers.builders import clip_spec, decode_resources

    config = apply_overrides(
        load_config(REPO / "experiments/pretext/quickstart.yaml"),
        {
            "data.sampling": "far_apart",
            "data.short_side": 80,
            "data.decode_workers": 3,
            "data.decode_memory_mb": 512,
            "data.sample_time_limit": 12.5,
            "data.rows_per_task": 16,
        },
    )
    spec = clip_spec(config)
    assert (spec.sampling, spec.short_side, spec.crop_size, spec.frames) == ("far_apart", 80, 32, 8)
    assert spec.time_limit == 12.5
    resources = decode_resources(config)
    assert (resources.workers, resources.memory_mb, resources.cpus_per_worker) == (3, 512, 0.5)
    assert resources.rows_per_task == 16
    defaults = load_config(REPO / "experiments/pretext/quickstart.yaml")
    assert clip_spec(defaults).time_limit == 30.0  # a pretraining's samples are always limited
    assert decode_resources(defaults).rows_per_task is None  # sized by the share (task_rows)
