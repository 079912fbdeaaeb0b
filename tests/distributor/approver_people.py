"""People who answer approvals, on a real kube-apiserver: ServiceAccounts with tokens.

The distributor runs with a kubeconfig of its own ServiceAccount holding only the
chart's ``<release>-distributor-approvers`` rules; people get the chart's
``palisade-approver`` ClusterRole through a ClusterRoleBinding (every namespace),
a RoleBinding (one namespace), or nothing at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.chart.render import one, render
from tests.harness.commands import kubeconfig
from tests.harness.controlplane import ControlPlane

DIST_SA = "distributor"
APPROVER_ROLE = "test-palisade-approver"
DIST_ROLE = "test-distributor-approvers"


@dataclass
class People:
    kube: ControlPlane
    #: the namespace of the people's (and the distributor's) ServiceAccounts
    ns: str
    made: list[tuple[str, str]] = field(default_factory=list)

    def username(self, name: str) -> str:
        return f"system:serviceaccount:{self.ns}:{name}"

    def person(self, name: str) -> str:
        """A new person (a ServiceAccount) and a token of theirs, as `kubectl create token`."""
        self.kube.request(
            "POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts", {"metadata": {"name": name}}
        )
        return self.token(name)

    def token(self, name: str) -> str:
        out = self.kube.request(
            "POST",
            f"/api/v1/namespaces/{self.ns}/serviceaccounts/{name}/token",
            {"spec": {"expirationSeconds": 3600}},
        )
        return str(out["status"]["token"])

    def may_approve(self, name: str, namespace: str = "") -> None:
        """Bind the chart's approver role: everywhere, or only in ``namespace``."""
        subject = {"kind": "ServiceAccount", "name": name, "namespace": self.ns}
        role_ref = {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": APPROVER_ROLE,
        }
        binding = f"approves-{name}"
        if namespace:
            self.kube.request(
                "POST",
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
                {"metadata": {"name": binding}, "roleRef": role_ref, "subjects": [subject]},
            )
            self.made.append(("rolebinding", f"{binding} -n {namespace}"))
        else:
            self.kube.request(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                {"metadata": {"name": binding}, "roleRef": role_ref, "subjects": [subject]},
            )
            self.made.append(("clusterrolebinding", binding))

    def kubeconfig_of(self, tmp: Path, name: str, token: str) -> Path:
        """A kubeconfig whose current user is ``name`` with ``token`` (what kubectl reads)."""
        path = tmp / f"{name}.kubeconfig"
        doc = kubeconfig(self.kube.server, self.kube.ca_pem, token, user=name)
        path.write_text(yaml.safe_dump(doc))
        return path

    def distributor_args(self, tmp: Path) -> list[str]:
        """``--kubeconfig`` of the distributor's account: only the chart's approvers rules."""
        cfg = self.kubeconfig_of(tmp, DIST_SA, self.token(DIST_SA))
        return [f"--kubeconfig={cfg}"]


@pytest.fixture(scope="module")
def people(kube: ControlPlane, request: pytest.FixtureRequest) -> Iterator[People]:
    # one namespace per test module: a deleted one stays Terminating for a while
    ns = "approvers-" + hashlib.sha256(request.module.__name__.encode()).hexdigest()[:10]
    kube.create_namespace(ns)
    for other in ("payments", "billing"):
        kube.create_namespace(other)
    kube.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": DIST_SA}}
    )
    objects = render()
    # Exactly what the chart gives: the distributor's review rights, the approver role.
    dist_role = one(objects, "ClusterRole", "palisade-distributor-approvers")
    approver_role = one(objects, "ClusterRole", "palisade-approver")
    for name, rules in ((DIST_ROLE, dist_role["rules"]), (APPROVER_ROLE, approver_role["rules"])):
        kube.request(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {"metadata": {"name": name}, "rules": rules},
        )
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": DIST_ROLE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": DIST_ROLE,
            },
            "subjects": [{"kind": "ServiceAccount", "name": DIST_SA, "namespace": ns}],
        },
    )
    p = People(kube, ns)
    try:
        yield p
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for kind, name in [
            *p.made,
            ("clusterrolebinding", DIST_ROLE),
            ("clusterrole", DIST_ROLE),
            ("clusterrole", APPROVER_ROLE),
        ]:
            kube.kubectl("delete", kind, *name.split(), check=False)
