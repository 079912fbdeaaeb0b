"""Pure builders for the real node: config files, command lines, manifests.

Paths and addresses in, strings, dicts and argv lists out; no I/O (tested
directly). The settings that were needed on the test machines (see
shared/REAL-NODE.md) are here with the reason beside each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = "palisade-node"
CLUSTER_DOMAIN = "cluster.local"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
DNS_SERVICE_IP = "10.96.0.10"
API_SERVICE_IP = "10.96.0.1"
CNI_NETWORK = "palisade-pods"
APISERVER_PORT = 6443
#: Sizes of the pre-created hostPath PersistentVolumes (the stand-in provisioner).
PV_SIZES_GI = (1, 2, 5, 5)
STORAGE_CLASS = "standard"


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its state, all under one work directory."""

    workdir: Path

    @property
    def containerd_dir(self) -> Path:
        return self.workdir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni"

    @property
    def kubelet_dir(self) -> Path:
        """The kubelet's standard root: node agents find ``pod-resources`` where they would
        on any node (the kubelet writes ``device-plugins`` there whatever its root)."""
        return Path("/var/lib/kubelet")

    @property
    def kubelet_config(self) -> Path:
        return self.workdir / "kubelet-config.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.workdir / "kube-proxy-config.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.workdir / "resolv.conf"

    @property
    def pv_dir(self) -> Path:
        return self.workdir / "pv"

    def kubeconfig_for(self, component: str) -> Path:
        return self.workdir / f"{component}.kubeconfig"


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def containerd_config(paths: NodePaths, *, pause_image: str, cni_bin_dir: Path) -> str:
    """containerd v2 (config version 3) for the CRI, with every path of its own.

    ``restrict_oom_score_adj``: without CAP_SYS_RESOURCE runc cannot lower a
    sandbox's oom_score_adj and every sandbox fails ("can't get final child's PID
    from pipe: EOF"). ``netns_mounts_under_state_dir`` keeps pod network
    namespaces out of /var/run/netns, and the runc ``Root`` keeps runc's state out
    of /run/containerd/runc: both then live (and die) in the work directory.
    """
    d = paths.containerd_dir
    return f"""version = 3
root = {_toml_str(d / "root")}
state = {_toml_str(d / "state")}
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {_toml_str(paths.containerd_socket)}

[ttrpc]
  address = {_toml_str(str(paths.containerd_socket) + ".ttrpc")}

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = {_toml_str(pause_image)}

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {_toml_str(d / "runc")}
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [{_toml_str(cni_bin_dir)}]
    conf_dir = {_toml_str(paths.cni_conf_dir)}
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
"""


def cni_conflist(pod_cidr: str = POD_CIDR) -> dict[str, Any]:
    """bridge (gateway, masquerade) + host-local IPAM, portmap and loopback."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def cni_loopback() -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


def kubelet_config(
    paths: NodePaths, *, node_ip: str, ca_file: Path, cert_file: Path, key_file: Path
) -> dict[str, Any]:
    """KubeletConfiguration for a cgroup v1 host without systemd or swap rules.

    ``failCgroupV1: false``: 1.35+ refuse cgroup v1 otherwise. The eviction and
    image-GC thresholds are pushed out of reach: the test machine's disk is
    shared, and evicting or collecting the locally imported images (there is
    no registry to pull them back from) would only make tests flaky.
    """
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "address": node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(cert_file),
        "tlsPrivateKeyFile": str(key_file),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(paths.resolv_conf),
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "maxPods": 60,
    }


def kubelet_args(kubelet: Path, paths: NodePaths, *, node_ip: str) -> list[str]:
    return [
        str(kubelet),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.kubeconfig_for('kubelet')}",
        f"--root-dir={paths.kubelet_dir}",
        f"--node-ip={node_ip}",
        f"--hostname-override={NODE_NAME}",
        "--v=1",
    ]


def kube_proxy_config(paths: NodePaths) -> dict[str, Any]:
    """iptables mode; conntrack sysctls left alone (``nf_conntrack_max`` is host-wide)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(paths.kubeconfig_for("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": CLUSTER_CIDR,
        "bindAddress": "0.0.0.0",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
    }


def kube_proxy_args(kube_proxy: Path, paths: NodePaths) -> list[str]:
    return [str(kube_proxy), f"--config={paths.kube_proxy_config}", "--v=1"]


def scheduler_args(scheduler: Path, paths: NodePaths) -> list[str]:
    """kube-scheduler without its HTTPS port or leader election."""
    return [
        str(scheduler),
        f"--kubeconfig={paths.kubeconfig_for('kube-scheduler')}",
        "--secure-port=0",
        "--leader-elect=false",
    ]


#: The Node authorizer and NodeRestriction admit the kubelet as ``system:node:<name>``
#: (RBAC alone binds nothing to ``system:nodes``).
AUTHORIZATION_MODES = ("Node", "RBAC")
NODE_ADMISSION_PLUGINS = ("NodeRestriction",)


def apiserver_node_args(pki: Path) -> tuple[str, ...]:
    """What the API server needs beside the loopback defaults to reach the kubelet.

    ``InternalIP``: else ``kubectl logs/exec`` try to resolve the node's name.
    """
    return (
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
    )


def controller_manager_node_args(pki: Path) -> tuple[str, ...]:
    """Node CIDR allocation and the CSR signer, on top of the loopback defaults."""
    return (
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={CLUSTER_CIDR}",
        "--node-cidr-mask-size=24",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--node-monitor-grace-period=20s",
    )


def cert_kubeconfig(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> dict[str, Any]:
    """A kubeconfig that authenticates with a client certificate."""
    import base64

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "palisade",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": "palisade", "context": {"cluster": "palisade", "user": user}}],
        "current-context": "palisade",
    }


def resolv_conf() -> str:
    """The node's resolv.conf for ``dnsPolicy: Default`` pods (CoreDNS itself).

    No upstream: the test cluster answers only for cluster.local (CoreDNS has no
    ``forward`` plugin), and nothing leaves the machine.
    """
    return "# palisade test node: no upstream resolver\noptions ndots:1\n"
