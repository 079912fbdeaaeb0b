"""Pure builders for the control plane: command lines and kubeconfig documents.

No I/O here: paths and ports in, argv lists and dicts out (tested directly).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ADMIN_USER = "palisade-admin"
ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "DefaultTolerationSeconds",
    "PodSecurity",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ResourceQuota",
)
#: Controllers run by default: enough that namespaces get their ``default``
#: ServiceAccount and ``kube-root-ca.crt``, and that namespace deletion finishes.
BASIC_CONTROLLERS = (
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
)


def etcd_args(
    etcd: Path, data_dir: Path, client_port: int, peer_port: int, host: str = "127.0.0.1"
) -> list[str]:
    """A single-member etcd on ``host`` (default loopback); fsync off (test data is throwaway)."""
    client = f"http://{host}:{client_port}"
    peer = f"http://{host}:{peer_port}"
    return [
        str(etcd),
        "--name=palisade",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=palisade={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_args(
    apiserver: Path,
    *,
    etcd_url: str,
    port: int,
    pki: Path,
    cert_dir: Path,
    issuer: str = ISSUER,
    bind_address: str = "127.0.0.1",
    advertise_address: str = "127.0.0.1",
    authorization_modes: Sequence[str] = ("RBAC",),
    admission_plugins: Sequence[str] = ADMISSION_PLUGINS,
    extra: Sequence[str] = (),
) -> list[str]:
    """kube-apiserver (on 127.0.0.1 by default) with the PKI files under ``pki``."""
    return [
        str(apiserver),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={bind_address}",
        f"--advertise-address={advertise_address}",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--token-auth-file={pki / 'tokens.csv'}",
        f"--authorization-mode={','.join(authorization_modes)}",
        f"--service-account-issuer={issuer}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        f"--enable-admission-plugins={','.join(admission_plugins)}",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        *extra,
    ]


def controller_manager_args(
    kcm: Path,
    *,
    kubeconfig: Path,
    controllers: Sequence[str],
    pki: Path,
    extra: Sequence[str] = (),
) -> list[str]:
    """kube-controller-manager without its own HTTPS port or leader election."""
    return [
        str(kcm),
        f"--kubeconfig={kubeconfig}",
        f"--controllers={','.join(controllers)}",
        "--secure-port=0",
        "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--concurrent-deployment-syncs=2",
        "--concurrent-replicaset-syncs=2",
        *extra,
    ]


def token_file_line(token: str, user: str = ADMIN_USER, group: str = "system:masters") -> str:
    """One line of kube-apiserver's --token-auth-file."""
    if "," in token or '"' in token:
        raise ValueError("a static token may not contain commas or quotes")
    return f'{token},{user},uid-{user},"{group}"\n'


def kubeconfig(
    server: str, ca_pem: bytes, token: str, *, user: str = ADMIN_USER, name: str = "palisade-test"
) -> dict[str, Any]:
    """A kubeconfig document with one cluster, one token user and one context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }
