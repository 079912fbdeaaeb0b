#!/usr/bin/env bash
# The README's quick start (the block after <!-- quickstart --> in README.md), run
# as written from the repository root against the kind cluster: each helm command
# gets --kube-context, each kubectl command --context, and nothing else changes.
# The chart goes in with its defaults. Run kind/build-image.sh first: the quick
# start needs palisade:0.1.0 and palisade-example-mcp:0.1.0 on the nodes.
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need python3 helm kubectl

commands="$(readme_commands)"
mapfile -t lines <<<"$commands"

cd "$REPO_ROOT"
for line in "${lines[@]}"; do
  argv=()
  # Safe to eval: readme_commands quotes every word (shlex.join), so this only
  # splits the line back into the README's words.
  eval "argv=($line)"
  case "${argv[0]}" in
    helm) context=(--kube-context "$KUBE_CONTEXT") ;;
    kubectl) context=(--context "$KUBE_CONTEXT") ;;
    *) die "not a helm or kubectl command: $line" ;;
  esac
  log "$line"
  "${argv[0]}" "${context[@]}" "${argv[@]:1}" ||
    die "quick start command failed: $line (on a cluster where the quick start already ran: kind/down.sh, then kind/up.sh)"
done
