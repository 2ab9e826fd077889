"""`crisscross bench scale` on a small synthetic manifest: every step measured, the row counts
what the generated listing and facts make them, the data position small."""

from __future__ import annotations

import json

STEPS = ["list", "rows", "judge", "write", "read", "epoch order", "save", "resume", "dataset"]


def _share(positions: int, *, workers: int, per_worker: int) -> int:
    """Rank 0's rows: every workers-th position from the first, cut to whole batches."""
    return -(-positions // workers) // per_worker * per_worker


def test_bench_scale_measures_every_step_and_keeps_the_position_small(run_cli, tmp_path):
    out = tmp_path / "scale.json"
    result = run_cli(
        "bench", "scale", "--rows", "20000", "--rows-per-task", "16", "--json", str(out)
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    steps = data["steps"]
    assert list(steps) == STEPS
    for name, step in steps.items():
        assert 0 < step["seconds"] < 60, name
        assert 0 <= step["peak_mib"] < 2048, name
    # 17,000 of the 20,000 listed videos on disk; of those, the generated facts make 1 in 200
    # unreadable, 1 in 100 too short and 1 in 300 silent
    usable = sum(1 for i in range(17_000) if i % 200 != 3 and i % 100 != 7 and i % 300 != 11)
    assert steps["read"]["usable_rows"] == usable
    assert data["positions"] == 5 * usable
    per_worker = 2048 // 16
    assert steps["epoch order"]["rows"] == _share(5 * usable, workers=16, per_worker=per_worker)
    left = data["positions"] - steps["save"]["trained_rows"]
    assert 0.35 < left / data["positions"] < 0.45  # 60 % trained, a few rows skipped
    assert steps["resume"]["rows"] == _share(left, workers=16, per_worker=per_worker)
    size = steps["save"]["position_bytes"]
    assert size < data["goals"]["position_bytes"]["goal"]
    assert size * 10 < steps["save"]["listed_ids_bytes"]
    assert data["goals"]["worker_mib"]["worst"] == max(
        steps[s]["peak_mib"] for s in ("epoch order", "save", "resume")
    )
    dataset = steps["dataset"]  # rank 0's epoch-0 rows as its pretraining streams them
    assert dataset["rows"] == steps["epoch order"]["rows"]
    assert dataset["rows_per_task"] == 16  # --rows-per-task
    assert dataset["blocks"] == -(-dataset["rows"] // 16)
    assert dataset["streamed_blocks"] == min(400, dataset["blocks"])
    assert dataset["streamed_rows"] == min(400 * 16, dataset["rows"])
    assert dataset["ms_per_block"] > 0
    assert "| epoch order (per worker) |" in result.output
    assert "| dataset (per worker) |" in result.output
    assert "checkpoint data position:" in result.output
