"""`helm install` with nothing but defaults, on a real API server, gives a governed install.

The chart's objects are installed for real (helm, server-side), their RBAC checked with
`kubectl auth can-i --as` each ServiceAccount. Pods cannot run on this control plane, so
the distributor runs as a process on this machine with exactly the arguments the chart's
Deployment gives it and a token of the chart's ServiceAccount (so the chart's RBAC is all
it has): it generates the signing key into the chart's empty Secret, publishes the public
half in the chart's empty ConfigMap, compiles the chart's starter bundle beside a
platform team's own PolicyBundle, and a sidecar trusting the published key gets a bundle
that allows that team's tool and denies everything else. Then `helm upgrade` keeps the
key the distributor wrote and `helm uninstall` removes it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade.bundle import key_id, load_public_key
from palisade.distribution import TrustedKeys
from palisade.policy import Call, Decision, compile_bundle
from tests.chart.render import CHART, ensure_crds, one, render
from tests.distributor.helpers import Replica, eventually, make_client, start_replica
from tests.harness import ApiError, ControlPlane, kubeconfig
from tests.harness.process import dying_with_parent, free_port

pytestmark = pytest.mark.e2e

RELEASE = "defaults"
NS = "palisade-defaults"
FULL = f"{RELEASE}-palisade"
DIST = f"{FULL}-distributor"
SIGNING = f"{DIST}-signing"
TRUST = f"{FULL}-trust"
STARTER = f"{FULL}-starter"
TEAM_NS = "payments-defaults"

#: A platform team's own bundle for payments: registers one server, allows one tool.
TEAM_BUNDLE: dict[str, Any] = {
    "apiVersion": "palisade.dev/v1alpha1",
    "kind": "PolicyBundle",
    "metadata": {"name": "payments", "namespace": TEAM_NS},
    "spec": {
        "defaultDecision": "deny",
        "servers": [
            {
                "name": "kubernetes-mcp",
                "tools": [
                    {"name": "pods_log", "risk": "read"},
                    {"name": "resources_delete", "risk": "destructive"},
                ],
            }
        ],
        "tenants": [{"name": "payments", "namespaces": ["payments"]}],
        "agents": [{"id": "sre-agent-payments", "tenant": "payments"}],
        "rules": [
            {
                "id": "allow-pod-logs",
                "match": {"servers": ["kubernetes-mcp"], "tools": ["pods_log"]},
                "decision": "allow",
            }
        ],
    },
}


def _get(kube: ControlPlane, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = kube.request("GET", path)
    except ApiError as e:
        if e.status == 404:
            return None
        raise
    return found


def _secret_path(name: str = SIGNING) -> str:
    return f"/api/v1/namespaces/{NS}/secrets/{name}"


def _trust_path() -> str:
    return f"/api/v1/namespaces/{NS}/configmaps/{TRUST}"


def _bundle_path(ns: str, name: str) -> str:
    return f"/apis/palisade.dev/v1alpha1/namespaces/{ns}/policybundles/{name}"


def _secret_key_ids(kube: ControlPlane) -> list[str]:
    from distributor.signing_keys import keys_in

    obj = kube.request("GET", _secret_path())
    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    return [key_id(k) for k in keys_in(data)]


def _published(kube: ControlPlane) -> str:
    return str((kube.request("GET", _trust_path()).get("data") or {}).get("keys.pem", ""))


@dataclass
class Install:
    kube: ControlPlane
    tmp: Path


@pytest.fixture(scope="module")
def install(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    ensure_crds(kube)  # helm skips CRDs that exist; another test may be deleting them
    kube.create_namespace(NS)
    try:
        kube.helm("install", RELEASE, str(CHART), "-n", NS)
        yield Install(kube, tmp_path_factory.mktemp("defaults"))
    finally:
        # No --wait: without the PVC-protection controller here, the claim stays Terminating.
        kube.helm("uninstall", RELEASE, "-n", NS, check=False)
        kube.kubectl("delete", "namespace", TEAM_NS, "--wait=false", check=False)


def _sa_kubeconfig(kube: ControlPlane, sa: str, path: Path) -> Path:
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token",
        {"spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    path.write_text(yaml.safe_dump(kubeconfig(kube.server, kube.ca_pem, token, user=sa)))
    return path


_HOST_ONLY = ("--store=", "--grpc-listen=", "--http-listen=", "--admin-token-file=")


def _run_the_charts_distributor(inst: Install, name: str) -> Replica:
    """`palisade distributor` with the chart's args; only host paths and ports differ."""
    kube = inst.kube
    dep = one(render(release=RELEASE, namespace=NS), "Deployment", DIST)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "distributor"
    chart_args = [a for a in args[1:] if not a.startswith(_HOST_ONLY)]
    assert f"--admin-token-secret={DIST}-admin" in chart_args, "the token is made at run time"
    cfg = _sa_kubeconfig(kube, DIST, inst.tmp / f"{name}.kubeconfig")
    env = {e["name"] for e in container["env"]}
    assert "POD_NAMESPACE" in env, "the chart tells it its namespace"
    return start_replica(
        inst.tmp,
        name,
        policy_dir=None,
        store=inst.tmp / "distributor.db",
        keys=[],
        extra=[*chart_args, f"--kubeconfig={cfg}"],
        env={"POD_NAMESPACE": NS},
    )


