"""moorage: run the operator, render a model's children, print the CRD, or run a program of a pod."""

import argparse
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moorage.api.crd import crd
from moorage.api.errors import describe
from moorage.api.layout import ADAPTER_FILES
from moorage.api.model import API_VERSION, KIND, ObjectMeta, OpenSourceModel
from moorage.api.reference import reference
from moorage.api.resolved import ResolvedAdapter, ResolvedSource
from moorage.api.spec import OpenSourceModelSpec
from moorage.plan.children import plan
from moorage.plan.config import (
    DEFAULT_FINETUNE_IMAGE,
    DEFAULT_OPERATOR_IMAGE,
    DEFAULT_PROMETHEUS_ADDRESS,
    DEFAULT_VLLM_CPU_IMAGE,
    DEFAULT_VLLM_IMAGE,
    EXAMPLE_ACTIVATOR,
    PlanConfig,
)
from moorage.plan.observed import EVERYWHERE, AutoscalerState, JobState, Observed
from moorage.reconcile.checks import serving_problem

RENDER_UID = "00000000-0000-0000-0000-000000000000"
PROGRAMS = {
    "pull": "pull a snapshot into a directory (the weights Job's program)",
    "resolve": "pin a source with the hub token of a Secret (the resolve Job's program)",
    "adapters": "pull LoRA adapters and lay them out for vLLM (the adapters Job's program)",
    "finetune": "train a LoRA adapter (the fine-tune Job's program)",
    "activator": "hold requests for models at zero replicas while one starts (the activator's program)",
}


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: a dict used twice is written twice, not as an &anchor."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(documents: Sequence[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)


class UsageError(Exception):
    """A mistake in what the user gave us: one line on stderr, exit 2, no traceback."""


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// URL")
    return value


def _activator(value: str) -> str:
    if value and not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not <service>.<namespace>, e.g. {EXAMPLE_ACTIVATOR}")
    return value


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vllm-image", default=DEFAULT_VLLM_IMAGE, help="default image of the vLLM pods")
    parser.add_argument(
        "--vllm-cpu-image", default=DEFAULT_VLLM_CPU_IMAGE, help="default image of models served on CPU"
    )
    parser.add_argument(
        "--operator-image", default=DEFAULT_OPERATOR_IMAGE, help="image that runs `moorage pull`"
    )
    parser.add_argument("--finetune-image", default=DEFAULT_FINETUNE_IMAGE, help="image of fine-tune Jobs")
    parser.add_argument("--hf-endpoint", default=None, help="hub URL (a mirror); default: the public hub")
    parser.add_argument("--default-gpu-profile", default=PlanConfig.default_gpu_profile)
    parser.add_argument(
        "--prometheus-address",
        default=DEFAULT_PROMETHEUS_ADDRESS,
        type=_http_url,
        help="Prometheus URL that KEDA asks for vLLM's metrics, for models with spec.serving.autoscaling",
    )
    parser.add_argument(
        "--activator",
        default="",
        type=_activator,
        help="moorage's activator Service as <name>.<namespace>, which holds the requests of models with "
        "autoscaling.minReplicas 0 while they are at zero (default: none; the chart sets it)",
    )


def _plan_config(args: argparse.Namespace) -> PlanConfig:
    return PlanConfig(
        vllm_image=args.vllm_image,
        vllm_cpu_image=args.vllm_cpu_image,
        operator_image=args.operator_image,
        finetune_image=args.finetune_image,
        hf_endpoint=args.hf_endpoint,
        default_gpu_profile=args.default_gpu_profile,
        prometheus_address=args.prometheus_address,
        activator=args.activator or None,
    )


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _documents(path: str) -> list[tuple[str, Any]]:
    """(where, document) of a file, stdin ('-'), or every manifest file of a directory in name order."""
    if path != "-" and Path(path).is_dir():
        files = sorted(f for f in Path(path).iterdir() if f.suffix in MANIFEST_SUFFIXES and f.is_file())
        return [found for file in files for found in _documents(str(file))]
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from error
    return [(f"{path}[{i}]" if len(documents) > 1 else path, doc) for i, doc in enumerate(documents)]


