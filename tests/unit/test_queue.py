"""The per-model work queue: triggers coalesce, one run at a time per model, failures back off."""

import asyncio

from moorage.reconcile.queue import WorkQueue


def test_triggers_during_a_run_coalesce_into_one_more_run() -> None:
    runs: list[str] = []
    running: set[str] = set()

    async def work(namespace: str, name: str) -> float | None:
        assert name not in running, "a model is never reconciled twice at once"
        running.add(name)
        runs.append(name)
        await asyncio.sleep(0.05)
        running.discard(name)
        return None

    async def scenario() -> None:
        queue = WorkQueue(work)
        queue.trigger("ns", "a")
        await asyncio.sleep(0.01)
        for _ in range(5):
            queue.trigger("ns", "a")
        queue.trigger("ns", "b")
        await asyncio.sleep(0.3)
        await queue.close()

    asyncio.run(scenario())
    assert runs.count("a") == 2 and runs.count("b") == 1


def test_a_failure_is_retried_with_backoff_and_others_go_on() -> None:
    calls: dict[str, int] = {"bad": 0, "good": 0}

    async def work(namespace: str, name: str) -> float | None:
        calls[name] += 1
        if name == "bad" and calls[name] < 3:
            raise RuntimeError("apiserver hiccup")
        return None

    async def scenario() -> None:
        queue = WorkQueue(work, max_backoff=0.05)
        queue.trigger("ns", "bad")
        queue.trigger("ns", "good")
        await asyncio.sleep(0.5)
        await queue.close()

    asyncio.run(scenario())
    assert calls == {"bad": 3, "good": 1}


def test_work_in_flight_is_looked_at_again() -> None:
    calls = 0

    async def work(namespace: str, name: str) -> float | None:
        nonlocal calls
        calls += 1
        return 0.02 if calls < 4 else None

    async def scenario() -> None:
        queue = WorkQueue(work)
        queue.trigger("ns", "pulling")
        await asyncio.sleep(0.4)
        await queue.close()

    asyncio.run(scenario())
    assert calls == 4


def test_trigger_all_wakes_every_model_seen() -> None:
    runs: list[str] = []

    async def work(namespace: str, name: str) -> float | None:
        runs.append(name)
        return None

    async def scenario() -> None:
        queue = WorkQueue(work)
        queue.trigger("ns", "a")
        queue.trigger("other", "b")
        await asyncio.sleep(0.05)
        queue.trigger_all()  # e.g. a gateway CRD installed
        await asyncio.sleep(0.05)
        await queue.close()

    asyncio.run(scenario())
    assert sorted(runs) == ["a", "a", "b", "b"]
