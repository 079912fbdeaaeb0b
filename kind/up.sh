#!/usr/bin/env bash
# Everything, in order: cluster, image, chart, labelled namespace, example MCP server.
set -euo pipefail
here="$(dirname "$0")"
"$here/create-cluster.sh"
"$here/build-image.sh"
"$here/install-chart.sh"
"$here/deploy-example.sh"
