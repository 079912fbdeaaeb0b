#!/usr/bin/env bash
# Install (or upgrade) charts/palisade with kind/values.yaml: the injector and the
# distributor, which signs $BUNDLE_FILE with the key in Secret $SIGNING_SECRET and
# pushes it to every injected sidecar; the sidecars trust the public half
# (distributor.publicKeys). Run kind/signing-key.sh first.
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need helm kubectl
KEYS_DIR="$(keys_dir)"

public="$KEYS_DIR/$KEY_NAME.pub"
[ -s "$public" ] || die "no public key $public: run kind/signing-key.sh first"
[ -s "$BUNDLE_FILE" ] || die "no policy bundle $BUNDLE_FILE (set BUNDLE_FILE)"

args=(
  upgrade --install "$RELEASE" "$REPO_ROOT/charts/palisade"
  --kube-context "$KUBE_CONTEXT"
  --namespace "$PALISADE_NAMESPACE" --create-namespace
  --values "$KIND_DIR/values.yaml"
  --set "image.repository=$(image_repository)"
  --set-string "image.tag=$(image_tag)"
  --set "distributor.signingKeySecret=$SIGNING_SECRET"
  --set-file "distributor.publicKeys[0]=$public"
  --set-file "distributor.policyFiles.$(basename "${BUNDLE_FILE%.*}")\\.yaml=$BUNDLE_FILE"
)
if [ "$WAIT" = "true" ]; then
  args+=(--wait --timeout "$TIMEOUT")
fi
# kind/values.yaml puts a NetworkPolicy into the demo namespace: it must exist first.
log "creating the demo namespace (kind/manifests/namespace.yaml)"
kc apply --server-side --field-manager=palisade-kind -f "$KIND_DIR/manifests/namespace.yaml"

log "installing chart release '$RELEASE' into namespace '$PALISADE_NAMESPACE'"
helm "${args[@]}"