def _kubelet_configmap_dir(root: Path, data: dict[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a ConfigMap volume: the files in a
    hidden timestamped directory, ``..data`` linking to it, each key linking through it."""
    root.mkdir(parents=True)
    real = root / "..2026_01_01_00_00_00.000000001"
    real.mkdir()
    for name, text in data.items():
        (real / name).write_text(text)
    (root / "..data").symlink_to(real.name)
    for name in data:
        (root / name).symlink_to(f"..data/{name}")
    return root


@dataclass
class NodeAgent:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def status(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=3) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def healthy(self) -> bool:
        """Its /healthz answers 200; an agent that has exited fails the test with its log."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"the node agent exited ({self.proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=3) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _pod_token(
    kube: ControlPlane, ns: str, sa: str, pod: str, *, node: str, labels: dict[str, str]
) -> str:
    """A pod in the API (no kubelet runs it) and the token the kubelet would project into
    it for the distributor's audience, as the injector and the DaemonSet ask for."""
    made = kube.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {
            "metadata": {"name": pod, "labels": labels},
            "spec": {
                "serviceAccountName": sa,
                "nodeName": node,
                "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": "example.invalid/x:1"}],
            },
        },
    )
    ref = {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": made["metadata"]["uid"]}
    spec = {"audiences": ["palisade-distributor"], "boundObjectRef": ref}
    out = kube.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", {"spec": spec}
    )
    return str(out["status"]["token"])


