"""`moorage activator`: holds the requests of models at zero replicas while one starts, then forwards them.

It runs in its own Deployment (the chart's), beside the operator, never imported by it: the operator only
points a model's Service at it (plan/activator.py) while the model has no ready replica.
"""

import argparse
import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from moorage.activator.gate import Metrics
from moorage.activator.proxy import Activator, health_app
from moorage.api.activation import ACTIVATOR_METRICS_PORT, ACTIVATOR_PORT

log = logging.getLogger("moorage.activator")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="moorage activator", description="Hold requests for models at zero replicas while one starts."
    )
    parser.add_argument("--port", type=int, default=ACTIVATOR_PORT, help="port requests come to")
    parser.add_argument(
        "--metrics-port", type=int, default=ACTIVATOR_METRICS_PORT, help="port of /metrics and /healthz"
    )
    parser.add_argument(
        "-n", "--namespace", action="append", default=[], help="serve only this namespace (repeatable)"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from lightkube import AsyncClient  # noqa: PLC0415 - the tests run the proxy without a cluster

    from moorage.activator.kube import KubeCluster  # noqa: PLC0415

    registry = CollectorRegistry()
    cluster = KubeCluster(AsyncClient(field_manager="moorage-activator"), args.namespace)
    activator = Activator(cluster, Metrics(registry), cluster.find)
    runners = [
        web.AppRunner(activator.app(), access_log=None),
        web.AppRunner(health_app(lambda: generate_latest(registry), activator.held), access_log=None),
    ]
    for runner, port in zip(runners, (args.port, args.metrics_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, port=port).start()
    log.info("activator on :%d (metrics on :%d)", args.port, args.metrics_port)
    try:
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The HTTP client logs every request at INFO: a held request polls the API server twice a second.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    asyncio.run(serve(parse_args(argv)))
    return 0
