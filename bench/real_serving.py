"""The real serving path, timed: node start, image load, pull, CPU fine-tune, vLLM start and a rollout under
traffic with its failed requests, on the dev cluster's real node (root, Linux).

It runs tests/e2e/test_real_serving.py, which records each step, and prints the table. Images come from
images/build.sh (built, or found cached, first).

    sudo .venv/bin/python bench/real_serving.py
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = {
    "node_start_s": "real node start (containerd, kubelet, kube-proxy, CoreDNS)",
    "image_load_s": "load operator, finetune and vllm-cpu images into the node",
    "pull_s": "apply → weights pulled (WeightsReady)",
    "train_s": "apply → adapter trained on CPU (FineTuned)",
    "ready_s": "apply → vLLM serving base + adapter (Ready)",
    "rollout_s": "spec change → rolled out under traffic",
    "rollout_requests_ok": "requests answered during the rollout",
    "rollout_requests_failed": "requests failed during the rollout (goal 0)",
}


def main() -> int:
    listing = ROOT / ".work" / "images.txt"
    listing.parent.mkdir(exist_ok=True)
    with listing.open("w") as out:
        subprocess.run([str(ROOT / "images" / "build.sh")], stdout=out, check=True)
    env = {**os.environ, "MOORAGE_IMAGES": str(listing)}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-qs", "-p", "no:cacheprovider", "tests/e2e/test_real_serving.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"real serving timings: (\{.*?\})", run.stdout, re.S)
    if run.returncode != 0 or not found:
        print(run.stdout[-4000:], run.stderr[-2000:])
        return 1
    timings = json.loads(found.group(1))
    print(f"{'step':<62} value")
    for key, what in STEPS.items():
        print(f"{what:<62} {timings.get(key, '-')}")
    print(f"{'whole run (cluster, helm install, every test)':<62} {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
