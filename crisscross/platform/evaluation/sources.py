"""`--pretrained SOURCE`: a released weights file, a pretraining's MLflow run id, or a checkpoint
folder (a Ray checkpoint holding state.pt, or a whole run folder), resolved to one backbone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from crisscross.models import (
    Backbone,
    WeightsError,
    backbone_from_state,
    read_state_dict,
    submodule_state,
)
from crisscross.platform.pretrain.run_record import RecordError, read_record
from crisscross.platform.redact import redact
from crisscross.trainers.run_folder import BEST_DIR, RUN_RECORD, STATE_FILE, RunFolder

PREFIX = {"video": "vid", "audio": "aud"}
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_RELEASED = re.compile(r"^(?:vid|aud)_crisscross_(.+?)\.pth(?:\.tar)?$")


class SourceError(ValueError):
    """A --pretrained SOURCE that cannot be resolved; the message says what was expected."""


@dataclass(frozen=True)
class Pretrained:
    """One modality's pretrained weights (released format) and what they came from."""

    state: dict[str, torch.Tensor]
    source: str  # as the user gave it
    kind: str  # "file", "mlflow" or "checkpoint"
    where: str  # the file or folder the weights were read from
    pretrain_run_id: str | None  # the MLflow run of the pretraining, when known
    label: str  # the pretraining's name in reports
    dataset: str | None  # the pretraining dataset (kinetics_sound, ...), when known

    def backbone(self, *, modality: str, name: str | None, width: int | None) -> Backbone:
        """The backbone, loaded strictly; WeightsError when modality or architecture differ."""
        kwargs = {} if width is None else {"width": width}
        return backbone_from_state(
            self.state, source=self.where, name=name, modality=modality, **kwargs
        )


def resolve_pretrained(
    source: str, *, modality: str, tracking_uri: str, scratch: str
) -> Pretrained:
    """Read the `modality` ("video"/"audio") backbone of SOURCE; SourceError or WeightsError."""
    path = Path(source).expanduser()
    if path.is_file():
        return _from_file(source, path)
    if path.is_dir():
        return _from_folder(source, path, modality)
    if _RUN_ID.match(source):
        return _from_mlflow(source, modality, tracking_uri, scratch)
    raise SourceError(
        f"--pretrained {source}: not a weights file, a checkpoint folder, or an MLflow run id "
        f"(32 hex digits) of a pretraining in {redact(tracking_uri)}"
    )


def _from_file(source: str, path: Path) -> Pretrained:
    match = _RELEASED.match(path.name)
    return Pretrained(
        state=read_state_dict(path),
        source=source,
        kind="file",
        where=str(path),
        pretrain_run_id=None,
        label=match.group(1) if match else path.name,
        dataset=match.group(1) if match else None,
    )


def _from_folder(source: str, path: Path, modality: str) -> Pretrained:
    record_dir = path
    if (path / STATE_FILE).is_file():
        checkpoint = path
        record_dir = path.parent
    elif RunFolder(path).is_run():
        checkpoint = RunFolder(path).latest()
        if checkpoint is None:
            raise SourceError(f"--pretrained {source}: the run folder holds no checkpoint yet")
    else:
        raise SourceError(
            f"--pretrained {source}: a folder must be a checkpoint ({STATE_FILE} inside, e.g. "
            f"<run folder>/checkpoint_step000000100 or <run folder>/{BEST_DIR}) or a pretraining "
            f"run folder ({RUN_RECORD} inside)"
        )
    try:
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
        model_state = state["model"]
    except Exception as exc:  # a damaged or foreign file
        raise WeightsError(
            f"{checkpoint / STATE_FILE}: not a crisscross pretraining checkpoint ({exc})"
        ) from None
    try:
        record = read_record(str(record_dir)) or {}
    except RecordError as exc:
        raise SourceError(f"--pretrained {source}: {exc}") from None
    config = record.get("config", {})
    return Pretrained(
        state=submodule_state(model_state, f"{modality}."),
        source=source,
        kind="checkpoint",
        where=str(checkpoint / STATE_FILE),
        pretrain_run_id=record.get("mlflow_run_id"),
        label=config.get("run", {}).get("name", record_dir.name),
        dataset=config.get("data", {}).get("dataset"),
    )


def _from_mlflow(source: str, modality: str, uri: str, scratch: str) -> Pretrained:
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(uri)
    try:
        run = client.get_run(source)
    except Exception:
        raise SourceError(
            f"--pretrained {source}: no such MLflow run in {redact(uri)} "
            "(set MLFLOW_TRACKING_URI or tracking.uri to the store it was logged to)"
        ) from None
    exported = [
        f.path
        for f in client.list_artifacts(source, "backbones")
        if Path(f.path).name.startswith(PREFIX[modality] + "_")
    ]
    if not exported:
        raise SourceError(
            f"--pretrained {source}: MLflow run '{run.info.run_name}' ({run.info.status}) has no "
            f"exported {modality} backbone (backbones/{PREFIX[modality]}_*.pth.tar); a pretraining "
            "exports them when it finishes: finish it (crisscross pretrain --resume "
            f"{source}) or give its checkpoint folder"
        )
    local = download_artifacts(
        run_id=source, artifact_path=exported[0], dst_path=scratch, tracking_uri=uri
    )
    return Pretrained(
        state=read_state_dict(local),
        source=source,
        kind="mlflow",
        where=f"runs:/{source}/{exported[0]}",
        pretrain_run_id=source,
        label=run.info.run_name or source,
        dataset=run.data.params.get("data.dataset"),
    )
