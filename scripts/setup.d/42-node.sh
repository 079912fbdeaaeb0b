#!/usr/bin/env bash
# A real single-node Kubernetes cluster for the e2e tests (tests/harness/node.py):
# everything a node needs beside the control plane of 40-kube.sh.
#
# - Debian packages, installed with apt-get only when missing: runc,
#   containernetworking-plugins (bridge, host-local, portmap, loopback in
#   /usr/lib/cni), iptables and conntrack (kube-proxy), umoci and debootstrap
#   (image building elsewhere in the tests).
# - kubelet, kube-scheduler and kube-proxy from the same k8s.io/kubernetes module
#   as the control plane (scripts/lib-kube.sh makes the identical build
#   module, so the packages already compiled for kube-apiserver are reused).
# - containerd, ctr and containerd-shim-runc-v2 from the containerd Go module.
# - CoreDNS from its Go module, with only the plugins the cluster DNS uses (a
#   main package of our own importing coremain and those plugins).
# - pause and hello (tests/harness/images, static Go) and three OCI image
#   archives for `ctr images import`, written by tests/harness/oci.py:
#   palisade.local/pause:1, palisade.local/coredns:<version>, palisade.local/hello:1.
#
# Binaries are cached under ${PALISADE_CACHE:-$HOME/.cache/palisade}/node/<versions>/bin,
# images under .../node/<versions>/images-<hash of their sources>/; both paths
# are recorded in .../node/current. The script returns at once when all are there.
#
# Environment:
#   PALISADE_CACHE          cache root (default ~/.cache/palisade)
#   PALISADE_SKIP_NODE=1    skip this step (the node tests then fail with a clear
#                           "run make setup" message)
set -euo pipefail
cd "$(dirname "$0")/../.."

K8S_VERSION="${PALISADE_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${PALISADE_ETCD_VERSION:-v3.6.8}"
CONTAINERD_VERSION="${PALISADE_CONTAINERD_VERSION:-v2.3.7}"
COREDNS_VERSION="${PALISADE_COREDNS_VERSION:-v1.14.7}"
APT_PACKAGES=(runc containernetworking-plugins iptables conntrack umoci debootstrap)
COREDNS_PLUGINS=(errors health ready kubernetes cache loadbalance log)

# shellcheck source=scripts/lib-kube.sh
. scripts/lib-kube.sh

if [ "${PALISADE_SKIP_NODE:-0}" = "1" ]; then
  echo "setup: node binaries skipped (PALISADE_SKIP_NODE=1)"
  exit 0
fi

