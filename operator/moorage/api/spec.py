"""spec of an OpenSourceModel: what the user asks for.

Defaults live here, in Python, and are applied when the operator plans: the CRD schema carries none, so
what Git holds and what the cluster holds stay the same object and GitOps sees no drift.
"""

import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from moorage.api.base import ApiModel, Rule
from moorage.api.finetune import IN_CLUSTER, FineTune
from moorage.api.gateway import Gateway
from moorage.api.layout import content_hash
from moorage.api.scheduling import Scheduling

MODEL_URI_PATTERN = r"^[a-z][a-z0-9+.-]*://.+$"
HF_MODEL_URI_PATTERN = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
PVC_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^/].*$"
"""pvc://<claim>/<path>: a claim's name, then a path relative to the claim's root."""
ADAPTER_URI_PATTERN = f"^({HF_MODEL_URI_PATTERN[1:-1]}|{PVC_URI_PATTERN[1:-1]})$"
PARENT_SEGMENT = r"/[.][.](/|$)"
"""A `..` segment, which would leave the claim (no backslashes: the same text is a CEL string)."""
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
REVISION_PATTERN = r"^\S+$"
"""A branch, tag or sha has no whitespace: a stray space would resolve to nothing, or to another ref."""
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"

Quantity = Annotated[str, Field(pattern=QUANTITY, max_length=32)]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the model's namespace."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)]
    """The Secret's name."""
    key: Annotated[str, Field(min_length=1, max_length=253)] = "token"
    """The key in the Secret's data that holds the token."""


def _uri_rule(pattern: str, message: str) -> Rule:
    """`uri` has a scheme this version knows, in its shape (the schema's pattern takes any scheme, for a
    message that says which ones)."""
    return Rule(
        cel=f"self.uri.matches('{pattern}')",
        message=message,
        check=lambda s: re.match(pattern, s.uri) is not None,
        field="uri",
    )


def _hf_uri_rule(message: str) -> Rule:
    """`uri` is a repository on the hub."""
    return _uri_rule(HF_MODEL_URI_PATTERN, message)


class Source(ApiModel):
    """Where the weights come from."""

    rules = (_hf_uri_rule("must be hf://<org>/<name>, the only source scheme this version knows"),)

    uri: Annotated[str, Field(max_length=512, pattern=MODEL_URI_PATTERN)]
    """hf://<org>/<name>, a model repository on the Hugging Face hub (or the hub at the operator's
    HF_ENDPOINT)."""
    revision: Annotated[str, Field(min_length=1, max_length=255, pattern=REVISION_PATTERN)] = "main"
    """Branch, tag or commit sha. A branch is resolved to a commit once; status.resolvedRevision pins it,
    and the weights change only when the branch moves and the operator resolves it again."""
    token_secret_ref: SecretKeyRef | None = None
    """The hub token for gated or private models. The operator never reads it: it reaches the model's
    resolve and pull Jobs through an environment variable from the Secret, and is never written to status,
    events, logs or pod arguments."""
    include: Annotated[
        list[Annotated[str, Field(min_length=1)]] | None, Field(min_length=1, max_length=64)
    ] = None
    """Glob patterns of the files to pull. Default: safetensors weights, configs and tokenizer files."""
    trust_remote_code: bool = False
    """Let vLLM run the model repository's own Python code. Off unless you trust the repository."""

    def fingerprint(self) -> str:
        """Same uri, revision and files: the same resolution on the hub."""
        return content_hash(self.uri, self.revision, self.include, length=16)


MANAGED_FLAGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("--port", "--host", "--uds"), "the Service and the probes expect vLLM on port 8000"),
    (("--model",), "the weights come from spec.source"),
    (("--served-model-name",), "use vllm.servedModelName"),
    (("--tensor-parallel-size", "-tp"), "use vllm.tensorParallelSize (and serving.gpus)"),
    (("--max-model-len",), "use vllm.maxModelLen"),
    (("--dtype",), "use vllm.dtype"),
    (("--quantization", "-q"), "use vllm.quantization"),
    (("--gpu-memory-utilization",), "use vllm.gpuMemoryUtilization"),
    (("--trust-remote-code",), "use spec.source.trustRemoteCode"),
    (("--enable-lora", "--lora-modules", "--max-lora-rank"), "adapters come from spec.fineTune"),
)
"""Flags moorage sets itself, and the typed field to use instead. vLLM reads `_` in a flag as `-`."""


