"""The pretext step's device throughput, baseline against optimised, at several batch sizes.

In one run, for every per-device batch size: samples/s (the median of timed windows), seconds
per step and peak device memory of the same step on the same in-memory batch, run the reference
code's way (`BASELINE`) and ours (`OPTIMISED`); model FLOP utilisation from the step's FLOPs
(torch's FLOP counter, forward and backward) over the peak of a measured matmul (bf16 or fp32,
the faster). A batch size that does not fit is recorded as out of memory and larger ones are
skipped for that mode.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from crisscross.bench.train_steps import synthetic_batch
from crisscross.config import ExperimentConfig
from crisscross.trainers.builders import build_model
from crisscross.trainers.optim import build_optimizer, set_learning_rates
from crisscross.trainers.pretext_step import NonFiniteLossError, pretext_step, to_model_inputs
from crisscross.trainers.step_modes import BASELINE, StepMode, compiled, optimised, prepare

GOAL_RATIO = 2.0  # ours / baseline at the best batch size


@dataclass(frozen=True)
class StepBenchSpec:
    config: dict[str, Any]  # ExperimentConfig.model_dump(by_alias=True)
    batches: tuple[int, ...] = (32, 64, 128, 256)
    device: str = "cuda"
    steps: int = 10  # per timed window
    windows: int = 3  # each figure is the median window
    warmup: int = 5  # includes torch.compile's compilation in the optimised mode
    threads: int | None = None  # CPU only: torch threads
    compile: bool = True  # torch.compile in the optimised mode (minutes of compiling on a CPU)


def cpu_name() -> str:
    """ "cpu (<model name from /proc/cpuinfo>)" where Linux says, else "cpu"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(config: ExperimentConfig, batch: int) -> int:
    """FLOPs of one pretext step's forward and backward at `batch` (counted at batch 2 on CPU in
    fp32, scaled linearly: every layer's cost is proportional to the batch)."""
    torch.manual_seed(0)
    model = build_model(config)
    inputs = to_model_inputs(synthetic_batch(config, 2), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter:
        model(*inputs)["loss"].backward()
    return counter.get_total_flops() * batch // 2


def peak_matmul_flops(
    device: torch.device, *, size: int | None = None, dtype: torch.dtype = torch.bfloat16
) -> float:
    """FLOP/s of a large matmul in `dtype` on `device`, measured."""
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    repeats = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def peak_flops(device: torch.device) -> tuple[float, str]:
    """The denominator of MFU: the faster of a bf16 and an fp32 matmul measured on `device`
    (bf16 on any GPU with tensor cores; on a CPU without bf16 units fp32 is the faster, and a
    bf16 peak would put an fp32 step above 100 %)."""
    measured = {
        name: peak_matmul_flops(device, dtype=dtype)
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
    }
    name = max(measured, key=measured.get)
    return measured[name], name


def measure(spec: StepBenchSpec, mode: StepMode, batch: int) -> dict[str, Any]:
    """Samples/s, step time and peak memory of `mode` at `batch` (or {"oom": True})."""
    device = torch.device(spec.device)
    config = ExperimentConfig.model_validate(spec.config)
    torch.manual_seed(config.run.seed)
    module = prepare(build_model(config), mode, device)
    optimizer = build_optimizer(module, config.optim, fused=mode.fused_optimizer)
    model = compiled(module, mode)
    data = {k: v.to(device) for k, v in synthetic_batch(config, batch).items()}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> None:
        set_learning_rates(optimizer, i, optim=config.optim, steps_per_epoch=10**6)
        pretext_step(
            model,
            data,
            optimizer,
            step=i,
            device=device,
            bf16=mode.bf16,
            channels_last=mode.channels_last,
        )

    try:
        for i in range(spec.warmup):
            step(i)
        rates, done = [], spec.warmup
        for _ in range(spec.windows):
            _sync(device)
            start = time.perf_counter()
            for _ in range(spec.steps):
                step(done)
                done += 1
            _sync(device)
            rates.append(batch * spec.steps / (time.perf_counter() - start))
    except torch.OutOfMemoryError:
        return {"oom": True}
    except NonFiniteLossError as exc:  # a mode that breaks the numbers is reported, not timed
        return {"error": str(exc).split(";")[0]}
    finally:
        if mode.compile:
            torch._dynamo.reset()  # the next mode or batch compiles its own graph
    rate = statistics.median(rates)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "samples_per_s": rate,
        "step_s": batch / rate,
        "window_sps": rates,
        "peak_memory_gib": None if peak is None else peak / 2**30,
    }