cache_root="${PALISADE_CACHE:-$HOME/.cache/palisade}"
dest="$cache_root/node/k8s-${K8S_VERSION}_containerd-${CONTAINERD_VERSION}_coredns-${COREDNS_VERSION}"
bin="$dest/bin"
images_hash=$(cat tests/harness/images/go.mod tests/harness/images/*/main.go tests/harness/oci.py |
  sha256sum | cut -c1-12)
images="$dest/images-$images_hash"

missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

have() {
  local f
  for f in "$@"; do [ -e "$f" ] || return 1; done
}

have_all() {
  [ -z "$(missing_packages)" ] &&
    have "$bin"/{kubelet,kube-scheduler,kube-proxy,containerd,ctr,containerd-shim-runc-v2,coredns} &&
    have "$images"/{pause,coredns,hello}.tar
}

if have_all; then
  printf '%s\n%s\n' "$bin" "$images" >"$cache_root/node/current"
  exit 0
fi

timed() { # timed WHAT COMMAND...: run it and print how long it took
  local what=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "setup: $what in $(($(date +%s) - start))s"
}

install_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != "0" ]; then
    # The node tests need root anyway; the rest of the setup goes on.
    echo "setup: WARNING: not root, cannot install ${missing[*]}; the node tests will fail" >&2
    return 0
  fi
  kube_need apt-get "to install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  }
}

build_kube_node() {
  local work
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $work now
  trap "rm -rf '$work'" RETURN
  (
    cd "$work"
    kube_go_env
    kube_module_init
    go get k8s.io/kubernetes/cmd/kubelet@"$K8S_VERSION" \
      k8s.io/kubernetes/cmd/kube-scheduler@"$K8S_VERSION" \
      k8s.io/kubernetes/cmd/kube-proxy@"$K8S_VERSION"
    for b in kubelet kube-scheduler kube-proxy; do
      kube_build "$bin/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$bin/$b.tmp" "$bin/$b"
    done
  )
}

build_containerd() {
  local work c
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  (
    kube_go_env
    export GOBIN="$work" GOFLAGS=
    local mod=github.com/containerd/containerd/v2
    nice -n 10 go install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags="-s -w -X $mod/version.Version=${CONTAINERD_VERSION}" \
      "$mod/cmd/containerd@${CONTAINERD_VERSION}" "$mod/cmd/ctr@${CONTAINERD_VERSION}" \
      "$mod/cmd/containerd-shim-runc-v2@${CONTAINERD_VERSION}"
  )
  for c in containerd ctr containerd-shim-runc-v2; do mv "$work/$c" "$bin/$c"; done
}

build_coredns() {
  local work p
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  {
    echo "// CoreDNS with only the plugins the test cluster's DNS uses."
    echo "package main"
    echo 'import ('
    echo '	"github.com/coredns/coredns/coremain"'
    for p in "${COREDNS_PLUGINS[@]}"; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
    echo ')'
    echo 'func main() { coremain.Run() }'
  } >"$work/main.go"
  (
    cd "$work"
    kube_go_env
    go mod init palisade.local/corednsbuild >/dev/null 2>&1
    go get "github.com/coredns/coredns@${COREDNS_VERSION}"
    nice -n 10 go build -trimpath -ldflags="-s -w" -o "$bin/coredns.tmp" .
  )
  mv "$bin/coredns.tmp" "$bin/coredns"
}

build_images() {
  local py=python3 arch
  [ -x .venv/bin/python ] && py=.venv/bin/python
  arch=$(go env GOARCH)
  rm -rf "$images.tmp"
  mkdir -p "$images.tmp"
  (
    cd tests/harness/images
    kube_go_env
    for p in pause hello; do
      nice -n 10 go build -trimpath -ldflags="-s -w" -o "$images.tmp/$p" "./$p"
    done
  )
  "$py" -m tests.harness.oci --name palisade.local/pause:1 --out "$images.tmp/pause.tar" \
    --arch "$arch" --file "pause=$images.tmp/pause" --entrypoint /pause
  "$py" -m tests.harness.oci --name palisade.local/hello:1 --out "$images.tmp/hello.tar" \
    --arch "$arch" --file "hello=$images.tmp/hello" --entrypoint /hello --cmd serve
  "$py" -m tests.harness.oci --name "palisade.local/coredns:${COREDNS_VERSION}" \
    --out "$images.tmp/coredns.tar" --arch "$arch" --file "coredns=$bin/coredns" \
    --entrypoint /coredns --cmd=-conf --cmd=/etc/coredns/Corefile
  echo "${COREDNS_VERSION}" >"$images.tmp/coredns.version"
  rm -rf "$images"
  mv "$images.tmp" "$images"
}

mkdir -p "$bin"
timed "node packages (${APT_PACKAGES[*]})" install_packages
if ! have "$bin"/{kubelet,kube-scheduler,kube-proxy}; then
  kube_check_go
  echo "setup: building kubelet, kube-scheduler, kube-proxy ${K8S_VERSION}"
  timed "kubelet, kube-scheduler, kube-proxy built" build_kube_node
fi
if ! have "$bin"/{containerd,ctr,containerd-shim-runc-v2}; then
  kube_check_go
  timed "containerd ${CONTAINERD_VERSION} built" build_containerd
fi
if ! have "$bin/coredns"; then
  kube_check_go
  timed "coredns ${COREDNS_VERSION} built" build_coredns
fi
if ! have "$images"/{pause,coredns,hello}.tar; then
  timed "images (pause, hello, coredns) built" build_images
fi
printf '%s\n%s\n' "$bin" "$images" >"$cache_root/node/current"
echo "setup: node binaries ready ($bin, $images)"
