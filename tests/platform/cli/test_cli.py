"""The `crisscross config` commands, and every bad-input case as a user meets it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

QUICKSTART = str(REPO / "experiments/pretext/quickstart.yaml")

BAD = {
    "unknown_key": (
        "loss:\n  w_sync: 1\n  w_snyc: 2\n",
        "loss.w_snyc: unknown key (did you mean 'w_sync'?)",
    ),
    "unknown_section": (
        "solver:\n  lr: 1\n",
        "solver: unknown key; valid keys at the top level: model, loss, data, augment, optim, run, "
        "tracking, monitor",
    ),
    "wrong_type": ("optim:\n  lr: fast\n", "optim.lr: Input should be a valid number (got 'fast')"),
    "negative_lr": ("optim:\n  lr: -0.1\n", "optim.lr: Input should be greater than 0 (got -0.1)"),
    "zero_batch": (
        "optim:\n  batch_size: 0\n",
        "optim.batch_size: Input should be greater than or equal to 1 (got 0)",
    ),
    "negative_weight": (
        "loss:\n  w_async: -1\n",
        "loss.w_async: Input should be greater than or equal to 0 (got -1)",
    ),
    "all_terms_off": (
        "loss:\n  intra: false\n  sync: false\n  async: false\n",
        "loss: every loss term is switched off",
    ),
    "yaml_syntax": ("optim:\n  lr: [1, 2\n", "YAML syntax error at line 3, column 1"),
    "not_a_mapping": ("- 1\n- 2\n", "the top level must be a mapping of sections, got a list"),
    "section_not_mapping": (
        "optim: 3\n",
        "optim: Input should be a valid dictionary or instance of OptimConfig",
    ),
}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("command", ["validate", "show"])
def test_bad_files_exit_2_with_file_key_and_reason(run_cli, tmp_path, case, command):
    text, expected = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    result = run_cli("config", command, str(path))
    assert result.exit_code == 2
    assert f"Error: {path}: " in result.stderr
    assert expected in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            ["optim.batch_size=0"],
            "--set optim.batch_size=0: optim.batch_size: Input should be greater than or equal to 1",
        ),
        (
            ["loss.w_sync=-1"],
            "--set loss.w_sync=-1: loss.w_sync: Input should be greater than or equal to 0",
        ),
        (["loss.nope=1"], "--set loss.nope=1: loss.nope: unknown key; valid keys under 'loss'"),
        (["optim.lr"], "--set optim.lr: expected KEY=VALUE"),
        (
            ["loss.intra=false", "loss.sync=false", "loss.async=false"],
            "loss: every loss term is switched off",
        ),
    ],
)
def test_bad_overrides_exit_2(run_cli, sets, expected):
    args = [arg for item in sets for arg in ("--set", item)]
    result = run_cli("config", "validate", QUICKSTART, *args)
    assert result.exit_code == 2
    assert expected in result.stderr


def test_missing_file(run_cli, tmp_path):
    result = run_cli("config", "validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "nope.yaml: no such file" in result.stderr


def test_validate_summarises(run_cli):
    result = run_cli("config", "validate", QUICKSTART, "--set", "loss.async=false")
    assert result.exit_code == 0
    assert result.stdout.strip() == (
        f"{QUICKSTART}: valid (video r2plus1d_18 width 8, audio resnet18_audio width 8; loss terms "
        "intra+sync; global batch 32 on 2 worker(s), 5 epochs)"
    )


def test_show_prints_the_resolved_config(run_cli):
    result = run_cli(
        "config", "show", QUICKSTART, "--set", "loss.w_sync=0.5", "--set", "optim.lr=1e-3"
    )
    assert result.exit_code == 0
    shown = yaml.safe_load(result.stdout)
    assert shown["loss"]["w_sync"] == 0.5 and shown["optim"]["lr"] == 1e-3
    assert shown["model"]["video_width"] == 8  # from the file
    assert shown["optim"]["weight_decay"] == 1e-4  # a default filled in
    assert shown["loss"]["async"] is True


def test_real_process_exit_status_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "crisscross", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"Error: {path}: optim.lr: Input should be greater than 0 (got -1)"
    )
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    "path", sorted((REPO / "experiments").rglob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_experiment_validates(run_cli, path):
    result = run_cli("config", "validate", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"{path}: valid (")
