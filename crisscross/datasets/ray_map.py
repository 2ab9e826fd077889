"""A function mapped over many items as Ray tasks, a bounded number in flight, results taken as
they finish: what probing and `prepare` do with millions of files.

Written here because Ray Data's `map_batches` would return results in blocks the driver can
only take at the end (no per-file progress, nothing written until it ends), and submitting
every task at once leaves millions of pending tasks with the scheduler and their arguments on
the driver.

On a cluster whose CPU worker type carries a custom resource named in $CRISSCROSS_CPU_RESOURCE
(cluster.yaml: `cpu_worker`), every task asks for a sliver of it: the work runs on those nodes,
not on the GPU workers' CPUs, and the autoscaler starts them when none is up. The number in
flight follows the CPUs of the nodes that can take the tasks, looked at again every few seconds
as nodes come and go.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from itertools import islice
from typing import Any, TypeVar

Key = TypeVar("Key")
CPU_RESOURCE_ENV = "CRISSCROSS_CPU_RESOURCE"
SLIVER = 0.001  # of the CPU worker type's resource per task: its CPUs are what bound the tasks
RECOUNT_SECONDS = 5.0


def as_finished(
    submit: Callable[[Key], Any], keys: Iterable[Key], *, limit: int | Callable[[], int]
) -> Iterator[tuple[Key, Any]]:
    """(key, result) for each of `keys`, as the Ray tasks that `submit(key)` starts (it
    returns the task's ObjectRef) finish, at most `limit` in flight (a number, or a callable
    asked again as each task finishes; at least one); leaving early cancels the rest."""
    import ray

    def room() -> int:
        return max(1, limit() if callable(limit) else limit) - len(pending)

    keys, pending = iter(keys), {}
    try:
        for key in islice(keys, room()):
            pending[submit(key)] = key
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            result = ray.get(ready[0])
            for more in islice(keys, max(room(), 0)):  # in flight before the caller takes this
                pending[submit(more)] = more
            yield key, result
    finally:
        for ref in pending:
            ray.cancel(ref)


def chunked_on_ray(
    function: Callable[[list[Any]], list[Any]],
    items: Sequence[Any],
    *,
    chunk: int,
    args: tuple[Any, ...] = (),
    num_cpus: float = 1.0,
    retries: int = 3,
    per_cpu: int = 2,
) -> Iterator[tuple[int, Any]]:
    """(index into `items`, result) of `function` applied to chunks of `chunk` items (it takes
    a list and returns one result per item, in order; `args` follow the list in every call,
    put in the object store once), as Ray tasks on the connected cluster (on its CPU worker
    type where it names one: the module's docstring), at most `per_cpu` tasks per CPU that can
    take them in flight; leaving early cancels the rest."""
    import ray

    resources = cpu_worker_resources()
    task = ray.remote(num_cpus=num_cpus, max_retries=retries, resources=resources)(function)
    shared = [ray.put(a) for a in args]
    cpus = _Recount(lambda: usable_cpus(resources))
    if resources and not cpus():
        logging.getLogger(__name__).warning(
            "no node with the resource %r ($%s) is up yet: the tasks wait until the autoscaler "
            "starts one (cluster.yaml: the cpu_worker type)",
            *resources,
            CPU_RESOURCE_ENV,
        )

    def submit(first: int) -> Any:
        return task.remote(list(items[first : first + chunk]), *shared)

    def limit() -> int:
        return max(2, per_cpu * int(cpus()))

    # closing: leaving this generator early cancels the tasks in flight at once
    with closing(as_finished(submit, range(0, len(items), chunk), limit=limit)) as finished:
        for first, results in finished:
            for offset, result in enumerate(results):
                yield first + offset, result


def cpu_worker_resources() -> dict[str, float]:
    """{name: sliver} of the CPU worker type's custom resource named in $CRISSCROSS_CPU_RESOURCE
    (cluster.yaml sets both); {} where it is unset (a laptop, a cluster without that type)."""
    name = os.environ.get(CPU_RESOURCE_ENV, "").strip()
    return {name: SLIVER} if name else {}


def usable_cpus(resources: dict[str, float]) -> float:
    """CPUs of the alive nodes that hold every resource in `resources` (all nodes for {})."""
    import ray

    if not resources:
        return ray.cluster_resources().get("CPU", 0.0)
    return sum(
        node["Resources"].get("CPU", 0.0)
        for node in ray.nodes()
        if node.get("Alive") and all(node["Resources"].get(r, 0) >= n for r, n in resources.items())
    )


class _Recount:
    """A count asked of the cluster at most every RECOUNT_SECONDS (nodes come and go)."""

    def __init__(self, count: Callable[[], float]) -> None:
        self.count, self.value, self.at = count, count(), time.monotonic()

    def __call__(self) -> float:
        if time.monotonic() - self.at >= RECOUNT_SECONDS:
            self.value, self.at = self.count(), time.monotonic()
        return self.value
