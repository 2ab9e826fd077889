"""The run record, `crisscross_run.json` in a run folder: which MLflow run the folder belongs to.

Written whole or not at all (`atomic_write_text`), with credentials masked (it is read by people
and by resumption, never used to connect); an empty or damaged one is a RecordError naming it.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.fs as pafs

from crisscross.datasets.fs import atomic_write_text, join, resolve
from crisscross.platform.redact import redact_tree
from crisscross.trainers.run_folder import RUN_RECORD


class RecordError(ValueError):
    """A record file that is empty or damaged; the message names it and says what to do."""


def parse_record(raw: bytes, *, where: str, advice: str) -> dict[str, Any]:
    """The JSON object in `raw` (the file `where`), which must name its MLflow run; else
    RecordError saying what is wrong and then `advice`."""
    try:
        record = json.loads(raw)
        ours = isinstance(record, dict) and isinstance(record.get("mlflow_run_id"), str)
        problem = "" if ours else "no mlflow_run_id in it"
    except ValueError as exc:  # empty, cut short, not UTF-8
        problem = f"{type(exc).__name__}: {exc}" if raw.strip() else "an empty file"
    if problem:
        raise RecordError(f"{where}: damaged ({problem}); {advice}")
    return record


def read_record(run_dir: str) -> dict[str, Any] | None:
    """The record of the run folder `run_dir` (local or URI), None when it has none."""
    path = join(run_dir, RUN_RECORD)
    fs, inner = resolve(path)
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(inner) as stream:
        raw = stream.read()
    return parse_record(
        raw,
        where=path,
        advice="it ties the run folder to its MLflow run: delete the run folder to start the "
        "run again, or use another run.name",
    )


def write_record(run_dir: str, record: dict[str, Any]) -> None:
    """Replace the run folder's record with `record`, credentials masked."""
    text = json.dumps(redact_tree(record), indent=1, default=list)
    atomic_write_text(join(run_dir, RUN_RECORD), text)
