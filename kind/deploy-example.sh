#!/usr/bin/env bash
# Label the demo namespace for injection and deploy the example MCP server into it;
# then show that its pod carries the Palisade sidecar, ready (the rollout waits for
# the sidecar's readiness, which needs a verified bundle from the distributor).
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need kubectl

log "creating namespace '$DEMO_NAMESPACE' and turning injection on"
if [ "$DEMO_NAMESPACE" = "payments" ]; then
  kc apply --server-side --field-manager=palisade-kind -f "$KIND_DIR/manifests/namespace.yaml"
else
  kc create namespace "$DEMO_NAMESPACE" --dry-run=client -o yaml | kc apply --server-side --field-manager=palisade-kind -f -
fi
kc label namespace "$DEMO_NAMESPACE" palisade.dev/inject=enabled --overwrite

log "deploying the example MCP server"
kc apply --server-side --field-manager=palisade-kind -n "$DEMO_NAMESPACE" \
  -f "$KIND_DIR/manifests/mcp-server.yaml"

if [ "$WAIT" != "true" ]; then
  exit 0
fi
kc -n "$DEMO_NAMESPACE" rollout status deploy/k8s-mcp --timeout "$TIMEOUT"
containers=$(kc -n "$DEMO_NAMESPACE" get pods -l palisade.dev/mcp-server \
  -o jsonpath='{range .items[*]}{.spec.initContainers[*].name} {.spec.containers[*].name}{"\n"}{end}')
log "containers of the MCP server pods: $containers"
case "$containers" in
  *palisade-sidecar*) log "the Palisade sidecar is in place and ready: it verified and activated the signed bundle from the distributor" ;;
  *) die "no palisade-sidecar in the MCP server pods; check the injector: kubectl -n $PALISADE_NAMESPACE logs deploy/$RELEASE-injector" ;;
esac
