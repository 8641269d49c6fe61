"""``python -m moorage.devcluster up [--workdir DIR] [--gpu-nodes N] [--gpus-per-node N] [--real-node
[--autoscaling]]``.

``build [--real-node]`` only builds; ``clean`` removes what a real node that
died without stopping left behind (its containers run until then).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from moorage.devcluster.autoscaling import Autoscaling
from moorage.devcluster.build import build, build_autoscaling, build_node
from moorage.devcluster.cluster import Cluster
from moorage.devcluster.node import NodeError, clean_after_crash


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moorage.devcluster")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build, start the cluster and wait for Ctrl-C")
    up.add_argument("--workdir", type=Path, help="state directory (default: a new temp dir)")
    up.add_argument("--gpu-nodes", type=int, default=2)
    up.add_argument("--gpus-per-node", type=int, default=8)
    up.add_argument(
        "--real-node",
        action="store_true",
        help="replace the kwok CPU node by a real one (containerd, kubelet; Linux, root)",
    )
    up.add_argument(
        "--autoscaling",
        action="store_true",
        help="with --real-node: also run KEDA and Prometheus (for models with spec.serving.autoscaling)",
    )
    sub.add_parser("clean", help="remove what a real node that died without stopping left behind")
    build_parser = sub.add_parser("build", help="build the binaries and print their directory")
    build_parser.add_argument("--real-node", action="store_true", help="also build the real node's programs")
    build_parser.add_argument("--autoscaling", action="store_true", help="also build KEDA and Prometheus")
    args = parser.parse_args(argv)
    if args.command == "up" and args.autoscaling and not args.real_node:
        parser.error("--autoscaling needs --real-node: KEDA's metrics server is reached through a Service")

    if args.command == "clean":
        try:
            cleaned = clean_after_crash()
        except NodeError as exc:
            print(exc, file=sys.stderr)
            return 1
        print("cleaned up after a real node that died" if cleaned else "nothing to clean up", file=sys.stderr)
        return 0
    if args.command == "build":
        print(build())
        if args.real_node:
            print(build_node())
        if args.autoscaling:
            print(build_autoscaling())
        return 0

    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="moorage-devcluster-"))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)  # also when started with SIGINT ignored
    started = time.monotonic()
    try:
        with (
            Cluster.start(
                workdir, gpu_nodes=args.gpu_nodes, gpus_per_node=args.gpus_per_node, real_node=args.real_node
            ) as cluster,
            Autoscaling.start(cluster) if args.autoscaling else contextlib.nullcontext() as autoscaling,
        ):
            print(
                f"cluster up in {time.monotonic() - started:.1f}s; state in {cluster.workdir}",
                file=sys.stderr,
            )
            if cluster.node is not None:
                print(f"real node:  {cluster.node.name} (pods reach this machine at {cluster.host_address})")
                print(f"images:     {' '.join(cluster.node.ctr)} -n k8s.io images import ARCHIVE")
            if autoscaling is not None:
                print(f"KEDA and Prometheus: moorage run --prometheus-address {autoscaling.prometheus_url}")
            print(f"kubeconfig: {cluster.kubeconfig}")
            print(f"audit log:  {cluster.audit_log}")
            print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
            print("Ctrl-C to stop.", file=sys.stderr, flush=True)
            while cluster.running():
                time.sleep(1)
            print(f"a component exited; stopping (see logs in {cluster.logs_dir})", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
