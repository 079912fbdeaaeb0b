"""The worked example's cluster side, on the harness's real kube-apiserver.

- namespace ``payments`` with the agent's own ServiceAccount ``sre-agent-payments``,
  bound to a Role that may read pods, read/write ConfigMaps and scale Deployments
  (not StatefulSets) *in payments only*;
- ``other-agent`` in payments: a ServiceAccount the sidecar may **not** mint for;
- ``palisade-sidecar``: the sidecar's own ServiceAccount, with ``create`` on
  ``serviceaccounts/token`` for exactly ``sre-agent-payments`` (a Role with
  ``resourceNames``, as the chart and docs/credentials.md grant it). Its token is
  written to a file, as the kubelet projects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import ApiError, ControlPlane

NAMESPACE = "payments"
AGENT_ACCOUNT = "sre-agent-payments"
OTHER_ACCOUNT = "other-agent"
SIDECAR_ACCOUNT = "palisade-sidecar"
AGENT_USERNAME = f"system:serviceaccount:{NAMESPACE}:{AGENT_ACCOUNT}"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@dataclass(frozen=True)
class PaymentsCluster:
    kube: ControlPlane
    sidecar_token_file: Path


def _create(kube: ControlPlane, path: str, body: dict[str, Any]) -> None:
    try:
        kube.request("POST", path, body)
    except ApiError as exc:  # there from an earlier module of this session
        if exc.status != 409:
            raise


def _account(kube: ControlPlane, name: str) -> None:
    _create(
        kube,
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )


def _role(kube: ControlPlane, name: str, rules: list[dict[str, Any]], account: str) -> None:
    meta = {"name": name, "namespace": NAMESPACE}
    _create(
        kube,
        f"{RBAC}/namespaces/{NAMESPACE}/roles",
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": rules},
    )  # fmt: skip
    _create(
        kube,
        f"{RBAC}/namespaces/{NAMESPACE}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
        },
    )


def token_of(kube: ControlPlane, account: str, seconds: int = 3600) -> str:
    """A TokenRequest token for ``account`` in payments, minted as the admin."""
    resp: dict[str, Any] = kube.request(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": seconds}},
    )  # fmt: skip
    return str(resp["status"]["token"])


def username_of(kube: ControlPlane, token: str) -> str:
    """Who the API server says ``token`` is (TokenReview), or "" when it is not valid."""
    review: dict[str, Any] = kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
         "spec": {"token": token}},
    )  # fmt: skip
    status = review.get("status", {})
    return str(status["user"]["username"]) if status.get("authenticated") else ""


def set_up(kube: ControlPlane, workdir: Path) -> PaymentsCluster:
    kube.create_namespace(NAMESPACE)
    for account in (AGENT_ACCOUNT, OTHER_ACCOUNT, SIDECAR_ACCOUNT):
        _account(kube, account)
    _role(
        kube,
        AGENT_ACCOUNT,
        [
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "list", "create", "update", "patch", "delete"],
            },
            # Deployments may be scaled; StatefulSets (not named here) may not
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/scale"],
                "verbs": ["get", "update", "patch"],
            },
        ],
        AGENT_ACCOUNT,
    )
    _role(
        kube,
        "palisade-sidecar-upstream-tokens",
        [
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts/token"],
                "verbs": ["create"],
                "resourceNames": [AGENT_ACCOUNT],
            }
        ],
        SIDECAR_ACCOUNT,
    )
    token_file = workdir / "sidecar-sa-token"
    token_file.write_text(token_of(kube, SIDECAR_ACCOUNT))
    return PaymentsCluster(kube, token_file)


def _pod_template(app: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": app, "image": "payments-api:1"}]},
    }


def create_workloads(kube: ControlPlane) -> None:
    """``payments-api`` (a Deployment) and ``payments-db`` (a StatefulSet), one replica
    each; no controller needs to run for their scale to be read and written."""
    spec = {"replicas": 1, "selector": {"matchLabels": {"app": "payments-api"}},
            "template": _pod_template("payments-api")}  # fmt: skip
    _create(
        kube,
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "payments-api"}, "spec": spec},
    )  # fmt: skip
    db = {"replicas": 1, "serviceName": "payments-db",
          "selector": {"matchLabels": {"app": "payments-db"}},
          "template": _pod_template("payments-db")}  # fmt: skip
    _create(
        kube,
        f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets",
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": "payments-db"}, "spec": db},
    )  # fmt: skip


def replicas(kube: ControlPlane, kind: str, name: str) -> int:
    doc: dict[str, Any] = kube.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/{kind}/{name}")
    return int(doc["spec"]["replicas"])
