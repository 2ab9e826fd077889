"""Where outputs land: here, or on the cluster's shared storage named by $CRISSCROSS_STORAGE.

On a laptop a relative `run.output_dir` is a folder under the working directory. A Ray job runs
in a temporary copy of the working directory on the head, and its workers run on other nodes:
there a relative output path must land on storage every node reaches and that outlives the
job. cluster.yaml names that storage once (an s3:// URI or a shared mount) as
$CRISSCROSS_STORAGE; relative output paths are taken under it.
"""

from __future__ import annotations

import os
from pathlib import Path

STORAGE_ENV = "CRISSCROSS_STORAGE"
# the shipped specs: package data, so that a non-editable install (as on cluster nodes) has them
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def is_uri(path: str) -> bool:
    return "://" in path


def absolute(path_or_uri: str) -> str:
    """A URI as it is; a path made absolute (~ expanded), relative to the working directory."""
    return path_or_uri if is_uri(path_or_uri) else str(Path(path_or_uri).expanduser().resolve())


def shared_storage() -> str | None:
    """$CRISSCROSS_STORAGE (a URI or an absolute path), or None when unset or empty."""
    value = os.environ.get(STORAGE_ENV, "").strip()
    return value.rstrip("/") or None


def output_location(path: str) -> str:
    """Where an output path (run.output_dir) lands: a URI or an absolute path as given; a
    relative one under $CRISSCROSS_STORAGE when it is set, else under the working directory."""
    if is_uri(path) or Path(path).expanduser().is_absolute():
        return absolute(path)
    storage = shared_storage()
    if storage is None:
        return absolute(path)
    return f"{storage}/{path.strip('/')}" if is_uri(storage) else absolute(f"{storage}/{path}")


def local_output_folder(path: str) -> Path:
    """A file-system folder for outputs written with local file I/O (a sweep's state): like
    `output_location`, except that with object storage ($CRISSCROSS_STORAGE=s3://...) a relative
    path goes under ~/crisscross on this machine (the head node, for a Ray job) instead."""
    location = output_location(path)
    if not is_uri(location):
        return Path(location)
    if is_uri(path):
        raise ValueError(f"{path}: a file-system path is needed here, not an object-store URI")
    return (Path.home() / "crisscross" / path).resolve()
