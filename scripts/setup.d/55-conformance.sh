#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance) from npm,
# used by tests/sidecar/conformance to run every server scenario direct and through
# the sidecar.
#
# Pinned to 0.1.13: later releases import fs.globSync, which needs Node >= 22; the
# machines here run Node 20. Override with PALISADE_CONFORMANCE_VERSION.
#
# Installed under ${PALISADE_CACHE:-$HOME/.cache/palisade}/conformance/<version>/;
# returns at once when already there.
#
# Environment:
#   PALISADE_CACHE              cache root (default ~/.cache/palisade)
#   PALISADE_SKIP_CONFORMANCE=1 skip (the conformance tests then fail with "run make setup")
set -euo pipefail

VERSION="${PALISADE_CONFORMANCE_VERSION:-0.1.13}"
PKG="@modelcontextprotocol/conformance"

if [ "${PALISADE_SKIP_CONFORMANCE:-0}" = "1" ]; then
  echo "setup: conformance suite skipped (PALISADE_SKIP_CONFORMANCE=1)"
  exit 0
fi

dest="${PALISADE_CACHE:-$HOME/.cache/palisade}/conformance/$VERSION"
entry="$dest/node_modules/$PKG/dist/index.js"
[ -f "$entry" ] && exit 0

for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "setup: 55-conformance needs '$tool' on PATH (Node.js 20 or later)" >&2
    exit 1
  }
done

echo "setup: installing $PKG@$VERSION into $dest"
mkdir -p "$dest"
tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp"
  echo '{"name":"palisade-conformance","private":true}' >package.json
  npm install --no-audit --no-fund --loglevel=error "$PKG@$VERSION" >/dev/null
)
rm -rf "$dest/node_modules"
mv "$tmp/node_modules" "$tmp/package.json" "$dest/"
[ -f "$entry" ] || { echo "setup: $PKG@$VERSION did not install $entry" >&2; exit 1; }
echo "setup: conformance suite ready ($entry)"
