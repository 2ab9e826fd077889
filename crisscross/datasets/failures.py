"""The run's log of samples that failed to decode, and its quarantine of files that killed a
decode actor (`pipeline` says how the decode actors use them).

Kept apart from `pipeline`, with nothing heavier than Ray and pyarrow: the FailureLog actor's
process imports this module, and each worker group waits for that actor to be ready; importing
torch and torchvision there cost about 5 s a worker group on 2 cores.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from crisscross.datasets.fs import atomic_write_text, join, resolve

log = logging.getLogger(__name__)
NAMESPACE = "crisscross"


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str
    epoch: int


def failure_summary(failures: list[Failure], *, epoch: int, shown: int = 5) -> str:
    """One line for the end of an epoch: how many samples were skipped, which, and why."""
    if not failures:
        return f"epoch {epoch}: no sample skipped"
    files = "; ".join(f"{f.path} ({f.reason})" for f in failures[:shown])
    more = f"; and {len(failures) - shown} more" if len(failures) > shown else ""
    return f"epoch {epoch}: {len(failures)} sample(s) skipped, failing to decode: {files}{more}"


QUARANTINE_PREFIX = "crisscross_quarantine_rank"  # <run folder>/<prefix><rank>.txt


def read_quarantine(storage: str) -> set[str]:
    """The files every earlier worker group of the run in `storage` quarantined (one file a
    rank, a path a line: an object store cannot append, so each rank rewrites its own)."""
    fs, base = resolve(storage)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except OSError:  # unreadable: nothing known, a crashing file is quarantined again
        return set()
    found: set[str] = set()
    for info in infos:
        if info.is_file and info.base_name.startswith(QUARANTINE_PREFIX):
            with fs.open_input_stream(info.path) as stream:
                found |= set(stream.read().decode("utf-8").splitlines()) - {""}
    return found


@ray.remote(num_cpus=0)
class FailureLog:
    """Collects the samples that failed to decode, and each decode actor's peak RSS. With a
    `quarantine_file`, the quarantined files are written there as they come (so that a later
    worker group of the run, after a restart or a new launch, skips them from the start)."""

    def __init__(self, known: set[str] = frozenset(), quarantine_file: str | None = None) -> None:
        self.items: list[Failure] = []
        self.peak_rss: dict[int, float] = {}
        self.crashed: set[str] = set(known)  # files that killed a decode actor: quarantined
        self.quarantine_file = quarantine_file

    def record(self, failure: Failure) -> None:
        self.items.append(failure)

    def quarantine(self, path: str) -> None:
        self.crashed.add(path)
        if self.quarantine_file:  # every file known, so no earlier group's entry is lost
            text = "".join(f"{p}\n" for p in sorted(self.crashed))
            try:
                atomic_write_text(self.quarantine_file, text)
            except OSError as exc:  # the run goes on; only a later group would meet it again
                log.warning("could not keep the quarantine in %s: %s", self.quarantine_file, exc)

    def quarantined(self) -> set[str]:
        return set(self.crashed)

    def note_rss(self, pid: int, mib: float) -> None:
        self.peak_rss[pid] = max(mib, self.peak_rss.get(pid, 0.0))

    def drain(self) -> list[Failure]:
        items, self.items = self.items, []
        return items

    def rss(self) -> dict[int, float]:
        return dict(self.peak_rss)


@dataclass(frozen=True)
class FailureLogRef:
    """The owning handle of a run's FailureLog and the name decode actors look it up by.

    Keep it for the run: a named actor lives only while its creator's handle does.
    """

    name: str
    handle: ray.actor.ActorHandle

    @classmethod
    def create(
        cls, name: str | None = None, *, storage: str | None = None, rank: int = 0
    ) -> FailureLogRef:
        """A new log; with the run folder `storage`, it starts from the files the run's
        earlier worker groups quarantined and writes those quarantined here for rank `rank`."""
        name = name or f"crisscross-failures-{uuid.uuid4().hex[:12]}"
        known, where = set(), None
        if storage:
            known, where = read_quarantine(storage), join(storage, f"{QUARANTINE_PREFIX}{rank}.txt")
            if known:
                log.warning("%d file(s) quarantined earlier in this run: skipped", len(known))
        # on this process's node: a log placed elsewhere can land on a node being drained (its
        # deadline just passed) and die with it, failing the group Ray has just restarted
        # (seen in tests/platform/cluster/test_two_nodes.py); here it shares its creator's fate
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        handle = FailureLog.options(
            name=name, namespace=NAMESPACE, scheduling_strategy=here
        ).remote(known, where)
        ray.get(handle.__ray_ready__.remote())  # registered before any decode actor looks it up
        return cls(name, handle)

    def drain(self) -> list[Failure]:
        """The failures recorded since the last drain."""
        return ray.get(self.handle.drain.remote())

    def quarantined(self) -> set[str]:
        """The files skipped because they crashed a decode actor (this run's, so far)."""
        return ray.get(self.handle.quarantined.remote())

    def peak_rss_mib(self) -> dict[int, float]:
        """Peak resident memory of each decode actor process so far, by pid."""
        return ray.get(self.handle.rss.remote())
