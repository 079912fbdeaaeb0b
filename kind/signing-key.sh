#!/usr/bin/env bash
# Generate the bundle-signing key pair (once; reused afterwards) and create the
# distributor's signing-key Secret from its private half. The public half goes to
# the chart as distributor.publicKeys (kind/install-chart.sh), so every injected
# sidecar verifies what the distributor pushes.
# `palisade keys generate` runs from PATH, else from the image ($IMAGE) with Docker.
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need kubectl
KEYS_DIR="$(keys_dir)"

private="$KEYS_DIR/$KEY_NAME.key"
public="$KEYS_DIR/$KEY_NAME.pub"
if [ -s "$private" ] && [ -s "$public" ]; then
  log "reusing the bundle-signing key pair in $KEYS_DIR"
else
  log "generating a bundle-signing key pair in $KEYS_DIR"
  mkdir -p "$KEYS_DIR"
  chmod 700 "$KEYS_DIR"
  if command -v palisade >/dev/null 2>&1; then
    palisade keys generate --out "$KEYS_DIR" --name "$KEY_NAME" >&2
  else
    need docker
    docker run --rm --user "$(id -u):$(id -g)" -v "$KEYS_DIR:/keys" "$IMAGE" \
      keys generate --out /keys --name "$KEY_NAME" >&2
  fi
  [ -s "$private" ] && [ -s "$public" ] || die "no key pair in $KEYS_DIR after 'palisade keys generate'"
fi

log "creating namespace '$PALISADE_NAMESPACE' and Secret '$SIGNING_SECRET' (key signing.pem)"
kc create namespace "$PALISADE_NAMESPACE" --dry-run=client -o yaml |
  kc apply --server-side --field-manager=palisade-kind -f - >/dev/null
# The key travels through a pipe, never through the command line or the log.
kc -n "$PALISADE_NAMESPACE" create secret generic "$SIGNING_SECRET" \
  --from-file=signing.pem="$private" --dry-run=client -o yaml |
  kc apply --server-side --field-manager=palisade-kind -f - >/dev/null
