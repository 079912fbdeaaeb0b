#!/usr/bin/env bash
# Regenerate nodeagent/podresources/v1/*_pb2* from proto/k8s/podresources/v1/api.proto.
# The stubs are committed; `--check` fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
out=.
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
fi
"$PY" -m grpc_tools.protoc -Inodeagent/podresources/v1=proto/k8s/podresources/v1 \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/k8s/podresources/v1/api.proto
if [ "${1:-}" = "--check" ]; then
  diff -r -q -x __init__.py -x __pycache__ "$out/nodeagent/podresources/v1" nodeagent/podresources/v1 \
    || { echo "podresources stubs are stale: run nodeagent/podresources/generate.sh" >&2; exit 1; }
  echo "podresources stubs are fresh"
fi
