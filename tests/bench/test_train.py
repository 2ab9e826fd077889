"""`crisscross bench train`: Ray Train against bare PyTorch, same step, one run."""

from __future__ import annotations

import json


def test_bench_train_writes_both_rates_and_their_ratio(run_cli, local_ray, tmp_path):
    out = tmp_path / "bench.json"
    sets = ["data.crop_size=16", "data.frames=2", "data.n_mels=16", "model.video_width=2"]
    args = [a for s in sets for a in ("--set", s)]
    result = run_cli(
        "bench",
        "train",
        *args,
        "--batch",
        "4",
        "--steps",
        "2",
        "--windows",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["ray_train_sps"] > 0 and data["bare_torch_sps"] > 0
    assert abs(data["ratio"] - data["ray_train_sps"] / data["bare_torch_sps"]) < 1e-9
    assert len(data["bare_runs_sps"]) == 2  # before and after the Ray run
    assert (data["batch"], data["steps"], data["windows"], data["threads"]) == (4, 2, 3, 1)
    assert len(data["ray_window_sps"]) == 3
    assert "ratio" in result.output and "goal >= 0.9" in result.output
