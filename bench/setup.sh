#!/bin/sh
# The tools bench/pull.py compares and emulates a WAN with: aria2c and curl from apt, iproute2 for the
# network namespace and tc, and two Go programs built into ~/.cache/moorage/bin: pullnet (the file servers,
# bench/pullnet) and toxiproxy-server (latency and per-connection bandwidth). Needs root for apt-get.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin="$HOME/.cache/moorage/bin"
go=$(command -v go || echo /usr/local/go/bin/go)
mkdir -p "$bin"

missing=""
for tool in aria2c curl ip tc; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "== apt-get install aria2 curl iproute2 (missing:$missing)"
    apt-get install -y aria2 curl iproute2 >/dev/null 2>&1 || {
        apt-get update >/dev/null
        apt-get install -y aria2 curl iproute2 >/dev/null
    }
fi

echo "== pullnet"
(cd "$here/pullnet" && "$go" build -o "$bin/pullnet" .)

if [ ! -x "$bin/toxiproxy-server" ]; then
    echo "== toxiproxy-server (github.com/Shopify/toxiproxy/v2)"
    tmp=$(mktemp -d)
    GOBIN="$tmp" "$go" install github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0
    mv "$tmp/server" "$bin/toxiproxy-server"
    rmdir "$tmp"
fi
echo "== ready: $bin"
