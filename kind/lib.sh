#!/usr/bin/env bash
# Shared settings and helpers for the kind/ scripts (sourced, not run).
# Every setting can be overridden from the environment.
# shellcheck disable=SC2034 # variables are used by the scripts that source this file

KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KIND_DIR/.." && pwd)"

CLUSTER_NAME="${CLUSTER_NAME:-palisade}"
KUBE_CONTEXT="${KUBE_CONTEXT:-kind-$CLUSTER_NAME}"
IMAGE="${IMAGE:-palisade:0.1.0}"
RELEASE="${RELEASE:-palisade}"
PALISADE_NAMESPACE="${PALISADE_NAMESPACE:-palisade}"
DEMO_NAMESPACE="${DEMO_NAMESPACE:-payments}"
# WAIT=false skips waiting for rollouts (used by the tests, which have no nodes).
WAIT="${WAIT:-true}"
TIMEOUT="${TIMEOUT:-180s}"

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

image_repository() { printf '%s' "${IMAGE%:*}"; }
image_tag() {
  case "$IMAGE" in
    *:*) printf '%s' "${IMAGE##*:}" ;;
    *) printf 'latest' ;;
  esac
}
