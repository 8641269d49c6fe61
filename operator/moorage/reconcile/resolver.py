"""Source resolution for the operator: the hub asked once per source, off the event loop."""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from moorage.api.resolved import ResolvedSource
from moorage.hub import resolve

Resolve = Callable[[str, str, Sequence[str] | None], ResolvedSource]


@dataclass
class Resolver:
    """Caches what the hub said per (uri, revision, include), asked anonymously: a source that needs a
    token is resolved in its model's resolve Job instead (moorage.plan.resolve), so the operator never
    holds one.

    A branch is resolved once while the operator runs, so a push to the branch never rolls a model by
    surprise; pin a commit sha to freeze it across restarts too.
    """

    endpoint: str | None = None
    resolve: Resolve | None = None
    _cache: dict[tuple[str, str, tuple[str, ...] | None], asyncio.Future[ResolvedSource]] = field(
        default_factory=dict
    )

    async def __call__(self, uri: str, revision: str, include: Sequence[str] | None) -> ResolvedSource:
        key = (uri, revision, tuple(include) if include else None)
        # Many models on one base ask at once (an operator start, a batch applied): one request to the hub,
        # the others wait for its answer. A failure is not kept: the next reconcile asks again.
        future = self._cache.get(key)
        if future is None or (future.done() and future.exception() is not None):
            fn = self.resolve or (lambda u, r, i: resolve(u, r, i, None, endpoint=self.endpoint))
            future = self._cache[key] = asyncio.ensure_future(asyncio.to_thread(fn, uri, revision, include))
        return await asyncio.shield(future)
