"""The run folder's owner: checkpoint names, their order, latest and best."""

from __future__ import annotations

from crisscross.trainers.run_folder import (
    BEST_DIR,
    STATE_FILE,
    RunFolder,
    checkpoint_order,
    epoch_checkpoint,
    step_checkpoint,
)


def test_the_latest_checkpoint_is_the_highest_step_not_the_last_name(tmp_path):
    """checkpoint_step… sorts after checkpoint_epoch… by name; the step decides."""
    for name in (
        "checkpoint_epoch0001_step000000010",
        "checkpoint_step000000005",
        "checkpoint_epoch0002_step000000020",
        "checkpoint_step000000015",
        "checkpoint_step000000030",  # partial: no state file
    ):
        (tmp_path / name).mkdir()
        if not name.endswith("030"):
            (tmp_path / name / STATE_FILE).write_bytes(b"")
    assert RunFolder(tmp_path).latest().name == "checkpoint_epoch0002_step000000020"
    (tmp_path / "checkpoint_step000000020").mkdir()
    (tmp_path / "checkpoint_step000000020" / STATE_FILE).write_bytes(b"")
    assert RunFolder(tmp_path).latest().name == "checkpoint_epoch0002_step000000020"  # a tie
    (tmp_path / "checkpoint_step000000025").mkdir()
    (tmp_path / "checkpoint_step000000025" / STATE_FILE).write_bytes(b"")
    assert RunFolder(tmp_path).latest().name == "checkpoint_step000000025"
    assert RunFolder(tmp_path / "checkpoint_step000000005").latest() is None


def test_every_name_written_orders_by_step_then_epoch_end():
    assert step_checkpoint(7) == "checkpoint_step000000007"
    assert epoch_checkpoint(2, 20) == "checkpoint_epoch0002_step000000020"
    assert epoch_checkpoint(3) == "checkpoint_epoch0003"  # a fine-tuning fold's
    assert checkpoint_order(step_checkpoint(20)) < checkpoint_order(epoch_checkpoint(2, 20))
    assert checkpoint_order(epoch_checkpoint(2, 20)) < checkpoint_order(step_checkpoint(21))
    assert checkpoint_order(epoch_checkpoint(3)) < checkpoint_order(epoch_checkpoint(4))
    for foreign in ("checkpoint_", "checkpoint_latest", "best", "checkpoint_step12x"):
        assert checkpoint_order(foreign) is None


def test_fine_tuning_checkpoints_order_by_epoch_and_best_needs_its_state(tmp_path):
    for epoch in (9, 10, 2):
        (tmp_path / epoch_checkpoint(epoch)).mkdir()
        (tmp_path / epoch_checkpoint(epoch) / STATE_FILE).write_bytes(b"")
    folder = RunFolder(tmp_path)
    assert [p.name for p in folder.checkpoints()] == [epoch_checkpoint(e) for e in (2, 9, 10)]
    assert folder.best() is None and not folder.is_run()
    (tmp_path / BEST_DIR).mkdir()
    assert folder.best() is None  # a best/ being swapped in, not written yet
    (tmp_path / BEST_DIR / STATE_FILE).write_bytes(b"")
    assert folder.best() == tmp_path / BEST_DIR
