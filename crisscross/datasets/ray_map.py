"""A function mapped over many items as Ray tasks, a bounded number in flight, results taken as
they finish: what probing and `prepare` do with millions of files.

Written here because Ray Data's `map_batches` would return results in blocks the driver can
only take at the end (no per-file progress, nothing written until it ends), and submitting
every task at once leaves millions of pending tasks with the scheduler and their arguments on
the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from itertools import islice
from typing import Any, TypeVar

Key = TypeVar("Key")


def as_finished(
    submit: Callable[[Key], Any], keys: Iterable[Key], *, limit: int
) -> Iterator[tuple[Key, Any]]:
    """(key, result) for each of `keys`, as the Ray tasks that `submit(key)` starts (it
    returns the task's ObjectRef) finish, at most `limit` in flight; leaving early cancels the
    rest."""
    import ray

    keys, pending = iter(keys), {}
    try:
        for key in islice(keys, limit):
            pending[submit(key)] = key
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            result = ray.get(ready[0])
            for more in islice(keys, 1):  # the next one in flight before the caller takes this
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
    put in the object store once), as Ray tasks on the connected cluster,
    at most `per_cpu` tasks per cluster CPU in flight; leaving early cancels the rest."""
    import ray

    task = ray.remote(num_cpus=num_cpus, max_retries=retries)(function)
    shared = [ray.put(a) for a in args]
    limit = max(2, per_cpu * int(ray.cluster_resources().get("CPU", 1)))

    def submit(first: int) -> Any:
        return task.remote(list(items[first : first + chunk]), *shared)

    # closing: leaving this generator early cancels the tasks in flight at once
    with closing(as_finished(submit, range(0, len(items), chunk), limit=limit)) as finished:
        for first, results in finished:
            for offset, result in enumerate(results):
                yield first + offset, result
