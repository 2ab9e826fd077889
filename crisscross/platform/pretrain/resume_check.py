"""What a run folder lets resume: its run, on the config and the data it started with.

The run folder keeps the epoch's rows and their digest; a resume on other rows is refused with
what changed, since its checkpoint's data position would point at other videos. A damaged Ray
snapshot is refused with its recovery (move it aside); without a snapshot, a local run folder's
newest whole checkpoint is where the launch resumes (`resume_point`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crisscross.config import ExperimentConfig
from crisscross.config.schema import runs_how
from crisscross.datasets.epoch_identity import row_changes, rows_digest
from crisscross.datasets.fs import atomic_output, join, resolve
from crisscross.platform.pretrain.run_record import RecordError, read_record
from crisscross.platform.redact import redact_tree
from crisscross.platform.tracking import flatten
from crisscross.trainers.run_folder import PROGRESS_FILE, STATE_FILE, RunFolder, checkpoint_order

DATA_ROWS = "crisscross_data_rows.parquet"  # in the run folder: the rows the run started on


class ResumeRefusedError(ValueError):
    """The run folder cannot be resumed as asked; the message says why and what to do."""


def check_resume(
    config: ExperimentConfig,
    run_dir: str,
    rows: pa.Table | None = None,
    *,
    say: Callable[[str], None],
) -> dict[str, Any] | None:
    """The run folder's record, None for a new run; ResumeRefusedError when it is damaged, holds
    another config, or (given `rows`, `identity_rows`) an unfinished run on other rows."""
    try:
        record = read_record(run_dir)
    except RecordError as exc:
        raise ResumeRefusedError(str(exc)) from None
    if record is None:
        return None
    dumped = redact_tree(config.model_dump(by_alias=True, mode="json"))  # as the record holds it
    changed = _differences(redact_tree(record.get("config") or {}), dumped)
    if changed:
        raise ResumeRefusedError(
            f"{run_dir} holds run '{config.run.name}' started with another config "
            f"(differs at: {', '.join(changed[:8])}); resume it with its config, or start a "
            "new run with another run.name (or run.output_dir)"
        )
    if rows is not None and record.get("finished_step") is None:
        check_same_data(run_dir, record, rows, say=say)
    return record


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = flatten(old), flatten(new)
    keys = sorted(set(a) | set(b))
    # what may change on resume: the keys that say how a run runs (config.schema.HOW)
    return [k for k in keys if a.get(k) != b.get(k) and not runs_how(k)]


def record_data(run_dir: str, rows: pa.Table) -> dict[str, Any]:
    """Write `rows` (`identity_rows`) into the run folder; the run record's `data` entry."""
    with atomic_output(join(run_dir, DATA_ROWS)) as stream:
        pq.write_table(rows, stream)
    return {"digest": rows_digest(rows), "rows": rows.num_rows, "rows_file": DATA_ROWS}


def check_same_data(
    run_dir: str, record: dict[str, Any], rows: pa.Table, *, say: Callable[[str], None]
) -> None:
    """ResumeRefusedError when `rows` are not those the recorded run started on; a record
    written before crisscross kept them resumes unchecked, with a note."""
    saved = record.get("data")
    if not saved:
        say(
            f"note: the run record in {run_dir} holds no digest of its data (written by an older "
            "crisscross): resuming without checking that the data is the same"
        )
        return
    if saved.get("digest") == rows_digest(rows):
        return
    raise ResumeRefusedError(
        f"{run_dir} holds a run started on other data ({saved.get('rows')} usable clips then, "
        f"{rows.num_rows} now): "
        f"{_what_changed(run_dir, saved, rows)}. Its checkpoint's data position would point at "
        "other videos: put the data back as it was (or use the manifest it was started with, "
        "data.manifest), or start a new run on this data with another run.name"
    )


def _what_changed(run_dir: str, saved: dict[str, Any], rows: pa.Table) -> str:
    path = join(run_dir, saved.get("rows_file") or DATA_ROWS)
    fs, inner = resolve(path)
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        return f"which rows changed is unknown ({path} is missing)"
    try:
        old = pq.read_table(inner, filesystem=fs)
    except (OSError, pa.ArrowInvalid) as exc:
        return f"which rows changed is unknown ({path}: {exc})"
    return row_changes(old, rows).describe()


# Ray Train's own list of the run's checkpoints, in the run folder (Ray 2.60 writes it in place)
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"


def resume_point(run_dir: str) -> str:
    """Where a launch resumes when Ray's snapshot cannot say: "" (Ray's snapshot decides, or a
    new run), or the newest whole checkpoint of a local run folder that has checkpoints but no
    snapshot (one moved aside, below). ResumeRefusedError when the snapshot is damaged: Ray would
    fail deep inside its controller, at every launch."""
    fs, inner = resolve(join(run_dir, RAY_SNAPSHOT))
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        try:
            with fs.open_input_stream(inner) as stream:
                text = stream.read().decode("utf-8")
            if text.strip():
                json.loads(text)
                return ""
            reason = "it is empty"
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        where = join(run_dir, RAY_SNAPSHOT)
        then = (
            "the run then resumes from its newest whole checkpoint folder"
            if isinstance(fs, pafs.LocalFileSystem)
            else "on object storage the run then starts again from its first step"
        )
        raise ResumeRefusedError(
            f"{where} (Ray Train's list of this run's checkpoints) cannot be read "
            f"({reason.splitlines()[0][:200]}): a crash or a full disk while Ray wrote it. "
            f"Move it aside (mv {where} {where}.broken) and launch again: {then}"
        )
    if isinstance(fs, pafs.LocalFileSystem):
        for folder in reversed(RunFolder(Path(inner).parent).checkpoints()):
            if _whole(folder):
                return str(folder)
    return ""


def _whole(folder: Path) -> bool:
    """Whether a checkpoint folder was written to the end: its progress file, and a state file
    whose zip index (at the end of the file) reads; Ray copies a checkpoint file by file."""
    if not (folder / PROGRESS_FILE).is_file():
        return False
    try:
        with zipfile.ZipFile(folder / STATE_FILE) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def unlisted_checkpoints(run_dir: str) -> list[Path]:
    """Checkpoint folders of a local run folder that Ray's snapshot does not list: written by a
    launch that crashed before Ray registered them, or resumed from without a snapshot, so Ray
    never prunes them (`run.keep_checkpoints`). [] without a readable snapshot, or off this
    machine's disk."""
    fs, inner = resolve(join(run_dir, RAY_SNAPSHOT))
    if not isinstance(fs, pafs.LocalFileSystem):
        return []
    try:
        results = json.loads(Path(inner).read_text())["checkpoint_results"]
        listed = {r["checkpoint_dir_name"] for r in results}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    folder = Path(inner).parent
    return sorted(
        path
        for path in folder.glob("checkpoint_*")
        if path.is_dir() and checkpoint_order(path.name) is not None and path.name not in listed
    )