def _flag_pattern(flags: tuple[str, ...]) -> str:
    names = "|".join("-" * (len(f) - len(f.lstrip("-"))) + f.lstrip("-").replace("-", "[-_]") for f in flags)
    return f"^({names})(=.*)?$"


def _managed_flag_rule(flags: tuple[str, ...], hint: str) -> Rule:
    pattern = _flag_pattern(flags)
    return Rule(
        cel=f"!has(self.extraArgs) || !self.extraArgs.exists(a, a.matches('{pattern}'))",
        message=f"extraArgs must not set {', '.join(flags)}: {hint}",
        check=lambda v: not any(re.match(pattern, a) for a in v.extra_args or ()),
        field="extraArgs",
    )


class Vllm(ApiModel):
    """Flags of `vllm serve`, typed. Anything else goes in extraArgs."""

    rules = tuple(_managed_flag_rule(flags, hint) for flags, hint in MANAGED_FLAGS)

    served_model_name: Annotated[str | None, Field(min_length=1, max_length=253)] = None
    """The name clients put in `model`. Default: the OpenSourceModel's name."""
    max_model_len: Annotated[int | None, Field(ge=16, le=10485760)] = None
    """Context length. Default: the model's own."""
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = None
    quantization: Literal["awq", "gptq", "fp8", "compressed-tensors", "awq_marlin", "gptq_marlin"] | None = (
        None
    )
    """A quantization method of the vLLM version moorage is tested with (moorage.plan.config)."""
    gpu_memory_utilization: Annotated[float | None, Field(gt=0, le=1)] = None
    """Fraction of each GPU's memory vLLM may use. vLLM's default is 0.9."""
    tensor_parallel_size: Annotated[int | None, Field(ge=1, le=64)] = None
    """Default: serving.gpus."""
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256, 320, 512] | None = None
    """The largest LoRA rank spec.adapters may hold (vLLM's --max-lora-rank; it reserves memory for it).
    Default 16, or the fine-tuned adapter's rank when larger."""
    extra_args: Annotated[list[Annotated[str, Field(max_length=1024)]] | None, Field(max_length=64)] = None
    """Appended to the command line as written, e.g. [--enable-prefix-caching]. Flags moorage manages
    (--port, --served-model-name, --tensor-parallel-size, --enable-lora, ...) are refused: use the typed
    field instead."""


class Rollout(ApiModel):
    """How a change of spec replaces running replicas."""

    rules = (
        Rule(
            cel="(has(self.maxSurge) ? self.maxSurge : 1)"
            " + (has(self.maxUnavailable) ? self.maxUnavailable : 0) > 0",
            message="maxSurge and maxUnavailable must not both be 0: a rollout could never start",
            check=lambda r: r.surge() + r.unavailable() > 0,
        ),
    )

    max_surge: Annotated[int | None, Field(ge=0, le=100)] = None
    """Extra replicas allowed during a rollout. Default 1: capacity never drops."""
    max_unavailable: Annotated[int | None, Field(ge=0, le=100)] = None
    """Replicas that may be missing during a rollout. Default 0."""
    progress_deadline_seconds: Annotated[int | None, Field(ge=60, le=86400)] = None
    """How long a rollout may make no progress before it counts as failed (rolled back, or Stalled with
    autoRollback: false). Default 1800: big models load slowly."""
    auto_rollback: bool | None = None
    """Default true: a rollout that fails (its deadline passes, or its new pods crash-loop) is undone on its
    own: the operator restores the last revision that was Ready and does not try the failed one again
    until the spec changes. false: the failed rollout stays as it is, and the model Stalled, for a person
    to look at."""

    def surge(self) -> int:
        return 1 if self.max_surge is None else self.max_surge

    def unavailable(self) -> int:
        return 0 if self.max_unavailable is None else self.max_unavailable

    def deadline(self) -> int:
        return 1800 if self.progress_deadline_seconds is None else self.progress_deadline_seconds

    def rolls_back(self) -> bool:
        return self.auto_rollback is not False


class Resources(ApiModel):
    """CPU and memory requested by each serving pod, besides its GPUs. Unset, they are sized from the
    model (see docs/reference.md#serving-resources)."""

    cpu: Quantity | None = None
    """Default: 2 per GPU, or 1 on CPU."""
    memory: Quantity | None = None
    """Default: the weights' share of each replica plus 4 GiB; on CPU the weights, the KV cache and 2 GiB.
    When set, it is also the limit."""


