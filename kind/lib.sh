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
# The bundle-signing key pair (kind/signing-key.sh): kept outside the repository and
# reused on every run, so sidecars keep trusting the distributor across re-installs.
PALISADE_CACHE="${PALISADE_CACHE:-${HOME:+$HOME/.cache/palisade}}"
KEYS_DIR="${KEYS_DIR:-${PALISADE_CACHE:+$PALISADE_CACHE/kind-$CLUSTER_NAME/keys}}"
KEY_NAME="${KEY_NAME:-bundle-signing}"
# The Secret (in $PALISADE_NAMESPACE) the distributor signs bundles with.
SIGNING_SECRET="${SIGNING_SECRET:-$RELEASE-signing}"
# The policy the distributor serves (files mode: a ConfigMap of policy files).
BUNDLE_FILE="${BUNDLE_FILE:-$REPO_ROOT/examples/payments-bundle.yaml}"

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

# The key pair's directory, or a clear error when neither KEYS_DIR nor HOME is set.
keys_dir() {
  [ -n "$KEYS_DIR" ] || die "set KEYS_DIR (or HOME, or PALISADE_CACHE) for the bundle-signing keys"
  printf '%s' "$KEYS_DIR"
}

kc() { kubectl --context "$KUBE_CONTEXT" "$@"; }

image_repository() { printf '%s' "${IMAGE%:*}"; }
image_tag() {
  case "$IMAGE" in
    *:*) printf '%s' "${IMAGE##*:}" ;;
    *) printf 'latest' ;;
  esac
}
