"""`crisscross bench cli`: how long the command line takes to start, beside `python -c pass`.

Each command runs in a fresh interpreter (as a user types it), the three interleaved so that a
busy machine slows them alike; the best of the runs is the figure (the least disturbed one),
the median beside it. Goals (issue 18, idle 2-core machine): `--help` under 0.5 s, `config
validate` under 1.5 s. A subprocess timer is written here because torch.utils.benchmark times
Python callables in-process, which would not include the interpreter's start and the imports.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

GOALS = {"crisscross --help": 0.5, "crisscross config validate": 1.5}


def cli_commands(experiment: Path) -> dict[str, list[str]]:
    entry = [sys.executable, "-m", "crisscross.cli"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "crisscross --help": [*entry, "--help"],
        "crisscross config validate": [*entry, "config", "validate", str(experiment)],
    }


def time_commands(commands: dict[str, list[str]], *, repeats: int) -> dict[str, list[float]]:
    """Seconds of each run of each command; a command that fails raises RuntimeError."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, argv in commands.items():
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            times[name].append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return times


def cli_table(times: dict[str, list[float]]) -> str:
    base = min(times["python -c pass"])
    lines = [
        "| command | best s | median s | best / python -c pass | goal |",
        "|---|---|---|---|---|",
    ]
    for name, runs in times.items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"< {goal} s: {'met' if min(runs) < goal else 'NOT met'}"
        lines.append(
            f"| {name} | {min(runs):.3f} | {statistics.median(runs):.3f} | "
            f"{min(runs) / base:.1f}x | {verdict} |"
        )
    return "\n".join(lines)
