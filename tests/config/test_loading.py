"""Experiment configs: defaults, shipped files, YAML reading, overrides and their errors."""

from __future__ import annotations

import pydantic
import pytest

from crisscross.config import (
    KINDS,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    dump_config,
    guess_kind,
    load_config,
    parse_overrides,
)
from tests.conftest import REPO

SHIPPED = sorted((REPO / "experiments").rglob("*.yaml"))


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_paper_recipe():
    c = ExperimentConfig()
    assert (c.model.video_backbone, c.model.video_width, c.model.projector_layers) == (
        "r2plus1d_18",
        64,
        3,
    )
    assert (c.loss.w_video, c.loss.w_audio, c.loss.w_sync, c.loss.w_async) == (1.0, 1.0, 1.0, 1.0)
    assert (c.optim.lr, c.optim.final_lr, c.optim.predictor_lr) == (2e-4, 1e-4, 2e-3)
    assert (c.optim.batch_size, c.optim.warmup_epochs, c.optim.weight_decay) == (2048, 2, 1e-4)
    assert (c.data.frames, c.data.fps, c.data.crop_size, c.data.sampling) == (
        8,
        16,
        112,
        "overlapped",
    )


def test_every_section_documents_its_fields():
    for section in ExperimentConfig.model_fields:
        model = type(getattr(ExperimentConfig(), section))
        undocumented = [n for n, f in model.model_fields.items() if not f.description]
        assert not undocumented, f"{section}: {undocumented}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_experiments_validate_and_round_trip(path, tmp_path):
    schema = KINDS[guess_kind(path)]
    config = load_config(path, schema=schema)
    assert type(config) is schema
    again = load_config(write(tmp_path, dump_config(config)), schema=schema)
    assert again == config


def test_configs_are_frozen():
    config = ExperimentConfig()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.loss.w_sync = 2.0


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing set\n")) == ExperimentConfig()


def test_exponent_floats_and_async_alias(tmp_path):
    config = load_config(write(tmp_path, "optim:\n  lr: 3e-4\nloss:\n  async: false\n"))
    assert config.optim.lr == 3e-4 and config.loss.async_ is False


def test_duplicate_keys_are_rejected_with_lines(tmp_path):
    path = write(tmp_path, "loss:\n  w_sync: 1\n  w_sync: 2\n")
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml: YAML syntax error at line 3, column 3: duplicate key 'w_sync' \(first at line 2\)",
    ):
        load_config(path)


def test_errors_are_collected_one_line_each(tmp_path):
    path = write(tmp_path, "optim:\n  lr: -1\n  batch_size: 0\nloss:\n  w_sync: -2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert {line.split(": ")[1] for line in lines} == {
        "optim.lr",
        "optim.batch_size",
        "loss.w_sync",
    }


def test_strict_types(tmp_path):
    for text, key in [
        ("optim:\n  batch_size: '64'\n", "optim.batch_size"),
        ("loss:\n  intra: 1\n", "loss.intra"),
        ("optim:\n  epochs: 2.5\n", "optim.epochs"),
        ("loss:\n  w_sync: .inf\n", "loss.w_sync"),
    ]:
        with pytest.raises(ConfigError, match=rf": {key}: "):
            load_config(write(tmp_path, text))


def test_overrides_are_typed_and_revalidated():
    base = ExperimentConfig()
    overrides = parse_overrides(
        ["loss.w_sync=0.5", "loss.async=false", "optim.betas=[0.8, 0.9]", "optim.lr=1e-3"]
    )
    config = apply_overrides(base, overrides)
    assert (config.loss.w_sync, config.loss.async_, config.optim.betas, config.optim.lr) == (
        0.5,
        False,
        (0.8, 0.9),
        1e-3,
    )
    assert base.loss.w_sync == 1.0, "the original config is never mutated"


def test_tune_style_mapping_goes_through_the_same_path():
    config = apply_overrides(
        ExperimentConfig(), {"loss.w_async": 0.3, "data.sampling": "far_apart"}
    )
    assert config.loss.w_async == 0.3 and config.data.sampling == "far_apart"
    with pytest.raises(
        ConfigError,
        match=r"--set data\.sampling=sideways: data\.sampling: Input should be 'overlapped'",
    ):
        apply_overrides(ExperimentConfig(), {"data.sampling": "sideways"})


