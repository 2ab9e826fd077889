"""Every shipped fine-tuning recipe against the reference's values, per pretraining set
(REFERENCE.md section 6; the reference's configs/downstream/<set>/<pretraining>/full_ft_*_fold*.yaml).
"""

from __future__ import annotations

import pytest

from crisscross.config import KINDS, ConfigError, FinetuneExperiment, guess_kind, load_config
from tests.conftest import REPO

RECIPES = REPO / "experiments" / "finetune"

# (downstream set, frames) -> (batch, lr, gamma, milestones, dropout), written from the reference's
# files, not from ours. Kinetics-Sound and Kinetics-400 share every value.
REFERENCE = {
    "kinetics": {
        ("ucf101", 8): (64, 5e-4, 0.3, (6, 10, 14), 0.0),
        ("ucf101", 32): (32, 7e-5, 0.3, (8, 12, 16), 0.0),
        ("hmdb51", 8): (64, 5e-4, 0.1, (6, 10, 14), 0.0),
        ("hmdb51", 32): (32, 1e-4, 0.3, (8, 12, 16), 0.0),
    },
    "audioset": {
        ("ucf101", 8): (64, 7e-5, 0.1, (8, 12, 16), 0.1),
        ("ucf101", 32): (32, 7e-5, 0.3, (8, 12, 16), 0.0),
        ("hmdb51", 8): (64, 1e-4, 0.1, (8, 12, 16), 0.5),
        ("hmdb51", 32): (32, 1e-4, 0.1, (6, 10, 14), 0.5),
    },
}
# where each pretraining set's recipes live under experiments/finetune/
FOLDER = {"kinetics": "", "audioset": "audioset/"}
# shipped fine-tune files that are not paper recipes
NOT_PAPER = {"quickstart_ucf101.yaml"}

EXPECTED = {
    f"{FOLDER[pretraining]}{dataset}_{frames}f.yaml": (dataset, frames, values)
    for pretraining, table in REFERENCE.items()
    for (dataset, frames), values in table.items()
}


def test_every_recipe_file_is_in_the_table_and_every_table_entry_is_shipped():
    shipped = {p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob("*.yaml")}
    assert sorted(shipped - NOT_PAPER) == sorted(EXPECTED)
    assert shipped >= NOT_PAPER
    assert len(EXPECTED) == 8


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_has_the_reference_values(name):
    path = RECIPES / name
    assert KINDS[guess_kind(path)] is FinetuneExperiment  # `crisscross config validate` agrees
    config = load_config(path, schema=FinetuneExperiment)
    dataset, frames, (batch, lr, gamma, milestones, dropout) = EXPECTED[name]
    d, o = config.data, config.optim
    got = {
        "dataset": d.dataset,
        "frames": d.frames,
        "batch": o.batch_size,
        "lr": o.lr,
        "gamma": o.gamma,
        "milestones": o.milestones,
        "dropout": config.model.dropout,
    }
    want = {
        "dataset": dataset,
        "frames": frames,
        "batch": batch,
        "lr": lr,
        "gamma": gamma,
        "milestones": milestones,
        "dropout": dropout,
    }
    assert got == want
    # the protocol every cell shares
    assert (o.epochs, o.momentum, o.weight_decay) == (20, 0.9, 0.0)
    assert (d.clips_per_video, d.test_clips, d.crop_size, d.fps) == (10, 10, 224, 16.0)
    assert o.batch_size % config.run.workers == 0


def test_head_dropout_must_be_a_probability_below_one():
    path = RECIPES / "ucf101_8f.yaml"
    assert load_config(path, {"model.dropout": 0.0}, schema=FinetuneExperiment).model.dropout == 0
    for bad, reason in ((1.0, "less than 1"), (-0.1, "greater than or equal to 0")):
        with pytest.raises(ConfigError, match=rf"model\.dropout: Input should be {reason}"):
            load_config(path, {"model.dropout": bad}, schema=FinetuneExperiment)
