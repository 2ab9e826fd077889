"""A run's end with the tracking server down: a sentence within seconds, not MLflow's minutes of
retries per upload, and the checkpoint left where it was."""

from __future__ import annotations

import time

import pytest
import ray.train
import torch
from mlflow.tracking import MlflowClient

from crisscross.config import load_config
from crisscross.platform.pretrain.closing import RunFailedError, finish
from crisscross.trainers.builders import build_model
from crisscross.trainers.run_folder import STATE_FILE
from tests.conftest import REPO, TINY_SIZES
from tests.platform.cluster.test_cluster_job import free_ports


def test_a_server_that_is_down_at_the_end_is_named_in_seconds(tmp_path):
    config = load_config(REPO / "experiments" / "pretext" / "quickstart.yaml", TINY_SIZES)
    folder = tmp_path / "checkpoint_step000000003"
    folder.mkdir()
    torch.save({"model": build_model(config).state_dict(), "step": 3}, folder / STATE_FILE)
    uri = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RunFailedError) as error:
        finish(
            MlflowClient(uri),
            config,
            "0" * 32,
            uri,
            str(tmp_path),
            ray.train.Checkpoint(str(folder)),
            str(tmp_path),
            step=3,
        )
    seconds = time.monotonic() - started
    assert seconds < 30, seconds  # MLflow's own retries of the first upload: minutes
    message = str(error.value)
    assert message.startswith("training reached step 3, but ")
    assert f"the checkpoints stay in {tmp_path}: run the same command again once it answers" in (
        message
    )
    assert (folder / STATE_FILE).is_file()
