"""The data benchmark runs every reader in one run and reports consistent figures."""

from __future__ import annotations

import json

from crisscross.bench.data import GOALS, DataBenchSpec, report, run_data_benchmark, write_json

READERS = (
    "decode_limit",
    "decode_convert",
    "sample_fn",
    "ray_data",
    "dataloader",
    "naive",
    "prepared",
    "prepared_frames",
    "sample_fn_augment_on_decode",
    "device_augment_cpu",
)


def test_tiny_benchmark_end_to_end(local_ray, tmp_path):
    spec = DataBenchSpec(
        clips=2,
        seconds=4.0,
        width=170,
        height=128,
        samples=4,
        naive_samples=2,
        workers=1,
        batch_size=2,
    )
    results = run_data_benchmark(spec, tmp_path / "work")
    assert all(results[name] > 0 for name in READERS)
    ratios = results["ratios"]
    assert ratios["sample_vs_limit"] == results["sample_fn"] / results["decode_limit"]
    assert ratios["ray_vs_dataloader"] == results["ray_data"] / results["dataloader"]
    assert ratios["sample_vs_naive"] == results["sample_fn"] / results["naive"]
    assert ratios["prepared_vs_raw"] == results["prepared"] / results["sample_fn"]
    assert ratios["prepared_frames_vs_raw"] == results["prepared_frames"] / results["sample_fn"]
    assert 100 < results["peak_rss_mib_per_worker"] < 4096
    write_json(results, tmp_path / "data.json")
    saved = json.loads((tmp_path / "data.json").read_text())
    assert set(READERS) | {"ratios", "peak_rss_mib_per_worker"} <= set(saved)
    table = report(results)
    for name, goal in GOALS.items():
        assert any(line.startswith(name) and f"{goal:.1f}" in line for line in table.splitlines())