def _node_agent(tmp: Path, name: str, trusted: Path, target: str, token: str) -> NodeAgent:
    """`palisade nodeagent run` with the chart's --trusted-key mount path layout, no GPU."""
    port = free_port()
    log = tmp / f"{name}.log"
    token_file = tmp / f"{name}.token"
    token_file.write_text(token)
    cmd = [
        sys.executable, "-m", "palisade.cli.main", "nodeagent", "run",
        "--node", name, "--backend", "none", "--kube", "off",
        "--distributor", target, "--trusted-key", str(trusted),
        "--distributor-token-file", str(token_file),
        "--state-dir", str(tmp / name), "--listen", f"127.0.0.1:{port}",
        "--heartbeat-interval", "0.5",
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(dying_with_parent(cmd), stdout=out, stderr=subprocess.STDOUT)
    return NodeAgent(proc, port, log)


def _acks(text: str) -> int:
    import re

    found = re.search(r'"bundleAcks": (\d+)', text)
    return int(found.group(1)) if found else 0


def _can(kube: ControlPlane, sa: str, *args: str) -> bool:
    who = f"--as=system:serviceaccount:{NS}:{sa}"
    return kube.kubectl("auth", "can-i", who, *args, check=False).stdout.strip() == "yes"


class TestTheDefaultInstall:
    def test_every_component_and_the_empty_key_objects_are_installed(
        self, install: Install
    ) -> None:
        kube = install.kube
        apps = f"/apis/apps/v1/namespaces/{NS}"
        assert kube.request("GET", f"{apps}/deployments/{DIST}")["spec"]["replicas"] == 1
        assert kube.request("GET", f"{apps}/deployments/{FULL}-injector")
        assert kube.request("GET", f"{apps}/daemonsets/{FULL}-nodeagent")
        assert kube.request("GET", f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{DIST}-store")
        secret = kube.request("GET", _secret_path())
        assert secret["type"] == "Opaque"
        starter = kube.request("GET", _bundle_path(NS, STARTER))
        assert starter["spec"] == {"defaultDecision": "deny"}
        assert kube.request("GET", _trust_path())

    def test_the_distributor_may_touch_only_its_two_named_objects(self, install: Install) -> None:
        kube = install.kube
        allowed = [
            ("get", f"secrets/{SIGNING}", "-n", NS),
            ("update", f"secrets/{SIGNING}", "-n", NS),
            ("patch", f"secrets/{SIGNING}", "-n", NS),
            ("get", f"configmaps/{TRUST}", "-n", NS),
            ("update", f"configmaps/{TRUST}", "-n", NS),
            ("get", f"secrets/{DIST}-admin", "-n", NS),
            ("update", f"secrets/{DIST}-admin", "-n", NS),
            ("list", "policybundles.palisade.dev", "-A"),
            ("watch", "policybundles.palisade.dev", "-A"),
            ("patch", "policybundles.palisade.dev", "--subresource=status", "-n", TEAM_NS),
            # subscriber authentication: review a token, read the one pod it is bound to
            ("create", "tokenreviews.authentication.k8s.io"),
            ("get", "pods", "-n", TEAM_NS),
            # approvers send their own token: who they are, whether they may answer
            ("create", "subjectaccessreviews.authorization.k8s.io"),
        ]
        denied = [
            ("approve", "approvals.palisade.dev", "-n", TEAM_NS),  # it is nobody's approver
            ("create", "secrets", "-n", NS),
            ("list", "secrets", "-n", NS),
            ("delete", f"secrets/{SIGNING}", "-n", NS),
            ("get", f"secrets/{FULL}-injector-tls", "-n", NS),
            ("get", f"secrets/{SIGNING}", "-n", "default"),
            ("create", "configmaps", "-n", NS),
            ("get", "configmaps/other", "-n", NS),
            ("update", "policybundles.palisade.dev", "-n", TEAM_NS),
            ("list", "pods", "-A"),
            ("watch", "pods", "-A"),
        ]
        assert [a for a in allowed if not _can(kube, DIST, *a)] == []
        assert [d for d in denied if _can(kube, DIST, *d)] == []

    def test_the_injector_may_read_the_trust_config_map_and_nothing_more_of_it(
        self, install: Install
    ) -> None:
        kube = install.kube
        inj = f"{FULL}-injector"
        for verb in ("get", "list", "watch"):
            assert _can(kube, inj, verb, f"configmaps/{TRUST}", "-n", NS), verb
        for args in (
            ("update", f"configmaps/{TRUST}", "-n", NS),
            ("get", "configmaps/other", "-n", NS),
            ("get", f"secrets/{SIGNING}", "-n", NS),
        ):
            assert not _can(kube, inj, *args), args

    def test_the_node_agent_reads_no_secret(self, install: Install) -> None:
        agent = f"{FULL}-nodeagent"
        assert not _can(install.kube, agent, "get", f"secrets/{SIGNING}", "-n", NS)
        assert not _can(install.kube, agent, "get", "secrets", "-A")

    async def test_the_distributor_generates_publishes_and_serves_the_merged_bundle(
        self, install: Install
    ) -> None:
        kube = install.kube
        kube.create_namespace(TEAM_NS)
        kube.request(
            "POST", f"/apis/palisade.dev/v1alpha1/namespaces/{TEAM_NS}/policybundles", TEAM_BUNDLE
        )
        replica = _run_the_charts_distributor(install, "dist-0")
        try:
            # The chart made the admin Secret empty; the distributor wrote its token.
            admin = kube.request("GET", _secret_path(f"{DIST}-admin"))["data"]["token"]
            assert len(base64.b64decode(admin)) >= 48
            (kid,) = _secret_key_ids(kube)
            await eventually(lambda: bool(_published(kube)), 15, "the public key published")
            public = load_public_key(_published(kube).encode())
            assert key_id(public) == kid
            assert "PRIVATE" not in _published(kube)

            client, rec = make_client(
                install.tmp, "payments-sidecar", [replica.target], TrustedKeys([public])
            )
            # The chart's distributor authenticates subscribers: the sidecar's pod token.
            token = _pod_token(
                kube,
                TEAM_NS,
                "default",
                "payments-mcp",
                node="node-1",
                labels={"palisade.dev/mcp-server": "kubernetes-mcp"},
            )
            token_file = install.tmp / "payments-sidecar.token"
            token_file.write_text(token)
            client.settings = dataclasses.replace(client.settings, token_file=token_file)
            await client.start()
            try:
                await eventually(lambda: bool(rec.activated), 20, "a verified bundle")
                assert client.nacks == 0
            finally:
                await client.stop()
            active = rec.activated[-1]
            assert active.document["spec"]["defaultDecision"] == "deny"
            assert [r["id"] for r in active.document["spec"]["rules"]] == ["allow-pod-logs"]
            engine = compile_bundle(active.bundle, revision=active.revision)

            def decide(tool: str, server: str = "kubernetes-mcp") -> Decision:
                return engine.decide(Call("sre-agent-payments", server, tool)).decision

            assert decide("pods_log") == Decision.ALLOW
            assert decide("resources_delete") == Decision.DENY, "no rule: the starter's default"
            assert decide("anything", server="github-mcp") == Decision.DENY

            def valid(ns: str, name: str) -> str:
                status = kube.request("GET", _bundle_path(ns, name)).get("status") or {}
                conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
                return str(conds.get("Valid", ""))

            await eventually(
                lambda: valid(NS, STARTER) == valid(TEAM_NS, "payments") == "True",
                20,
                "both PolicyBundles reported valid",
            )

            # Node agents: the trust ConfigMap mounted as the chart does (keys.pem) is a
            # key they verify with; mounted while still empty, they stay up and healthy.
            mounted = _kubelet_configmap_dir(
                install.tmp / "trusted-full", {"keys.pem": _published(kube)}
            )
            empty = _kubelet_configmap_dir(install.tmp / "trusted-empty", {})
            agent_sa = f"{FULL}-nodeagent"
            tokens = {
                n: _pod_token(kube, NS, agent_sa, f"agent-{n}", node=n, labels={})
                for n in ("node-with-key", "node-no-key")
            }
            with_key = _node_agent(
                install.tmp, "node-with-key", mounted, replica.target, tokens["node-with-key"]
            )
            no_key = _node_agent(
                install.tmp, "node-no-key", empty, replica.target, tokens["node-no-key"]
            )
            try:
                await eventually(lambda: _acks(with_key.status()) >= 1, 30, "the node agent's ACK")
                await eventually(no_key.healthy, 30, "the keyless node agent healthy")
                await asyncio.sleep(2)
                assert no_key.proc.poll() is None, no_key.log.read_text()[-2000:]
                assert no_key.healthy()
                assert _acks(no_key.status()) == 0, "it cannot verify a bundle without a key"
            finally:
                with_key.stop()
                no_key.stop()
        finally:
            replica.stop()

    def test_a_bundle_of_the_team_that_allows_by_default_conflicts_with_the_starter(self) -> None:
        """Scalars must agree when bundles merge: the platform's deny default holds."""
        from distributor.compiler import CompileError
        from distributor.compiler import compile_bundle as compile_sources
        from distributor.sources import cr_source_name, cr_to_yaml

        starter = one(render(release=RELEASE, namespace=NS), "PolicyBundle", STARTER)
        loose = {**TEAM_BUNDLE, "spec": {**TEAM_BUNDLE["spec"], "defaultDecision": "allow"}}
        with pytest.raises(CompileError) as err:
            compile_sources([(cr_source_name(o), cr_to_yaml(o)) for o in (starter, loose)])
        assert "spec.defaultDecision" in str(err.value)
        assert "conflicts" in str(err.value)

    def test_an_upgrade_keeps_the_key_the_distributor_wrote_and_uninstall_removes_it(
        self, install: Install
    ) -> None:
        kube = install.kube
        if not _secret_key_ids(kube):  # run alone: let the distributor write its key first
            _run_the_charts_distributor(install, "dist-first").stop()
        (kid,) = _secret_key_ids(kube)
        published = _published(kube)
        assert published
        kube.helm(
            "upgrade", RELEASE, str(CHART), "-n", NS,
            "--set", "distributor.logLevel=DEBUG", "--set", "injector.timeoutSeconds=6",
        )  # fmt: skip
        dep = kube.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{DIST}")
        assert "--log-level=DEBUG" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert _secret_key_ids(kube) == [kid], "helm upgrade wiped the generated key"
        assert _published(kube) == published, "helm upgrade wiped the published key"
        # the same with the values reused, and with Helm 3's client-side three-way merge
        kube.helm("upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values")
        assert _secret_key_ids(kube) == [kid]
        kube.helm(
            "upgrade", RELEASE, str(CHART), "-n", NS, "--server-side=false",
            "--set", "injector.timeoutSeconds=7",
        )  # fmt: skip
        assert _secret_key_ids(kube) == [kid], "the three-way merge wiped the generated key"
        assert _published(kube) == published

        restarted = _run_the_charts_distributor(install, "dist-after-upgrade")
        try:
            assert f"signing with the key(s) in Secret {SIGNING}: {kid}" in (
                restarted.log_path.read_text()
            )
        finally:
            restarted.stop()

        kube.helm("uninstall", RELEASE, "-n", NS)
        assert _get(kube, _secret_path()) is None
        assert _get(kube, _trust_path()) is None
        assert _get(kube, _bundle_path(NS, STARTER)) is None


class TestPodSecurityOfTheDefaults:
    @pytest.mark.parametrize("workload", [f"{FULL}-injector", DIST])
    def test_the_pods_are_admitted_under_the_restricted_standard(
        self, kube: ControlPlane, workload: str
    ) -> None:
        ns = "defaults-restricted"
        kube.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})
        dep = one(render(release=RELEASE, namespace=ns), "Deployment", workload)
        spec = {**dep["spec"]["template"]["spec"], "serviceAccountName": "default"}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pss", "labels": dep["spec"]["template"]["metadata"]["labels"]},
            "spec": spec,
        }
        kube.request("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", pod)

    def test_the_node_agent_needs_a_privileged_namespace_and_says_why(
        self, kube: ControlPlane
    ) -> None:
        """hostPID, hostPath and root: refused under baseline, as docs/helm.md warns."""
        ns = "defaults-baseline"
        kube.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": "baseline"})
        ds = one(render(release=RELEASE, namespace=ns), "DaemonSet")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "agent"},
            "spec": {**ds["spec"]["template"]["spec"], "serviceAccountName": "default"},
        }
        with pytest.raises(ApiError) as err:
            kube.request("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", pod)
        assert err.value.status == 403
        assert "hostPID" in str(err.value)