def test_override_errors_name_the_override():
    with pytest.raises(
        ConfigError,
        match=r"^--set loss\.w_snyc=1: loss\.w_snyc: unknown key \(did you mean 'w_sync'\?\); valid keys under 'loss': w_video, w_audio, w_sync, w_async, intra, sync, async$",
    ):
        apply_overrides(ExperimentConfig(), {"loss.w_snyc": 1})
    with pytest.raises(ConfigError, match=r"'loss\.w_sync' is a value, not a section"):
        apply_overrides(ExperimentConfig(), {"loss.w_sync.x": 1})
    with pytest.raises(
        ConfigError,
        match=r"^--set run\.workers=3: optim\.batch_size: global batch 2048 does not split evenly across 3 workers",
    ):
        apply_overrides(ExperimentConfig(), {"run.workers": 3})
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["loss.w_sync"])


def test_cross_field_checks():
    with pytest.raises(
        ConfigError,
        match=r"optim\.warmup_epochs: warmup_epochs \(200\.0\) is longer than epochs \(100\)",
    ):
        apply_overrides(ExperimentConfig(), {"optim.warmup_epochs": 200})
    with pytest.raises(ConfigError, match=r"loss: every enabled loss term has weight 0"):
        apply_overrides(
            ExperimentConfig(),
            {"loss.w_video": 0, "loss.w_audio": 0, "loss.sync": False, "loss.async": False},
        )
    with pytest.raises(
        ConfigError,
        match=r"model\.video_backbone: unknown video backbone 'resnet18_audio'; registered: r2plus1d_10",
    ):
        apply_overrides(ExperimentConfig(), {"model.video_backbone": "resnet18_audio"})


@pytest.mark.parametrize("dataset", ["kinetics_sound", "kinetics400", "audioset"])
def test_paper_recipes_are_at_paper_size(dataset):
    """REFERENCE.md sections 3-5: the released architecture and the optimisation recipe."""
    config = load_config(REPO / "experiments" / "pretext" / f"{dataset}.yaml")
    m, o, r = config.model, config.optim, config.run
    assert config.data.dataset == dataset
    assert (m.video_backbone, m.video_width, m.audio_backbone, m.audio_width) == (
        "r2plus1d_18",
        64,
        "resnet18_audio",
        64,
    )
    assert (m.projector_layers, m.projector_dim, m.predictor_hidden) == (3, 2048, 512)
    assert m.sync_batchnorm and r.use_gpu and r.precision == "bf16"
    assert (o.batch_size, o.lr, o.final_lr, o.predictor_lr, o.warmup_epochs) == (
        2048,
        2e-4,
        1e-4,
        2e-3,
        2,
    )
    assert (config.data.frames, config.data.crop_size, config.data.audio_seconds) == (8, 112, 2.0)


def test_evaluation_experiments_are_validated_by_their_own_schema(run_cli):
    path = REPO / "experiments" / "svm" / "esc50.yaml"
    result = run_cli("config", "validate", str(path))
    assert result.exit_code == 0 and "valid (svm experiment)" in result.output
    result = run_cli("config", "validate", str(path), "--set", "svm.c_grid=[]")
    assert result.exit_code == 2
    assert "--set svm.c_grid=[]: svm.c_grid: give at least one C value" in result.output
    result = run_cli("config", "show", str(path), "--kind", "pretext")
    assert result.exit_code == 2 and "svm: unknown key" in result.output


def test_one_marker_says_how_a_run_runs():
    """Resume and sweeps read the same HOW marker: a resumed run may change these keys, and a
    sweep refuses to search them (it also owns where trials write and on which data)."""
    from crisscross.config.schema import how_keys, runs_how
    from crisscross.platform.sweep.plan import _fixed

    keys = set(how_keys())
    assert {"run.workers", "run.compile", "data.root", "data.decode_workers", "tracking."} <= keys
    assert not keys & {"run.seed", "optim.lr", "data.sampling", "augment.blur_p", "run.name"}
    assert runs_how("monitor.every") and runs_how("tracking.uri") and not runs_how("loss.w_sync")
    for key in ("run.compile", "run.deterministic", "monitor.k", "run.name", "data.dataset"):
        assert _fixed(key), key
    assert not _fixed("loss.w_sync") and not _fixed("optim.lr")
