#!/usr/bin/env bash
# Shared settings and helpers for the kind/ scripts (sourced, not run).
# Every setting can be overridden from the environment.
# shellcheck disable=SC2034 # variables are used by the scripts that source this file

KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KIND_DIR/.." && pwd)"

CLUSTER_NAME="${CLUSTER_NAME:-palisade}"
KUBE_CONTEXT="${KUBE_CONTEXT:-kind-$CLUSTER_NAME}"
# How long `kind create cluster` waits for the control plane (a Go duration).
TIMEOUT="${TIMEOUT:-180s}"
# How long kind/agent-log.sh waits for the example agent's Job to finish (seconds).
JOB_TIMEOUT="${JOB_TIMEOUT:-300}"

# Not settings: the chart's default image is palisade:<appVersion> and the example
# manifests (examples/cluster/) name palisade-example-mcp:<appVersion>; the README's
# quick start uses both as they are. tests/kind checks that the three agree.
PALISADE_IMAGE="palisade:0.1.0"
EXAMPLE_IMAGE="palisade-example-mcp:0.1.0"

log() { printf '==> %s\n' "$*" >&2; }

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH; install it first (see docs/helm.md)"
  done
}

kc() { kubectl --context "$KUBE_CONTEXT" "$@"; }

# The README's quick-start commands (the block after <!-- quickstart -->), one per
# line, each quoted for the shell (shlex.join). Parsed by readme_commands() of
# tests/harness/quickstart.py, the parser `make cluster` uses, loaded by its path:
# it needs only the standard library, not the test packages.
readme_commands() {
  python3 - "$REPO_ROOT/tests/harness/quickstart.py" <<'PY'
import importlib.util
import shlex
import sys

spec = importlib.util.spec_from_file_location("palisade_quickstart", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
try:
    commands = module.readme_commands()
except module.QuickstartError as exc:
    sys.exit(f"error: {exc}")
for argv in commands:
    print(shlex.join(argv))
PY
}
