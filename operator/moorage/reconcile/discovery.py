"""Which gateway kinds the cluster serves, asked once and remembered.

The answer changes only when a CRD is installed or removed: the operator's watch of CRDs forgets it then
(handlers.py), and it expires after a while besides, so a missed event costs minutes, not for ever.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from moorage.plan.gateway import HTTP_ROUTE, INFERENCE_POOL
from moorage.plan.observed import GatewayApis
from moorage.reconcile.kube import Kube

TTL = 300.0
"""Seconds an answer is trusted without a CRD event."""


@dataclass
class Discovery:
    kube: Kube
    ttl: float = TTL
    clock: Callable[[], float] = time.monotonic
    _known: tuple[float, GatewayApis] | None = field(default=None, init=False)

    async def gateway_apis(self, namespace: str) -> GatewayApis:
        """Asked in the namespace of the model at hand: with per-namespace RBAC, the only place the
        operator may look."""
        now = self.clock()
        if self._known is not None and now - self._known[0] < self.ttl:
            return self._known[1]
        apis = GatewayApis(
            inference_pool=await self.kube.served(INFERENCE_POOL.kind, namespace),
            http_route=await self.kube.served(HTTP_ROUTE.kind, namespace),
        )
        self._known = (now, apis)
        return apis

    def forget(self) -> None:
        self._known = None