class AutoscalingTarget(ApiModel):
    """The load each replica should carry, from vLLM's own metrics. Set one; default waitingRequests: 2."""

    rules = (
        Rule(
            cel="!(has(self.waitingRequests) && has(self.kvCacheUsage))",
            message="set one target: waitingRequests or kvCacheUsage",
            check=lambda t: t.waiting_requests is None or t.kv_cache_usage is None,
        ),
    )

    waiting_requests: Annotated[int | None, Field(ge=1, le=10000)] = None
    """Requests waiting in vLLM's queue per replica (vllm:num_requests_waiting): a replica whose batch is
    full queues the rest, so a queue that grows means too few replicas."""
    kv_cache_usage: Annotated[float | None, Field(gt=0, le=1)] = None
    """Fraction of the KV cache in use, averaged over the replicas (vllm:kv_cache_usage_perc), e.g. 0.8."""

    def metric(self) -> tuple[str, float]:
        """vLLM's metric and the value per replica to hold it at."""
        if self.kv_cache_usage is not None:
            return "vllm:kv_cache_usage_perc", self.kv_cache_usage
        return "vllm:num_requests_waiting", self.waiting_requests or DEFAULT_WAITING_REQUESTS


DEFAULT_WAITING_REQUESTS = 2


class ColdStart(ApiModel):
    """How the activator holds requests for a model at zero replicas while one starts (minReplicas: 0)."""

    hold_timeout_seconds: Annotated[int | None, Field(ge=1, le=3600)] = None
    """How long a request waits for a replica before it is answered 503 with Retry-After. Default 600: a
    vLLM replica loads its weights in a minute or more (see docs/autoscaling.md for measured numbers)."""
    max_queued: Annotated[int | None, Field(ge=1, le=10000)] = None
    """How many requests are held at once for this model; one more is answered 503 at once. Default 100."""

    def hold_timeout(self) -> int:
        return (
            DEFAULT_HOLD_TIMEOUT_SECONDS if self.hold_timeout_seconds is None else self.hold_timeout_seconds
        )

    def queue_bound(self) -> int:
        return DEFAULT_MAX_QUEUED if self.max_queued is None else self.max_queued


DEFAULT_HOLD_TIMEOUT_SECONDS = 600
DEFAULT_MAX_QUEUED = 100