def run_step_benchmark(spec: StepBenchSpec) -> dict[str, Any]:
    """Both modes at every batch size, the FLOP counts, the measured peak, MFU and the ratios."""
    device = torch.device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    config = ExperimentConfig.model_validate(spec.config)
    ours_mode = optimised(device) if spec.compile else replace(optimised(device), compile=False)
    peak, peak_dtype = peak_flops(device)
    rows, stopped = [], {BASELINE.name: False, ours_mode.name: False}
    for batch in spec.batches:
        flops = step_flops(config, batch)
        row: dict[str, Any] = {"batch": batch, "flops_per_step": flops}
        for mode in (BASELINE, ours_mode):
            result = {"oom": True} if stopped[mode.name] else measure(spec, mode, batch)
            stopped[mode.name] = bool(result.get("oom"))
            if "samples_per_s" in result:
                result["mfu"] = flops / result["step_s"] / peak
            row[mode.name] = result
        base, ours = row[BASELINE.name], row[ours_mode.name]
        if "samples_per_s" in base and "samples_per_s" in ours:
            row["ratio"] = ours["samples_per_s"] / base["samples_per_s"]
        rows.append(row)
    timed = [r for r in rows if "samples_per_s" in r[ours_mode.name]]
    best = max(timed, key=lambda r: r[ours_mode.name]["samples_per_s"], default=None)
    best_base = max(
        (r[BASELINE.name]["samples_per_s"] for r in rows if "samples_per_s" in r[BASELINE.name]),
        default=math.nan,
    )
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "modes": {m.name: m.describe() for m in (BASELINE, ours_mode)},
        "peak_matmul_tflops": peak / 1e12,
        "peak_matmul_dtype": peak_dtype,
        "shapes": {
            "video": [config.data.frames, config.data.crop_size, config.data.crop_size],
            "audio": list(synthetic_batch(config, 1)["a1"].shape[1:]),
            "video_backbone": f"{config.model.video_backbone} width {config.model.video_width}",
            "audio_backbone": f"{config.model.audio_backbone} width {config.model.audio_width}",
        },
        "rows": rows,
        "best_batch": best["batch"] if best else None,
        # ours at its best batch size against the baseline at its own best: the speed-up a user
        # gets, whichever batch each fits best
        "speedup": best[ours_mode.name]["samples_per_s"] / best_base if best else math.nan,
        "goal_speedup": GOAL_RATIO,
    }


def performance_markdown(results: dict[str, Any], command: str) -> str:
    """The table for docs/performance.md."""
    lines = [
        "| batch | baseline samples/s | ours samples/s | ratio | baseline step (ms) | "
        "ours step (ms) | baseline peak GiB | ours peak GiB | baseline MFU | ours MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(result: dict[str, Any], key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
        if result.get("oom"):
            return "OOM"
        if "error" in result:
            return "NaN"
        value = result.get(key)
        return "-" if value is None else fmt.format(value * scale)

    for row in results["rows"]:
        base, ours = row[BASELINE.name], row["ours"]
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
        lines.append(
            f"| {row['batch']} | {cell(base, 'samples_per_s')} | {cell(ours, 'samples_per_s')} | "
            f"{ratio} | {cell(base, 'step_s', 1e3)} | {cell(ours, 'step_s', 1e3)} | "
            f"{cell(base, 'peak_memory_gib', fmt='{:.2f}')} | "
            f"{cell(ours, 'peak_memory_gib', fmt='{:.2f}')} | "
            f"{cell(base, 'mfu', 100, '{:.1f}%')} | {cell(ours, 'mfu', 100, '{:.1f}%')} |"
        )
    if results["best_batch"] is None:
        verdict = "Speed-up: none to state, ours gave no timed result at any batch size."
    else:
        verdict = (
            f"Speed-up (ours at its best batch {results['best_batch']} over the baseline at its "
            f"best): {results['speedup']:.2f}x (goal >= {results['goal_speedup']:.0f}x)."
        )
    return "\n".join(
        [
            f"Device: {results['device']}, torch {results['torch']}; MFU over the measured "
            f"{results['peak_matmul_dtype']} matmul peak of {results['peak_matmul_tflops']:.3g} "
            "TFLOP/s.",
            f"Baseline: {results['modes'][BASELINE.name]}. Ours: {results['modes']['ours']}.",
            f"Command: `{command}`",
            "",
            *lines,
            "",
            verdict,
        ]
    )


def section_markers(device_name: str, kind: str = "bench train --device") -> tuple[str, str]:
    """The comment lines around one device's table of one benchmark in docs/performance.md."""
    return f"<!-- {kind}: {device_name} -->", f"<!-- end {kind}: {device_name} -->"


def write_markdown_section(
    path: Path,
    device_name: str,
    table: str,
    *,
    kind: str = "bench train --device",
    heading: str = "{device}",
) -> None:
    """Put `table` between the markers of this device and benchmark `kind` in `path`: replaced
    where they are, appended under `heading` (a format of {device}) where they are not; the rest
    of the file is kept as written."""
    start, end = section_markers(device_name, kind)
    block = f"{start}\n{table.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text.split(start, 1)[1]:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        title = "## " + heading.format(device=device_name)
        text = (text.rstrip() + "\n\n" if text.strip() else "") + f"{title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
