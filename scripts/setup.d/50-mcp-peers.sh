#!/usr/bin/env bash
# MCP peers the sidecar's e2e tests talk to: @modelcontextprotocol/server-everything
# (the reference server, run in streamableHttp and sse modes), installed with npm
# into ${PALISADE_CACHE:-$HOME/.cache/palisade}/npm/<version>/ and pointed at by
# ${PALISADE_CACHE}/npm/current-everything. Returns at once when already installed.
#
# Environment:
#   PALISADE_CACHE                 cache root (default ~/.cache/palisade)
#   PALISADE_EVERYTHING_VERSION    package version (default pinned below)
#   PALISADE_SKIP_MCP_PEERS=1      skip (the tests that need the peer then fail
#                                  with a clear "run make setup" message)
set -euo pipefail

VERSION="${PALISADE_EVERYTHING_VERSION:-2026.8.31}"
PKG="@modelcontextprotocol/server-everything"

if [ "${PALISADE_SKIP_MCP_PEERS:-0}" = "1" ]; then
  echo "setup: MCP peers skipped (PALISADE_SKIP_MCP_PEERS=1)"
  exit 0
fi

cache_root="${PALISADE_CACHE:-$HOME/.cache/palisade}"
dest="$cache_root/npm/everything-$VERSION"
entry="$dest/node_modules/$PKG/dist/index.js"

if [ -f "$entry" ]; then
  printf '%s\n' "$entry" >"$cache_root/npm/current-everything"
  exit 0
fi

command -v npm >/dev/null 2>&1 || {
  echo "setup: 50-mcp-peers needs npm (Node.js 18+) on PATH" >&2
  exit 1
}

mkdir -p "$dest.tmp"
(
  cd "$dest.tmp"
  [ -f package.json ] || echo '{"name":"palisade-mcp-peers","private":true}' >package.json
  npm install --silent --no-audit --no-fund --loglevel=error "$PKG@$VERSION" >/dev/null
)
rm -rf "$dest"
mv "$dest.tmp" "$dest"
if [ ! -f "$entry" ]; then
  entry="$(find "$dest/node_modules/$PKG" -maxdepth 2 -name index.js | head -1)"
fi
printf '%s\n' "$entry" >"$cache_root/npm/current-everything"
echo "setup: $PKG@$VERSION installed -> $dest"