def load_models(path: str) -> list[OpenSourceModel]:
    """Every OpenSourceModel in a file, stdin or a directory, validated as the API server would; other kinds
    beside them (a Secret, a Namespace) are skipped. Errors name the document and the field."""
    models = []
    for where, doc in _documents(path):
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: not a Kubernetes object")
        if doc.get("kind") != KIND:
            continue
        if doc.get("apiVersion") != API_VERSION:
            raise UsageError(f"{where}: {KIND} must have apiVersion {API_VERSION}")
        try:
            metadata = ObjectMeta.model_validate({"uid": RENDER_UID, **(doc.get("metadata") or {})})
            spec = OpenSourceModelSpec.from_manifest(doc.get("spec") or {}, metadata.name)
        except ValidationError as error:
            root = "metadata" if error.title == "ObjectMeta" else "spec"
            raise UsageError(f"{where}: {describe(error, root)}") from error
        models.append(OpenSourceModel(metadata=metadata, spec=spec))
    if not models:
        raise UsageError(f"{path}: no {API_VERSION} {KIND} in it")
    return models


def _unresolved(uri: str, revision: str) -> ResolvedSource:
    return ResolvedSource(uri, uri.removeprefix("hf://"), "model", revision, "unresolved", ())


def _resolve(
    model: OpenSourceModel, endpoint: str | None
) -> tuple[ResolvedSource, ResolvedSource | None, tuple[ResolvedAdapter, ...]]:
    from moorage.hub import HubError, resolve  # noqa: PLC0415 - the hub client loads only when asked for
    from moorage.hub.errors import TOKEN_HINT  # noqa: PLC0415

    token = os.environ.get("HF_TOKEN")
    source, tune = model.spec.source, model.spec.fine_tune
    try:
        resolved = resolve(source.uri, source.revision, source.include, token, endpoint=endpoint)
        dataset = None
        if tune and tune.dataset.from_hub:
            dataset = resolve(tune.dataset.uri, tune.dataset.revision, None, token, endpoint=endpoint)
        adapters = tuple(
            ResolvedAdapter(
                a.name,
                a.uri,
                resolve(a.uri, a.revision, ADAPTER_FILES, token, endpoint=endpoint)
                if a.claim is None
                else None,
            )
            for a in model.spec.adapters or ()
        )
    except HubError as error:
        # Here the token is the user's own, from HF_TOKEN, not the model's Secret.
        message = error.message.replace(TOKEN_HINT, "set HF_TOKEN to a hub token that has access")
        raise UsageError(f"{model.metadata.name}: {error.reason}: {message}") from error
    return resolved, dataset, adapters


def render(models: Sequence[OpenSourceModel], config: PlanConfig, resolve: bool) -> list[dict[str, Any]]:
    """The children each model gets once its weights (and adapter) are ready."""
    manifests = []
    for model in models:
        if resolve:
            resolved, dataset, adapters = _resolve(model, config.hf_endpoint)
        else:
            resolved, dataset = _unresolved(model.spec.source.uri, model.spec.source.revision), None
            adapters = tuple(
                ResolvedAdapter(a.name, a.uri, _unresolved(a.uri, a.revision) if a.claim is None else None)
                for a in model.spec.adapters or ()
            )
        problem = serving_problem(model, resolved, config) if resolve else None
        if problem is not None:
            raise UsageError(f"{model.metadata.name}: {problem.reason}: {problem.message}")
        done = JobState(succeeded=True)
        # As a cluster with KEDA would have it: the ScaledObject of an autoscaled model shows.
        scaler = AutoscalerState(installed=True) if model.spec.serving.autoscaling else None
        observed = Observed(
            resolved=resolved,
            dataset=dataset,
            pull=done,
            finetune=done,
            adapters=adapters,
            adapters_job=done,
            autoscaler=scaler,
            gateway_apis=EVERYWHERE,
        )
        manifests += plan(model, observed, config).children
    return manifests


def _cmd_render(args: argparse.Namespace) -> int:
    manifests = render(load_models(args.filename), _plan_config(args), args.resolve)
    if not args.resolve:
        print("# revision: unresolved (moorage render --resolve asks the hub for the commit)")
    print(dump(manifests), end="")
    return 0


def _cmd_crd(_: argparse.Namespace) -> int:
    print(dump([crd()]), end="")
    return 0


