#!/usr/bin/env bash
# Wait for the example agent's Job (examples/cluster/sre-agent.yaml) to finish,
# then print its log: each call the agent made and what Palisade decided.
set -euo pipefail
# shellcheck source=kind/lib.sh
source "$(dirname "$0")/lib.sh"
need kubectl

log "waiting (up to ${JOB_TIMEOUT}s) for job/sre-agent in namespace payments to finish"
deadline=$((SECONDS + JOB_TIMEOUT))
while :; do
  conditions="$(kc -n payments get job sre-agent -o 'jsonpath={.status.conditions[?(@.status=="True")].type}')"
  case " $conditions " in
    *" Complete "* | *" Failed "*) break ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] ||
    die "job/sre-agent has not finished after ${JOB_TIMEOUT}s; see: kubectl --context $KUBE_CONTEXT -n payments describe job/sre-agent"
  sleep 2
done

log "kubectl -n payments logs job/sre-agent"
kc -n payments logs job/sre-agent
case " $conditions " in
  *" Failed "*) die "job/sre-agent failed; its log is above" ;;
esac
