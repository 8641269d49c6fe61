"""`moorage demo --exit` as a user runs it, on fake nodes. Its real-node path serves as test_real_serving.py
does; a machine holds one real node, and the session's real_cluster has it."""

import subprocess
import sys

import pytest


@pytest.mark.cluster
def test_demo_on_fake_nodes_goes_ready_and_stops() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "demo", "--exit", "--no-real"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Ready; stopping (--exit)" in result.stdout
    assert "tiny-llama" in result.stdout