def _cmd_reference(_: argparse.Namespace) -> int:
    print(reference(), end="")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import kopf  # noqa: PLC0415 - the operator's framework loads only for `run`
    from lightkube.config.kubeconfig import KubeConfig  # noqa: PLC0415
    from lightkube.core.exceptions import ConfigError  # noqa: PLC0415

    from moorage.reconcile.handlers import Operator  # noqa: PLC0415 - registers the handlers

    try:
        Operator.kubeconfig = KubeConfig.from_env()
    except ConfigError as error:
        raise UsageError(f"no cluster to talk to ({error}): set KUBECONFIG, or run in a pod") from error
    Operator.config = _plan_config(args)
    if args.metrics_port is not None:
        try:
            Operator.metrics.serve(args.metrics_port, args.metrics_address)
        except OSError as error:
            where = f"{args.metrics_address}:{args.metrics_port}"
            raise UsageError(f"--metrics-port: cannot serve metrics on {where}: {error.strerror}") from error
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    if not args.verbose:
        # kopf reports every handler call at INFO; our own log says what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # and the liveness endpoint logs every probe.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    namespaces = args.namespace or []
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        identity=operator_identity(),  # type: ignore[arg-type]  # kopf does not export its NewType of str
    )
    return 0


def operator_identity() -> str:
    """Who this operator is, for kopf. Without one, kopf asks getpass.getuser(), which raises for a uid
    with no passwd entry (the operator pod runs as 65532 on images that have none)."""
    return os.environ.get("POD_NAME") or f"moorage@{socket.gethostname()}"


def _run_program(name: str, argv: list[str]) -> int:
    """`moorage pull`, `resolve` and `finetune`: the programs our Jobs run; each parses its own arguments."""
    if name == "pull":
        from moorage.jobs.pull import main as program  # noqa: PLC0415 - load only the program asked for
    elif name == "resolve":
        from moorage.jobs.resolve import main as program  # noqa: PLC0415
    elif name == "adapters":
        from moorage.jobs.adapters import main as program  # noqa: PLC0415
    elif name == "activator":
        from moorage.activator import main as program  # noqa: PLC0415
    else:
        from moorage.jobs.finetune import main as program  # noqa: PLC0415
    return program(argv)


def _cmd_demo(args: argparse.Namespace) -> int:
    from moorage.demo import main as demo  # noqa: PLC0415 - pulls in the dev cluster

    return demo(workdir=args.workdir, keep=not args.exit, real=args.real)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="moorage", description=__doc__)
    root.add_argument("--version", action="version", version=f"moorage {version('moorage')}")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the cluster of the current kubeconfig")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--log-format", choices=["plain", "json"], default="plain")
    run.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://<address>:<port>/metrics (default: not served)",
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="address the metrics listen on")  # noqa: S104
    _config_arguments(run)
    run.set_defaults(handler=_cmd_run)

    render_ = commands.add_parser("render", help="print the children a model would get, for review")
    render_.add_argument(
        "-f", "--filename", required=True, help="manifest file, a directory of them, or - for stdin"
    )
    render_.add_argument("--resolve", action="store_true", help="ask the hub for the commit and the files")
    _config_arguments(render_)
    render_.set_defaults(handler=_cmd_render)

    commands.add_parser("crd", help="print the CustomResourceDefinition").set_defaults(handler=_cmd_crd)
    commands.add_parser("reference", help="print the spec reference (Markdown)").set_defaults(
        handler=_cmd_reference
    )

    for name, about in PROGRAMS.items():  # listed for --help; main() hands their arguments over whole
        commands.add_parser(name, help=about, add_help=False)

    demo = commands.add_parser(
        "demo", help="a local cluster, the operator and a model that answers (real node as root on Linux)"
    )
    demo.add_argument("--workdir", type=Path, default=None)
    demo.add_argument("--exit", action="store_true", help="stop once the model is Ready")
    demo.add_argument(
        "--real",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve on a real node (default: where the machine allows), or --no-real for fake nodes only",
    )
    demo.set_defaults(handler=_cmd_demo)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PROGRAMS:
        return _run_program(argv[0], argv[1:])
    args = parser().parse_args(argv)
    if args.handler is not _cmd_run:  # kopf sets up logging for the operator itself
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per API request is noise, and the hub client's debug output could carry headers.
    for noisy in ("httpx", "httpx2", "httpcore", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.handler(args)
    except UsageError as error:
        print(f"moorage: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"moorage: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
