#!/usr/bin/env bash
# Install (or upgrade) charts/palisade with kind/values.yaml.
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need helm kubectl

args=(
  upgrade --install "$RELEASE" "$REPO_ROOT/charts/palisade"
  --kube-context "$KUBE_CONTEXT"
  --namespace "$PALISADE_NAMESPACE" --create-namespace
  --values "$KIND_DIR/values.yaml"
  --set "image.repository=$(image_repository)"
  --set-string "image.tag=$(image_tag)"
)
if [ "$WAIT" = "true" ]; then
  args+=(--wait --timeout "$TIMEOUT")
fi
# kind/values.yaml puts a NetworkPolicy into the demo namespace: it must exist first.
log "creating the demo namespace (kind/manifests/namespace.yaml)"
kc apply --server-side --field-manager=palisade-kind -f "$KIND_DIR/manifests/namespace.yaml"

log "installing chart release '$RELEASE' into namespace '$PALISADE_NAMESPACE'"
helm "${args[@]}"
