"""The fine-tune path: a Job that trains a LoRA adapter onto the weights volume, content-addressed."""

import json
from typing import Any

from moorage.api.layout import WEIGHTS_MOUNT, adapter_dir, content_hash
from moorage.api.model import OpenSourceModel
from moorage.api.resolved import ResolvedSource
from moorage.plan.config import PlanConfig
from moorage.plan.jobs import job_spec
from moorage.plan.meta import Manifest, child, labels, truncate_name
from moorage.plan.placement import place
from moorage.plan.security import container_security_context, pod_security_context
from moorage.plan.serving import Adapter
from moorage.plan.weights import claim_name, pull_container, snapshot_path

SPEC_ANNOTATION = "moorage.dev/finetune-spec"
SPEC_DIR = "/etc/moorage"
PVC_ROOT = f"{WEIGHTS_MOUNT}/pvc"
"""pvc://claim/path datasets are mounted at PVC_ROOT/claim; the fine-tune program looks there."""


def adapter_id(model: OpenSourceModel, base: ResolvedSource, dataset: ResolvedSource | None) -> str:
    """Same base, same data, same settings: same adapter, never trained twice."""
    assert model.spec.fine_tune is not None
    spec = model.spec.fine_tune
    trained_on = {
        k: v for k, v in spec.wire().items() if k not in ("resources", "scheduling", "image", "adapterName")
    }
    data_revision = dataset.sha if dataset else spec.dataset.revision
    return content_hash(base.repo_id, base.sha, data_revision, trained_on, length=12)


def adapter(model: OpenSourceModel, base: ResolvedSource, dataset: ResolvedSource | None) -> Adapter:
    assert model.spec.fine_tune is not None
    spec = model.spec.fine_tune
    path = str(adapter_dir(WEIGHTS_MOUNT, adapter_id(model, base, dataset)))
    return Adapter(spec.served_name(model.metadata.name), path, spec.lora.r)


def job_name(model: OpenSourceModel, base: ResolvedSource, dataset: ResolvedSource | None) -> str:
    return truncate_name(model.metadata.name, f"finetune-{adapter_id(model, base, dataset)}")


def finetune_job(
    model: OpenSourceModel, base: ResolvedSource, dataset: ResolvedSource | None, config: PlanConfig
) -> Manifest:
    assert model.spec.fine_tune is not None
    spec = model.spec.fine_tune
    trained = adapter(model, base, dataset)
    gpus = spec.resources.gpus
    mounts: list[dict[str, Any]] = [
        {"name": "weights", "mountPath": str(WEIGHTS_MOUNT)},
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "weights", "persistentVolumeClaim": {"claimName": claim_name(model, base)}},
        {
            "name": "spec",
            "downwardAPI": {
                "items": [
                    {
                        "path": "finetune.json",
                        "fieldRef": {"fieldPath": f"metadata.annotations['{SPEC_ANNOTATION}']"},
                    }
                ]
            },
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    claim = spec.dataset.claim
    if claim:
        mounts.append({"name": "dataset", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
        volumes.append({"name": "dataset", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    if gpus:
        # /dev/shm for the data loader workers and NCCL between ranks.
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{2 * gpus}Gi"}})
    program = [
        "--base",
        snapshot_path(base),
        "--spec",
        f"{SPEC_DIR}/finetune.json",
        "--output",
        trained.path,
        "--data-root",
        str(WEIGHTS_MOUNT),
    ]
    requests: dict[str, str] = {}
    if gpus:
        requests[model.spec.serving.gpu_resource_name] = str(gpus)
    if spec.resources.cpu:
        requests["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        requests["memory"] = spec.resources.memory
    limits = {k: v for k, v in requests.items() if k != "cpu"}
    env = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HOME", "value": "/tmp"}]
    container = {
        "name": "finetune",
        "image": spec.image or config.finetune_image,
        "command": ["moorage", "finetune"],  # it starts one worker per GPU itself
        "args": program,
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    init_containers = []
    if dataset:
        init_containers.append(pull_container("pull-dataset", dataset, [], model, config))
    pod_spec = place(
        {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pod_security_context(),
            "initContainers": init_containers,
            "containers": [container],
            "volumes": volumes,
        },
        spec.scheduling or model.spec.serving.scheduling,
        model.spec.serving.gpu_resource_name if gpus else None,
    )
    job_labels = labels(model, "finetune")
    pod_annotations = {SPEC_ANNOTATION: json.dumps(spec.wire(), sort_keys=True)}
    body = {
        "spec": job_spec("finetune", pod_spec, job_labels, backoff_limit=3, pod_annotations=pod_annotations)
    }
    annotations = {"moorage.dev/adapter": trained.served_name, "moorage.dev/adapter-path": trained.path}
    return child(
        model,
        api_version="batch/v1",
        kind="Job",
        name=job_name(model, base, dataset),
        labels_=job_labels,
        body=body,
        annotations=annotations,
    )
