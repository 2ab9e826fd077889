"""Frozen features of an evaluation's files: Ray tasks over chunks of files, with a progress bar
and every finished chunk written as a part, so that an interrupted `svm` or `probe` resumes
from what it had.

Chunks of CHUNK files (fewer when that gives every worker one) go out as Ray tasks, `run.workers`
in flight, each on a GPU when run.use_gpu is set or the cluster has GPUs. A finished chunk is
written to `<run.output_dir>/features/<digest>/part-<first file>.npz` (atomically), where the
digest covers the weights, the backbone settings, the samplers, the feature kind and the files:
a run with any of these changed never reads another's parts. The command removes the folder
once its run has finished. Each file's draws are seeded by its index in the whole file list, so
the features do not depend on the chunks or the worker count.

Written here rather than with Ray Data: the workers need the backbone built once per task from
weights put in the object store once, and the driver takes each chunk as it finishes (progress,
parts), `run.workers` in flight through `ray_map.as_finished` (`chunked_on_ray`'s limit is
per cluster CPU).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from tqdm import tqdm

from crisscross.datasets.fs import atomic_write_bytes
from crisscross.datasets.ray_map import as_finished
from crisscross.platform.evaluation.common import MODALITY
from crisscross.platform.evaluation.sources import Pretrained
from crisscross.platform.storage import local_output_folder
from crisscross.trainers.features import backbone_clip_features

log = logging.getLogger(__name__)
CHUNK = 32  # files per extraction task: the progress bar's step and a part's size
Part = dict[str, tuple[np.ndarray, np.ndarray]]  # sampler name -> ((n, C, D) features, (n,) ok)


def _extract_task(
    pretrained: Pretrained,
    config: Any,
    rows: list[dict[str, Any]],
    first: int,
    samples: dict[str, Any],
    kind: str,
    use_gpu: bool,
) -> Part:
    torch.set_num_threads(max(1, int(config.run.cpus_per_worker)))
    modality = MODALITY[config.data.dataset]
    backbone = pretrained.backbone(
        modality=modality, name=config.model.backbone, width=config.model.width
    )
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    out = backbone_clip_features(
        backbone, rows, samples, key=modality, kind=kind, device=device, first=first
    )
    return {name: (f.numpy(), ok.numpy()) for name, (f, ok) in out.items()}


def parts_folder(
    pretrained: Pretrained, config: Any, rows: list[dict[str, Any]], kind: str
) -> str | None:
    """`<run.output_dir>/features/<digest>` on the driver's file system (`local_output_folder`:
    with object storage, under ~/crisscross; None when run.output_dir is itself a URI: no
    parts are kept): the digest of the weights, the files, the feature `kind` and what the
    samplers are built from (the model, data and protocol sections and run.seed)."""
    try:
        root = local_output_folder(config.run.output_dir)
    except ValueError:
        return None
    digest = hashlib.sha256()
    for key in sorted(pretrained.state):
        digest.update(key.encode())
        digest.update(pretrained.state[key].detach().cpu().contiguous().numpy().tobytes())
    settings = config.model_dump(include={"model", "data", "svm", "probe"})
    settings |= {"seed": config.run.seed, "kind": kind}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(json.dumps(rows, sort_keys=True, default=str).encode())
    return str(root / "features" / digest.hexdigest()[:20])


def _read_parts(folder: str, starts: list[int], sizes: dict[int, int]) -> dict[int, Part]:
    """The parts an interrupted run wrote; one that is unreadable, of the wrong size or with a
    file that failed (perhaps only for a while: a mount not ready) is left out (its chunk is
    extracted again)."""
    done: dict[int, Part] = {}
    for first in starts:
        path = Path(folder) / f"part-{first:08d}.npz"
        if not path.is_file():
            continue
        try:
            with np.load(path) as data:
                names = sorted({k.rsplit(".", 1)[0] for k in data.files})
                part = {n: (data[f"{n}.features"], data[f"{n}.ok"]) for n in names}
            if not part or any(len(ok) != sizes[first] for _, ok in part.values()):
                raise ValueError(f"not {sizes[first]} files")
        except Exception as exc:  # a part cut short by a crash: extracted again
            log.warning("feature part %s is unreadable (%s): extracting it again", path, exc)
            continue
        if _failed(part):
            continue
        done[first] = part
    return done


def _write_part(folder: str, first: int, part: Part) -> None:
    buffer = io.BytesIO()
    arrays = {
        f"{name}.{what}": a
        for name, (f, ok) in part.items()
        for what, a in (("features", f), ("ok", ok))
    }
    np.savez(buffer, **arrays)
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(Path(folder) / f"part-{first:08d}.npz"), buffer.getvalue())


def extract_parallel(
    pretrained: Pretrained,
    config: Any,
    rows: list[dict[str, Any]],
    samples: dict[str, Any],
    *,
    kind: str,
    parts: str | None = None,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{sampler name: ((N, C, D) features, (N,) decoded)} of `rows`, chunk by chunk on Ray
    (the module's docstring); finished chunks in `parts` (a folder; None: none kept), those
    already there taken as they are. `progress`: a bar on stderr (files/s, ETA, failures)."""
    r = config.run
    use_gpu = r.use_gpu or ray.cluster_resources().get("GPU", 0.0) >= 1
    task = ray.remote(_extract_task).options(
        num_cpus=r.cpus_per_worker, num_gpus=1 if use_gpu else 0
    )
    chunk = max(1, min(CHUNK, -(-len(rows) // r.workers)))
    starts = list(range(0, len(rows), chunk))
    sizes = {first: min(chunk, len(rows) - first) for first in starts}
    done = _read_parts(parts, starts, sizes) if parts else {}
    if done:
        say(f"resuming: features of {sum(sizes[f] for f in done)} files from {parts}")
    todo = [first for first in starts if first not in done]
    bar = tqdm(total=len(rows), initial=sum(sizes[f] for f in done), unit="file",
               desc="features", disable=not progress, dynamic_ncols=True)  # fmt: skip
    weights = ray.put(pretrained)

    def submit(first: int) -> Any:
        rows_ = rows[first : first + chunk]
        return task.remote(weights, config, rows_, first, samples, kind, use_gpu)

    failed = 0  # of this extraction: a kept part has no failed file (_read_parts)
    # closing: an error here (a part that cannot be written) cancels the tasks in flight at once
    with bar, closing(as_finished(submit, todo, limit=r.workers)) as finished:
        for first, part in finished:
            done[first] = part
            if parts:
                _write_part(parts, first, part)
            failed += _failed(part)
            bar.update(sizes[first])
            bar.set_postfix(failed=failed, refresh=False)
    return {name: _joined([done[f][name] for f in starts]) for name in samples}


def _failed(part: Part) -> int:
    """Files of a chunk that some sampler could not decode."""
    return int((~np.logical_and.reduce([ok for _, ok in part.values()])).sum())


def _joined(chunks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The chunks' features and flags end to end; a chunk in which no file decoded has
    (n, 0, 0) features, which become zeros of the others' shape."""
    shape = next((f.shape[1:] for f, _ in chunks if f.size), None)
    if shape is not None:
        chunks = [
            (f if f.size else np.zeros((len(ok), *shape), np.float32), ok) for f, ok in chunks
        ]
    return np.concatenate([f for f, _ in chunks]), np.concatenate([ok for _, ok in chunks])


def remove_parts(parts: str | None) -> None:
    """The parts' folder, once the run that used them has finished."""
    if parts:
        shutil.rmtree(parts, ignore_errors=True)
