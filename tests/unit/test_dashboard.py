"""The Grafana dashboard (charts/moorage/dashboards/moorage-model.json) asks only for metrics that exist:
vLLM's, as the pinned vLLM defines them (its source, read from the contract test's venv), and the operator's
own (moorage.reconcile.metrics)."""

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from moorage.plan.config import VLLM_VERSION
from moorage.reconcile.metrics import Metrics

DASHBOARD = Path(__file__).parents[2] / "charts" / "moorage" / "dashboards" / "moorage-model.json"
METRIC = re.compile(r"\b(vllm:[a-z_:]+|moorage_[a-z_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def vllm_metric_names() -> set[str]:
    """Names vLLM's Prometheus logger registers, from the source of the pinned vLLM."""
    python = os.environ.get("MOORAGE_VLLM_PYTHON")
    venv = Path(python).parents[1] if python else Path.home() / ".cache" / "moorage" / f"vllm-{VLLM_VERSION}"
    sources = sorted(venv.glob("lib/python3*/site-packages/vllm/v1/metrics/loggers.py"))
    if not sources:
        pytest.skip(f"no vLLM {VLLM_VERSION} venv (tests/contract/setup_vllm.sh makes it): {venv}")
    return set(re.findall(r'name="(vllm:[a-z_:]+)"', sources[0].read_text()))


def operator_metric_names() -> set[str]:
    return {metric.name for metric in Metrics().registry.collect()}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_metric_of_the_dashboard_exists() -> None:
    used = {base_name(m) for expr in expressions(dashboard()) for m in METRIC.findall(expr)}
    vllm, ours = vllm_metric_names(), operator_metric_names()
    assert {m for m in used if m.startswith("vllm:")} - vllm == set()
    assert {m for m in used if m.startswith("moorage_")} - ours == set()


def test_the_panels_a_model_needs() -> None:
    board = dashboard()
    exprs = " ".join(expressions(board))
    for wanted in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "moorage_model_replicas",
        "moorage_model_ready_replicas",
    ):
        assert wanted in exprs, wanted
    [revisions] = [a for a in board["annotations"]["list"] if a.get("name") == "Revisions"]
    assert revisions["expr"].startswith("moorage_model_info{") and "{{revision}}" in revisions["titleFormat"]
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace", "model"}
    # Every panel asks the chosen data source, and every model query is scoped to the chosen model.
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            if "vllm:" in target["expr"]:
                assert 'namespace="$namespace", pod=~"$model-' in target["expr"], target["expr"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
