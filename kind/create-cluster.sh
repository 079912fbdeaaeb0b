#!/usr/bin/env bash
# Create the kind cluster from kind/cluster.yaml (no-op when it exists).
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need kind docker kubectl

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  log "kind cluster '$CLUSTER_NAME' exists"
else
  log "creating kind cluster '$CLUSTER_NAME'"
  args=(create cluster --name "$CLUSTER_NAME" --config "$KIND_DIR/cluster.yaml" --wait "$TIMEOUT")
  if [ -n "${KIND_NODE_IMAGE:-}" ]; then
    args+=(--image "$KIND_NODE_IMAGE")
  fi
  kind "${args[@]}"
fi
kc cluster-info >/dev/null
