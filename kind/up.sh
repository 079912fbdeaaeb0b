#!/usr/bin/env bash
# Everything, in order: cluster, image, signing key, chart (injector + distributor),
# labelled namespace, example MCP server (ready once its sidecar holds a signed bundle).
set -euo pipefail
here="$(dirname "$0")"
"$here/create-cluster.sh"
"$here/build-image.sh"
"$here/signing-key.sh"
"$here/install-chart.sh"
"$here/deploy-example.sh"
