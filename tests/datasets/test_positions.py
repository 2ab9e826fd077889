"""Compact epochs: the epoch's order computed per worker share, and the data position a
checkpoint stores, against the whole-order bookkeeping they replace (every id listed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from crisscross.datasets.epochs import epoch_order, epoch_rows, epoch_rows_at
from crisscross.datasets.positions import DataPosition, ShardProgress


def _old_share(consumed: np.ndarray, total: int, *, rank: int, world: int) -> np.ndarray:
    """Today's rule spelt out: the order less the consumed ids, every world-th from rank."""
    return np.setdiff1d(np.arange(total), consumed)[rank::world]


def test_each_repeat_is_a_seeded_pass_over_all_rows():
    rows = epoch_rows_at(np.arange(30), rows=10, seed=4, epoch=1)
    for k in range(3):
        assert sorted(rows[k * 10 : (k + 1) * 10].tolist()) == list(range(10))
    assert rows[:10].tolist() != rows[10:20].tolist()  # each repeat its own permutation
    assert (epoch_rows_at(np.arange(30), rows=10, seed=4, epoch=1) == rows).all()
    assert (epoch_rows_at(np.arange(30), rows=10, seed=4, epoch=2) != rows).any()
    # a worker's share alone gives the same rows as the whole order at those positions
    share = np.arange(3, 30, 4)
    assert (epoch_rows_at(share, rows=10, seed=4, epoch=1) == rows[share]).all()


def test_a_share_of_the_table_is_the_whole_order_at_its_positions():
    table = pa.table({"path": [f"v{i}.mp4" for i in range(7)], "duration": [5.0] * 7})
    whole = epoch_order(table, seed=2, epoch=3, repeats=3)
    share = epoch_rows(table, np.arange(1, 21, 3), seed=2, epoch=3)
    assert share.equals(whole.take(pa.array(np.arange(1, 21, 3))))
    assert share.column("epoch").to_pylist() == [3] * 7


def test_from_ids_keeps_exactly_the_set_and_stays_small():
    ids = np.r_[np.arange(1000), 1003, 1500]
    ids = np.setdiff1d(ids, [10, 500])
    position = DataPosition.from_ids(ids[::-1])
    assert (position.ids() == np.sort(ids)).all()
    assert position.count == len(ids)
    assert (position.frontier, position.holes.tolist(), position.extras.tolist()) == (
        1000, [10, 500], [1003, 1500]
    )  # fmt: skip
    assert DataPosition.from_ids([]).count == 0
    assert DataPosition.from_ids([5, 6, 7]).ids().tolist() == [5, 6, 7]


@pytest.mark.parametrize("seed", range(20))
def test_shares_and_advances_match_the_listed_ids(seed):
    """Random resumes (world sizes changing between launches, skipped rows, out-of-order
    batches): every share and every advanced position is what listing the ids gives."""
    rng = np.random.default_rng(seed)
    total = int(rng.integers(1, 400))
    position, consumed = DataPosition(), np.zeros(0, np.int64)
    for _launch in range(4):
        world = int(rng.integers(1, 6))
        cursors, trained = [], []
        for rank in range(world):
            mine = position.share(total, rank=rank, world=world)
            assert (mine == _old_share(consumed, total, rank=rank, world=world)).all()
            shard = ShardProgress(mine)
            used = mine[rng.random(len(mine)) < 0.9][: int(rng.integers(0, len(mine) + 1))]
            shard.mark(rng.permutation(used))
            cursors.append(shard.cursor())
            trained.append(used)
        consumed = np.union1d(consumed, np.concatenate(trained))
        position = position.advanced(cursors, total=total)
        assert (position.ids() == consumed).all()
        assert position.remaining(total) == total - len(consumed)
        assert DataPosition.from_state(position.state()).ids().tolist() == consumed.tolist()


def test_two_million_rows_keep_a_position_of_a_few_numbers():
    """16 workers a third into a 2M-row epoch, 40 samples skipped: a few dozen numbers (the
    listed ids would be 667k int64, 5 MB)."""
    total, world, steps, per_worker = 2_000_000, 16, 1000, 42
    rng = np.random.default_rng(0)
    cursors = []
    for rank in range(world):
        mine = DataPosition().share(total, rank=rank, world=world)
        skipped = rng.choice(steps * per_worker, size=rank % 5, replace=False)
        used = np.setdiff1d(np.arange(steps * per_worker + len(skipped)), skipped)
        shard = ShardProgress(mine)
        shard.mark(mine[used])
        cursors.append(shard.cursor())
    position = DataPosition().advanced(cursors, total=total)
    assert position.count == world * steps * per_worker
    assert position.size < 100


def test_a_position_not_in_the_share_is_refused():
    shard = ShardProgress(np.array([1, 4, 7]))
    with pytest.raises(ValueError, match="not in this worker's share"):
        shard.mark(np.array([4, 5]))


def test_a_worker_holds_only_the_order_columns_in_one_chunk():
    from crisscross.datasets.epochs import epoch_table
    from crisscross.datasets.manifest import Manifest
    from crisscross.datasets.samples import ClipSpec

    part = pa.table({"path": ["a.mp4", "b.mp4"], "duration": [10.0, 1.0], "status": ["ok"] * 2,
                     "label_name": ["x", "y"]})  # fmt: skip
    manifest = Manifest(pa.concat_tables([part, part]), "audioset", "/data", [], 1.1)
    table = epoch_table(manifest, ClipSpec())
    assert table.column_names == ["path", "duration"]
    assert table.column("path").to_pylist() == ["a.mp4", "a.mp4"]  # b is too short
    assert table.column("path").num_chunks == 1
