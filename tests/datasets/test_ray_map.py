"""`as_finished` and `chunked_on_ray`: results as tasks finish, a bounded number in flight."""

from __future__ import annotations

import ray

from crisscross.datasets.ray_map import as_finished, chunked_on_ray


@ray.remote(num_cpus=0)
def _echo(value: int) -> int:
    return value


def _doubled(chunk: list[int], factor: int) -> list[int]:
    return [factor * v for v in chunk]


def test_as_finished_keeps_at_most_its_limit_in_flight_and_pairs_keys_and_results(local_ray):
    submitted: list[int] = []

    def submit(key: int):
        submitted.append(key)
        return _echo.remote(key)

    seen = {}
    for taken, (key, result) in enumerate(as_finished(submit, range(10), limit=3), start=1):
        assert len(submitted) - taken <= 3  # still in flight when this one was taken
        seen[key] = result
    assert seen == {k: k for k in range(10)} and sorted(submitted) == list(range(10))


def test_as_finished_cancels_the_tasks_in_flight_when_left_early(local_ray, monkeypatch):
    """Every task still in flight is cancelled (Ray itself may miss a task that it has only just
    been handed: its cancellation is best effort, so the calls are what is checked here)."""
    refs, cancelled = [], []

    def submit(key: int):
        refs.append(_echo.remote(key))
        return refs[-1]

    monkeypatch.setattr(ray, "cancel", cancelled.append)
    results = as_finished(submit, range(10), limit=3)
    taken, _ = next(results)
    results.close()  # the caller leaves early
    assert len(refs) == 4  # the limit in flight, and nothing submitted after
    assert sorted(map(str, cancelled)) == sorted(str(r) for i, r in enumerate(refs) if i != taken)


def test_chunked_on_ray_gives_every_item_its_own_result(local_ray):
    got = dict(chunked_on_ray(_doubled, list(range(23)), chunk=5, args=(3,), num_cpus=0.5))
    assert got == {i: 3 * i for i in range(23)}


def test_a_limit_asked_again_lets_more_in_flight_as_it_grows(local_ray):
    submitted: list[int] = []
    limits = iter([1, 1, 4])  # then 4: a node came up

    def submit(key: int):
        submitted.append(key)
        return _echo.remote(key)

    in_flight = []
    for taken, _ in enumerate(
        as_finished(submit, range(12), limit=lambda: next(limits, 4)), start=1
    ):
        in_flight.append(len(submitted) - taken)
    assert sorted(submitted) == list(range(12))
    assert in_flight[0] == 1 and max(in_flight) == 4 and all(n <= 4 for n in in_flight)


def _assigned(chunk: list[int]) -> list[dict[str, float]]:
    return [ray.get_runtime_context().get_assigned_resources() for _ in chunk]


def test_tasks_ask_for_the_cpu_worker_types_resource_where_the_cluster_names_one(
    local_ray, monkeypatch
):
    """cluster.yaml gives its cpu_worker nodes a custom resource and names it in
    $CRISSCROSS_CPU_RESOURCE; here the head's own `node:__internal_head__` stands in for it."""
    from crisscross.datasets.ray_map import CPU_RESOURCE_ENV, SLIVER, usable_cpus

    monkeypatch.delenv(CPU_RESOURCE_ENV, raising=False)
    plain = dict(chunked_on_ray(_assigned, [0, 1], chunk=1, num_cpus=0.5))
    assert all(set(got) == {"CPU"} for got in plain.values())
    monkeypatch.setenv(CPU_RESOURCE_ENV, "node:__internal_head__")
    pinned = dict(chunked_on_ray(_assigned, [0, 1], chunk=1, num_cpus=0.5))
    assert all(got.get("node:__internal_head__") == SLIVER for got in pinned.values())
    assert usable_cpus({"node:__internal_head__": SLIVER}) == ray.cluster_resources()["CPU"]
    assert usable_cpus({"no_such_node_type": SLIVER}) == 0
