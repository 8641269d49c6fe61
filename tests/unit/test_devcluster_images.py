"""The real node's image archives and iptables rule parsing, without a node."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from moorage.devcluster.hostnet import cni_config, foreign_jump
from moorage.devcluster.images import _repository, archive_images, write_scratch_image


def test_scratch_images_are_reproducible_oci_archives(tmp_path: Path) -> None:
    binary = tmp_path / "probe"
    binary.write_bytes(b"\x7fELF not really")
    first = write_scratch_image(
        tmp_path / "a.tar", "localhost/moorage/probe:dev", binary, entrypoint=["/probe"]
    )
    second = write_scratch_image(
        tmp_path / "b.tar", "localhost/moorage/probe:dev", binary, entrypoint=["/probe"]
    )
    assert first.read_bytes() == second.read_bytes()
    names = archive_images(first)
    assert list(names) == ["localhost/moorage/probe:dev"]
    with tarfile.open(first) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest_blob = "blobs/sha256/" + names["localhost/moorage/probe:dev"].removeprefix("sha256:")
        manifest = json.loads(tar.extractfile(manifest_blob).read())  # type: ignore[union-attr]
        layer = tar.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"].removeprefix("sha256:"))
        assert layer is not None
        with tarfile.open(fileobj=layer) as rootfs:
            member = rootfs.getmember("probe")
            assert member.mode == 0o755
    assert index["manifests"][0]["digest"] == names["localhost/moorage/probe:dev"]


def test_docker_archives_have_no_digest_to_compare(tmp_path: Path) -> None:
    archive = tmp_path / "docker.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path, arcname="manifest.json", recursive=False)
    assert archive_images(archive) == {}


def test_only_jumps_from_foreign_chains_into_ours_are_deleted_one_by_one() -> None:
    rule = '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    assert foreign_jump(rule) == [
        "PREROUTING",
        "-m",
        "comment",
        "--comment",
        "kubernetes service portals",
        "-j",
        "KUBE-SERVICES",
    ]
    assert foreign_jump("-A KUBE-SERVICES -j KUBE-NODEPORTS") is None  # flushed with its chain
    assert foreign_jump("-A FORWARD -j ACCEPT") is None  # not ours
    assert foreign_jump("-N KUBE-SERVICES") is None


def test_pods_are_not_masqueraded_and_keep_their_ipam_state_in_the_node_dir(tmp_path: Path) -> None:
    config = cni_config(tmp_path / "ipam")
    bridge = config["plugins"][0]  # type: ignore[index]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")


def test_the_repository_of_an_image_name_keeps_a_registry_port() -> None:
    assert _repository("localhost/moorage/vllm-cpu:18c95c7f") == "localhost/moorage/vllm-cpu"
    assert _repository("localhost:5000/moorage/operator:v1") == "localhost:5000/moorage/operator"
    assert _repository("localhost:5000/moorage/operator") == "localhost:5000/moorage/operator"