class Autoscaling(ApiModel):
    """Replicas follow vLLM's load through a KEDA ScaledObject (KEDA and a Prometheus that scrapes the vLLM
    pods must be installed). While it is on, the autoscaler owns the Deployment's replicas and
    serving.replicas is not used."""

    rules = (
        Rule(
            cel="(has(self.minReplicas) ? self.minReplicas : 1) <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            check=lambda a: a.min_count() <= a.max_replicas,
            field="minReplicas",
        ),
        Rule(
            cel="!has(self.coldStart) || (has(self.minReplicas) && self.minReplicas == 0)",
            message="coldStart has a meaning only with minReplicas: 0 (scale to zero)",
            check=lambda a: a.cold_start is None or a.min_count() == 0,
            field="coldStart",
        ),
    )

    min_replicas: Annotated[int | None, Field(ge=0, le=1000)] = None
    """Default 1. 0: an idle model scales to zero, and moorage's activator holds the requests that come
    then while a replica starts (see coldStart and docs/autoscaling.md)."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    target: AutoscalingTarget = AutoscalingTarget()
    scale_up_window_seconds: Annotated[int | None, Field(ge=0, le=3600)] = None
    """How long the load must stay high before replicas are added (the HPA's scale-up stabilization
    window). Default 0: at once."""
    scale_down_window_seconds: Annotated[int | None, Field(ge=0, le=3600)] = None
    """How long the load must stay low before replicas are removed. Default 300: a replica takes minutes to
    load its weights, so it is not given up for a short lull. With minReplicas: 0 also how long a model
    must be idle before it goes to zero (KEDA's cooldownPeriod)."""
    cold_start: ColdStart | None = None
    """Only with minReplicas: 0: how requests are held while the model comes back from zero."""

    @property
    def to_zero(self) -> bool:
        return self.min_count() == 0

    def holding(self) -> "ColdStart":
        return self.cold_start or ColdStart()

    def min_count(self) -> int:
        return 1 if self.min_replicas is None else self.min_replicas

    def up_window(self) -> int:
        return 0 if self.scale_up_window_seconds is None else self.scale_up_window_seconds

    def down_window(self) -> int:
        return 300 if self.scale_down_window_seconds is None else self.scale_down_window_seconds


_ON_CPU = "(has(self.gpus) && self.gpus == 0)"


class Serving(ApiModel):
    """How the model is served: vLLM pods behind a Service."""

    rules = (
        Rule(
            cel="!has(self.vllm) || !has(self.vllm.tensorParallelSize)"
            " || self.vllm.tensorParallelSize <= (has(self.gpus) ? (self.gpus > 0 ? self.gpus : 1) : 1)",
            message="vllm.tensorParallelSize cannot exceed gpus: each shard needs a GPU of its own",
            check=lambda s: s.tensor_parallel_size() <= max(s.gpus, 1),
            field="vllm",
        ),
        Rule(
            cel=f"!{_ON_CPU} || !has(self.gpuProfile)",
            message="gpuProfile has no meaning with gpus: 0 (served on CPU); size it with resources.memory",
            check=lambda s: not s.on_cpu or s.gpu_profile is None,
            field="gpuProfile",
        ),
        Rule(
            cel=f"!{_ON_CPU} || !has(self.vllm) || !has(self.vllm.gpuMemoryUtilization)",
            message="vllm.gpuMemoryUtilization has no meaning with gpus: 0 (served on CPU)",
            check=lambda s: not s.on_cpu or s.vllm.gpu_memory_utilization is None,
            field="vllm",
        ),
    )

    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Also the scale subresource: kubectl scale osm/<name> --replicas=3. Not used while autoscaling is on."""
    autoscaling: Autoscaling | None = None
    """Scale on vLLM's queue or KV-cache usage with KEDA, between minReplicas and maxReplicas."""
    gpus: Annotated[int, Field(ge=0, le=64)] = 1
    """GPUs per replica. 0 serves on CPU with vLLM's CPU build (the operator's --vllm-cpu-image): small
    models, CI and edge clusters."""
    gpu_resource_name: Annotated[str, Field(pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$", max_length=253)] = (
        "nvidia.com/gpu"
    )
    """The extended resource the GPU device plugin advertises; pods also tolerate the taint of that name."""
    gpu_profile: Annotated[str | None, Field(max_length=63)] = None
    """Which GPU the pods get (e.g. nvidia-l4, nvidia-h100-80gb), for the check that the weights fit.
    Default: the operator's --default-gpu-profile."""
    image: Annotated[str | None, Field(max_length=512)] = None
    """The vLLM image. Default: the operator's --vllm-image, or --vllm-cpu-image with gpus: 0."""
    resources: Resources | None = None
    scheduling: Scheduling | None = None
    vllm: Vllm = Vllm()
    rollout: Rollout = Rollout()

    @property
    def on_cpu(self) -> bool:
        return self.gpus == 0

    def tensor_parallel_size(self) -> int:
        return self.vllm.tensor_parallel_size or max(self.gpus, 1)


class Cache(ApiModel):
    """The volume the weights are pulled into, shared by every model that uses the same weights."""

    storage_class_name: Annotated[str | None, Field(max_length=253)] = None
    """Default: the cluster's default StorageClass."""
    size: Quantity | None = None
    """Default: the size of the files, plus room for adapters and datasets."""
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] | None = None
    """Default ReadWriteMany, so replicas on several nodes can mount it. Use ReadWriteOnce where the
    storage class offers nothing else and all replicas fit on one node."""


ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


_ON_CLAIM = "self.uri.startsWith('pvc://')"


class AdapterSource(ApiModel):
    """A LoRA adapter served beside the base weights, under a model name of its own."""

    rules = (
        _uri_rule(
            ADAPTER_URI_PATTERN,
            "must be hf://<org>/<name> (an adapter repository on the hub) or pvc://<claim>/<path> (a "
            "directory on a PersistentVolumeClaim in the model's namespace, the path relative to its root)",
        ),
        Rule(
            cel=f"!{_ON_CLAIM} || !self.uri.matches('{PARENT_SEGMENT}')",
            message="the path of a pvc:// uri must stay inside its claim: no .. segment",
            check=lambda a: a.claim is None or re.search(PARENT_SEGMENT, a.uri) is None,
            field="uri",
        ),
        Rule(
            cel=f"!{_ON_CLAIM} || !has(self.revision)",
            message="revision is for hf:// adapters: a pvc:// adapter is addressed by the content of its "
            "files (status.adapters[].digest); leave revision out",
            check=lambda a: a.claim is None or "revision" not in a.model_fields_set,
            field="revision",
        ),
    )

    name: Annotated[str, Field(pattern=ADAPTER_NAME, max_length=63)]
    """The model name clients ask for (`model` in the OpenAI API)."""
    uri: Annotated[str, Field(max_length=512, pattern=MODEL_URI_PATTERN)]
    """hf://<org>/<name>: a PEFT LoRA repository (adapter_config.json, adapter_model.safetensors), pulled
    into the model's weights volume like the base (verified, resumable, shared by every model using it).
    pvc://<claim>/<path>: a directory holding those two files on a PersistentVolumeClaim in the model's
    namespace, copied onto the weights volume under the digest of its files."""
    revision: Annotated[str, Field(min_length=1, max_length=255, pattern=REVISION_PATTERN)] = "main"
    """Branch, tag or commit sha of an hf:// adapter, pinned to a commit like the base's."""

    @property
    def claim(self) -> str | None:
        """The PersistentVolumeClaim of a pvc://<claim>/<path> adapter; None for one on the hub."""
        return claim_path(self.uri)[0] if self.uri.startswith("pvc://") else None


def claim_path(uri: str) -> tuple[str, str]:
    """pvc://<claim>/<path> → (claim, path)."""
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path


_UNIQUE_ADAPTERS = Rule(
    cel="!has(self.adapters) || self.adapters.all(a, self.adapters.exists_one(b, b.name == a.name))",
    message="adapters: each name once",
    check=lambda s: len({a.name for a in s.adapters or ()}) == len(s.adapters or ()),
    field="adapters",
)


MODEL_NAME = "model-name"
"""Validation context key: the model's metadata.name, which the fine-tuned adapter's default name uses."""
ADAPTER_NAMES_MESSAGE = (
    "must not reuse the name of the fine-tuned adapter (spec.fineTune.adapterName, default <model name>-ft)"
)
ADAPTER_NAMES_RULE = {
    # On the object's root: only there may CEL read metadata.name.
    # The name is made once, then looked up: made per entry, it would cost more than the API server allows
    # (metadata.name has no bound in the schema).
    "rule": "!has(self.spec.fineTune) || !has(self.spec.adapters) || !((has(self.spec.fineTune.adapterName)"
    " ? self.spec.fineTune.adapterName : self.metadata.name + '-ft') in self.spec.adapters.map(a, a.name))",
    "message": f"spec.adapters {ADAPTER_NAMES_MESSAGE}",
    "fieldPath": ".spec.adapters",
}


class OpenSourceModelSpec(ApiModel):
    """An open-source model, served by vLLM and optionally fine-tuned first."""

    rules = (_UNIQUE_ADAPTERS,)

    source: Source
    serving: Serving = Serving()
    cache: Cache = Cache()
    fine_tune: FineTune | None = None
    """Train a LoRA adapter first, then serve base + adapter."""
    adapters: Annotated[list[AdapterSource] | None, Field(max_length=32)] = None
    """LoRA adapters served beside the base (and the fine-tuned adapter), each under its own name. Adding
    or removing one restarts no pod: vLLM loads an adapter on its first request from the weights volume.
    Setting the list for the first time (even to []) rolls the pods once, to serve adapters at all."""
    gateway: Gateway | None = None
    """Plug the model into an inference gateway: an InferencePool (and optionally an HTTPRoute) where the
    Gateway API Inference Extension is installed. See docs/gateway.md."""

    @model_validator(mode="after")
    def _adapter_names_free(self, info: ValidationInfo) -> Self:
        """ADAPTER_NAMES_RULE, which needs the model's name (given in the context, as the cluster has it)."""
        model_name = (info.context or {}).get(MODEL_NAME)
        if model_name and self.fine_tune and self.adapters:
            taken = self.fine_tune.served_name(model_name)
            if any(a.name == taken for a in self.adapters):
                raise PydanticCustomError(
                    "rule", "{message}", {"message": ADAPTER_NAMES_MESSAGE, "field": "adapters"}
                )
        return self

    @classmethod
    def from_manifest(cls, raw: Any, model_name: str | None = None) -> "OpenSourceModelSpec":
        """A spec as the API server takes it, so `moorage render` refuses what `kubectl apply` refuses:
        camelCase keys only, no coercion ("yes" is not a boolean, 1 not a string), and the cluster's
        rules (a dataset is hf:// or pvc://; the fine-tune program alone also takes a path; with the
        model's name, the rules of the object's root)."""
        context = {IN_CLUSTER: True, MODEL_NAME: model_name}
        return cls.model_validate(raw, strict=True, by_alias=True, by_name=False, context=context)
