#!/usr/bin/env bash
# The real Kubernetes MCP server (github.com/containers/kubernetes-mcp-server), the
# upstream of the worked example: its Linux binary ships in the npm package
# kubernetes-mcp-server-linux-amd64 (the package kubernetes-mcp-server only picks
# the binary package for the platform). Fetched with `npm pack`, checked against the
# pinned sha512 integrity (the one the registry publishes in dist.integrity), then
# only bin/kubernetes-mcp-server-linux-amd64 is unpacked into
# ${PALISADE_CACHE:-$HOME/.cache/palisade}/npm/kubernetes-mcp-server-<version>/kubernetes-mcp-server
# and ${PALISADE_CACHE}/npm/current-kubernetes-mcp-server names it. Returns at once
# when already there. Used by tests/kube_mcp and by the image
# palisade-kubernetes-mcp (images/definition.py).
#
# Environment:
#   PALISADE_CACHE                  cache root (default ~/.cache/palisade)
#   PALISADE_SKIP_KUBE_MCP=1        skip (the tests that need it then fail with
#                                   "run make setup")
set -euo pipefail

# Pinned together: a new version needs its integrity from
# `npm view kubernetes-mcp-server-linux-amd64@<version> dist.integrity`.
VERSION="0.0.67"
INTEGRITY="sha512-VW5wRdetbJmfCHkCEBA808bgJJRL1GCfkSZ17J+SJJuNiKcvjibcGR32272WKtwd3Td4ZVrOPomExKgCNE16jA=="
PKG="kubernetes-mcp-server-linux-amd64"

if [ "${PALISADE_SKIP_KUBE_MCP:-0}" = "1" ]; then
  echo "setup: kubernetes-mcp-server skipped (PALISADE_SKIP_KUBE_MCP=1)"
  exit 0
fi

cache_root="${PALISADE_CACHE:-$HOME/.cache/palisade}"
dest="$cache_root/npm/kubernetes-mcp-server-$VERSION"
bin="$dest/kubernetes-mcp-server"
pointer="$cache_root/npm/current-kubernetes-mcp-server"

if [ -x "$bin" ]; then
  printf '%s\n' "$bin" >"$pointer"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "setup: 52-kubernetes-mcp-server pins only linux/amd64" >&2; exit 1 ;;
esac
for tool in npm node tar; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "setup: 52-kubernetes-mcp-server needs '$tool' on PATH" >&2
    exit 1
  }
done

mkdir -p "$cache_root/npm"
tmp="$(mktemp -d "$cache_root/npm/.kubernetes-mcp-server.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent --loglevel=error "$PKG@$VERSION" >/dev/null)
tarball="$tmp/$PKG-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "setup: $PKG@$VERSION integrity mismatch: got $got, pinned $INTEGRITY" >&2
  exit 1
fi
mkdir -p "$tmp/out"
tar -xzf "$tarball" -C "$tmp/out" "package/bin/$PKG" package/package.json
chmod 0755 "$tmp/out/package/bin/$PKG"
reported="$("$tmp/out/package/bin/$PKG" --version)"
[ "$reported" = "v$VERSION" ] || {
  echo "setup: $PKG@$VERSION reports '$reported'" >&2
  exit 1
}
mkdir -p "$tmp/dest"
mv "$tmp/out/package/bin/$PKG" "$tmp/dest/kubernetes-mcp-server"
mv "$tmp/out/package/package.json" "$tmp/dest/package.json"
printf '%s\n' "$INTEGRITY" >"$tmp/dest/integrity"
rm -rf "$dest"
mv "$tmp/dest" "$dest"
printf '%s\n' "$bin" >"$pointer"
echo "setup: kubernetes-mcp-server $VERSION installed -> $bin"
