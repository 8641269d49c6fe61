"""Unloading adapters taken out of spec.adapters from the replicas that loaded them.

vLLM keeps an adapter it resolved in memory: removing its directory stops new replicas from loading it, but
a replica that served it goes on until told (POST /v1/unload_lora_adapter, which the serving pods open
because they load adapters at run time). The operator tells each ready replica, over the pod network.
"""

import logging
from collections.abc import Iterable

import aiohttp

from moorage.plan.serving import PORT
from moorage.reconcile.kube import Obj

log = logging.getLogger("moorage.reconcile")
TIMEOUT_SECONDS = 5.0


def _ready_addresses(pods: Iterable[Obj]) -> list[str]:
    addresses = []
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            addresses.append(str(status["podIP"]))
    return addresses


async def unload(pods: Iterable[Obj], names: Iterable[str]) -> set[str]:
    """Unloads each name from every ready replica; returns the names no replica serves any more (unloaded,
    or never loaded). A replica that cannot be asked keeps its names for the next reconcile."""
    wanted = set(names)
    done = set(wanted)
    addresses = _ready_addresses(pods)
    if not wanted or not addresses:
        return done
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for address in addresses:
            for name in sorted(wanted):
                url = f"http://{address}:{PORT}/v1/unload_lora_adapter"
                try:
                    async with session.post(url, json={"lora_name": name}) as response:
                        if response.status in (200, 404):  # 404: this replica never loaded it
                            continue
                        log.warning("unloading %s from %s: HTTP %s", name, address, response.status)
                except (aiohttp.ClientError, TimeoutError) as error:
                    log.warning("unloading %s from %s: %s", name, address, error)
                done.discard(name)
    return done
