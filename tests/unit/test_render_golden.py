"""Golden files: what `moorage render` prints for each example. UPDATE_GOLDEN=1 rewrites them."""

import os
from pathlib import Path

import pytest

from moorage.cli import dump, load_models, render
from moorage.plan.config import PlanConfig

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_render_matches_golden(example: Path) -> None:
    rendered = dump(render(load_models(str(example)), PlanConfig(), resolve=False))
    golden = GOLDEN / f"{example.stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file for {example.name}: run with UPDATE_GOLDEN=1"
    assert rendered == golden.read_text()


def test_every_example_has_a_golden_file() -> None:
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == {p.stem for p in EXAMPLES}
