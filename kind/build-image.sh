#!/usr/bin/env bash
# Build both images from kind/Dockerfile (docs/images.md, "Building with Docker")
# and load them into the kind nodes: palisade (injector, sidecar, distributor, node
# agent, palisade-init) and palisade-example-mcp (the example server and agent).
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need docker kind

cd "$REPO_ROOT"
build() {
  log "building $2 (kind/Dockerfile, target $1)"
  DOCKER_BUILDKIT=1 docker build -f kind/Dockerfile --target "$1" -t "$2" .
}
build palisade "$PALISADE_IMAGE"
build example-mcp "$EXAMPLE_IMAGE"

log "loading $PALISADE_IMAGE and $EXAMPLE_IMAGE into kind cluster '$CLUSTER_NAME'"
kind load docker-image "$PALISADE_IMAGE" "$EXAMPLE_IMAGE" --name "$CLUSTER_NAME"
