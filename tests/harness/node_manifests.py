"""The cluster add-ons of the real node, as Kubernetes objects (pure).

- CoreDNS, a real Deployment in ``kube-system`` behind the ``kube-dns`` Service
  at 10.96.0.10, answering for ``cluster.local`` from the API (kubernetes plugin).
- A default StorageClass ``standard`` with hostPath PersistentVolumes made
  ahead of time in the work directory: a stand-in for a dynamic provisioner,
  so that a chart's ReadWriteOnce PVC binds. There is no provisioner: a claim
  larger than every free volume stays Pending, and a released volume is kept
  (``Retain``), not wiped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness.node_config import CLUSTER_DOMAIN, DNS_SERVICE_IP, STORAGE_CLASS

DNS_LABELS = {"k8s-app": "kube-dns"}

COREFILE = f""".:53 {{
    errors
    health {{
        lameduck 2s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **extra}
    if namespace:
        meta["namespace"] = namespace
    return meta


def coredns_rbac() -> list[dict[str, Any]]:
    """The ServiceAccount and the read access the kubernetes plugin needs."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("coredns", "kube-system")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta("system:coredns"),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("system:coredns"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
    ]


def _dns_container(image: str) -> dict[str, Any]:
    return {
        "name": "coredns",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8181},
            "periodSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": 8080},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
        "resources": {"requests": {"cpu": "10m", "memory": "20Mi"}},
    }


def coredns(image: str) -> list[dict[str, Any]]:
    """RBAC, the Corefile, the Deployment and the ``kube-dns`` Service."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("coredns", "kube-system", labels=DNS_LABELS),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": DNS_LABELS},
            "template": {
                "metadata": {"labels": DNS_LABELS},
                "spec": {
                    "serviceAccountName": "coredns",
                    "priorityClassName": "system-cluster-critical",
                    # Its own resolv.conf is the node's (no upstream): not itself.
                    "dnsPolicy": "Default",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [_dns_container(image)],
                    "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("kube-dns", "kube-system", labels=DNS_LABELS),
        "spec": {
            "clusterIP": DNS_SERVICE_IP,
            "selector": DNS_LABELS,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("coredns", "kube-system"),
        "data": {"Corefile": COREFILE},
    }
    return [*coredns_rbac(), config, deployment, service]


def storage(pv_dir: Path, sizes_gi: Sequence[int]) -> list[dict[str, Any]]:
    """The default StorageClass and one hostPath PV per size under ``pv_dir``."""
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": _meta(
                STORAGE_CLASS,
                annotations={"storageclass.kubernetes.io/is-default-class": "true"},
            ),
            "provisioner": "kubernetes.io/no-provisioner",
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        }
    ]
    for i, size in enumerate(sizes_gi):
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": _meta(f"palisade-pv-{i}", labels={"palisade.dev/pv": "hostpath"}),
                "spec": {
                    "capacity": {"storage": f"{size}Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": {"path": str(pv_dir / f"pv-{i}"), "type": "DirectoryOrCreate"},
                },
            }
        )
    return objs


def as_list(objs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A ``v1 List`` for one ``kubectl apply -f -``."""
    return {"apiVersion": "v1", "kind": "List", "items": list(objs)}
