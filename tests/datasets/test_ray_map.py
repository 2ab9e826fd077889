"""`as_finished` and `chunked_on_ray`: results as tasks finish, a bounded number in flight."""

from __future__ import annotations

import ray

from crisscross.datasets.ray_map import as_finished, chunked_on_ray


@ray.remote(num_cpus=0)
def _echo(value: int) -> int:
    return value


def _doubled(chunk: list[int], factor: int) -> list[int]:
    return [factor * v for v in chunk]


def test_as_finished_keeps_at_most_its_limit_in_flight_and_cancels_the_rest(local_ray):
    submitted: list[int] = []

    def submit(key: int):
        submitted.append(key)
        return _echo.remote(key)

    seen = {}
    for taken, (key, result) in enumerate(as_finished(submit, range(10), limit=3), start=1):
        assert len(submitted) - taken <= 3  # still in flight when this one was taken
        seen[key] = result
    assert seen == {k: k for k in range(10)} and sorted(submitted) == list(range(10))

    submitted.clear()
    results = as_finished(submit, range(10), limit=3)
    next(results)
    results.close()  # the caller leaves early: nothing more is submitted
    assert len(submitted) <= 4


def test_chunked_on_ray_gives_every_item_its_own_result(local_ray):
    got = dict(chunked_on_ray(_doubled, list(range(23)), chunk=5, args=(3,), num_cpus=0.5))
    assert got == {i: 3 * i for i in range(23)}
