#!/usr/bin/env bash
# Build the Palisade image from this checkout and load it into the kind nodes.
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need docker kind

log "building $IMAGE"
DOCKER_BUILDKIT=1 docker build -f "$KIND_DIR/Dockerfile" -t "$IMAGE" "$REPO_ROOT"
log "loading $IMAGE into kind cluster '$CLUSTER_NAME'"
kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"
