"""What a run folder lets resume: records without a data digest, and a lost rows file."""

from __future__ import annotations

import pyarrow as pa
import pytest

from crisscross.config import load_config
from crisscross.platform.pretrain.resume_check import (
    DATA_ROWS,
    ResumeRefusedError,
    check_resume,
    record_data,
)
from crisscross.platform.pretrain.run_record import write_record
from crisscross.platform.redact import redact_tree
from tests.conftest import REPO

QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"
ROWS = pa.table({"path": ["/d/a.mp4", "/d/b.mp4"], "size_bytes": [1, 2], "duration": [4.0, 4.0]})


def started(tmp_path, **record):
    config = load_config(QUICKSTART, {"run.name": "r", "run.output_dir": str(tmp_path)})
    dumped = redact_tree(config.model_dump(by_alias=True, mode="json"))
    write_record(str(tmp_path / "r"), {"mlflow_run_id": "m1", "config": dumped} | record)
    return config, str(tmp_path / "r")


def test_a_record_from_before_the_digest_resumes_with_a_note(tmp_path):
    config, run_dir = started(tmp_path)
    said: list[str] = []
    record = check_resume(config, run_dir, ROWS, say=said.append)
    assert record["mlflow_run_id"] == "m1"
    assert said == [
        f"note: the run record in {run_dir} holds no digest of its data (written by an older "
        "crisscross): resuming without checking that the data is the same"
    ]


def test_the_same_rows_resume_and_other_rows_are_refused_even_without_the_rows_file(tmp_path):
    (tmp_path / "r").mkdir()
    data = record_data(str(tmp_path / "r"), ROWS)
    config, run_dir = started(tmp_path, data=data)
    assert check_resume(config, run_dir, ROWS, say=pytest.fail)["data"] == data
    (tmp_path / "r" / DATA_ROWS).unlink()
    with pytest.raises(ResumeRefusedError, match=r"\(2 usable clips then, 1 now\): which rows"):
        check_resume(config, run_dir, ROWS.slice(0, 1), say=pytest.fail)


def test_a_finished_run_is_not_checked(tmp_path):
    config, run_dir = started(tmp_path, data={"digest": "other", "rows": 9}, finished_step=3)
    assert check_resume(config, run_dir, ROWS, say=pytest.fail)["finished_step"] == 3


def test_the_resume_point_reads_rays_snapshot_or_the_newest_whole_checkpoint(tmp_path):
    """Ray's snapshot decides when it is whole; a damaged one is refused with its recovery; with
    none, the newest checkpoint folder that holds its state (by step, not by name)."""
    import torch

    from crisscross.platform.pretrain.resume_check import RAY_SNAPSHOT, resume_point
    from crisscross.trainers.run_folder import PROGRESS_FILE, STATE_FILE

    run = tmp_path / "r"
    run.mkdir()
    assert resume_point(str(run)) == ""  # a new run
    for name in ("checkpoint_epoch0001_step000000010", "checkpoint_step000000015"):
        (run / name).mkdir()
        torch.save({"step": 1}, run / name / STATE_FILE)
        (run / name / PROGRESS_FILE).write_text("{}")
    assert resume_point(str(run)) == str(run / "checkpoint_step000000015")
    cut = run / "checkpoint_step000000020"  # Ray was copying it: its state file cut short
    cut.mkdir()
    whole = (run / "checkpoint_step000000015" / STATE_FILE).read_bytes()
    (cut / STATE_FILE).write_bytes(whole[: len(whole) // 2])
    (cut / PROGRESS_FILE).write_text("{}")
    assert resume_point(str(run)) == str(run / "checkpoint_step000000015")
    (run / "checkpoint_step000000030").mkdir()  # no state file yet
    assert resume_point(str(run)) == str(run / "checkpoint_step000000015")
    (run / RAY_SNAPSHOT).write_text('{"checkpoint_results": []}')
    assert resume_point(str(run)) == ""
    for broken, reason in (("", "it is empty"), ('{"checkpoint_res', "JSONDecodeError: ")):
        (run / RAY_SNAPSHOT).write_text(broken)
        with pytest.raises(ResumeRefusedError, match=f"cannot be read \\({reason}"):
            resume_point(str(run))


def test_checkpoint_folders_rays_snapshot_does_not_list_are_the_leftovers(tmp_path):
    """Left by a launch that crashed before Ray registered them: Ray never prunes them, so the
    finished run removes them (run.keep_checkpoints)."""
    import json

    from crisscross.platform.pretrain.resume_check import RAY_SNAPSHOT, unlisted_checkpoints

    run = tmp_path / "r"
    for name in ("checkpoint_step000000002", "checkpoint_step000000003", "best", "other"):
        (run / name).mkdir(parents=True)
    assert unlisted_checkpoints(str(run)) == []  # no snapshot: nothing is known to be left over
    listed = {"checkpoint_results": [{"checkpoint_dir_name": "checkpoint_step000000003"}]}
    (run / RAY_SNAPSHOT).write_text(json.dumps(listed))
    assert unlisted_checkpoints(str(run)) == [run / "checkpoint_step000000002"]
    (run / RAY_SNAPSHOT).write_text('{"checkpoint_results": 3}')  # a format we do not know
    assert unlisted_checkpoints(str(run)) == []
