# shellcheck shell=bash
# Sourced (not run) by 40-kube.sh and 42-node.sh: how binaries are built from
# the k8s.io/kubernetes Go module. Both scripts make the *same* throwaway module
# (same requirements, same replaces, same flags), so Go resolves the same
# dependency versions and the second build reuses every package the first one
# compiled into the shared Go build cache.
#
# Callers set K8S_VERSION and ETCD_VERSION before sourcing.

: "${K8S_VERSION:?set K8S_VERSION before sourcing lib-kube.sh}"
: "${ETCD_VERSION:?set ETCD_VERSION before sourcing lib-kube.sh}"

kube_need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "setup: $(basename "$0") needs '$1' on PATH ($2)" >&2
    exit 1
  }
}

# Fails unless the machine's go is new enough for this Kubernetes release.
kube_check_go() {
  kube_need go "to compile Kubernetes ${K8S_VERSION}"
  local have want="1.26"
  have=$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
  if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
    echo "setup: Kubernetes ${K8S_VERSION} needs Go >= ${want}; this machine has go${have}" >&2
    exit 1
  fi
}

# The Go environment every build here uses (static, no toolchain download).
kube_go_env() {
  export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
}

# kube_module_init: in the current directory, a module that requires
# k8s.io/kubernetes and the etcd server at the pinned versions.
# k8s.io/kubernetes replaces every staging module with ./staging/...; pin each
# of them to the matching published v0.X.Y tag instead (the list is read from
# the module's own go.mod), and pin the etcd modules the same way.
kube_module_init() {
  local modfile staging m
  go mod init palisade.local/kubebuild >/dev/null 2>&1
  go mod download k8s.io/kubernetes@"$K8S_VERSION"
  modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${K8S_VERSION}.mod"
  staging="v0.${K8S_VERSION#v1.}"
  {
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo "require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$modfile" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m $staging"; done
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
      echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m ${ETCD_VERSION}"
    done
  } >>go.mod
}

# The -ldflags for a Kubernetes binary: stripped, with the version stamps that
# `kubectl version` and the API server's /version report.
kube_ldflags() {
  local kv="-X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
  kv="$kv -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
  kv="$kv -X k8s.io/component-base/version.gitMajor=1"
  kv="$kv -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  echo "-s -w $kv"
}

# kube_build OUT PACKAGE: one binary from the module in the current directory.
kube_build() {
  nice -n 10 go build -trimpath -ldflags="$(kube_ldflags)" -o "$1" "$2"
}
