"""The operator's resolver asks the hub once per source, however many models ask at the same time."""

import asyncio
import threading
import time

import pytest

from moorage.api.resolved import HubFile, ResolvedSource
from moorage.hub import HubError
from moorage.reconcile.resolver import Resolver

RESOLVED = ResolvedSource("hf://org/m", "org/m", "model", "main", "a" * 40, (HubFile("config.json", 10),))


def test_many_models_on_one_base_make_one_request_and_a_failure_is_asked_again() -> None:
    calls: list[str] = []
    lock = threading.Lock()
    failing = {"hf://org/down"}

    def resolve(uri: str, revision: str, include: object) -> ResolvedSource:
        with lock:
            calls.append(uri)
        time.sleep(0.05)  # long enough for every model to ask while the first request is out
        if uri in failing:
            raise HubError("the hub is down")
        return RESOLVED

    async def scenario() -> None:
        resolver = Resolver(resolve=resolve)
        answers = await asyncio.gather(*(resolver("hf://org/m", "main", None) for _ in range(50)))
        assert all(a is RESOLVED for a in answers)
        assert calls == ["hf://org/m"]
        for _ in range(2):
            with pytest.raises(HubError):
                await resolver("hf://org/down", "main", None)
        assert calls.count("hf://org/down") == 2, "a failure is not remembered: the next reconcile asks again"
        failing.clear()
        assert await resolver("hf://org/down", "main", None) is RESOLVED

    asyncio.run(scenario())
