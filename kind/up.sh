#!/usr/bin/env bash
# Everything, in order: the kind cluster, both images built and loaded, the README's
# quick start (the chart with its defaults, the example policy, the example MCP
# server with its sidecar, the agent Job), then the agent's log.
set -euo pipefail
here="$(dirname "$0")"
"$here/create-cluster.sh"
"$here/build-image.sh"
"$here/quickstart.sh"
"$here/agent-log.sh"
