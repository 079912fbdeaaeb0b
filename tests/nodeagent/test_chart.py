"""The chart's node agent objects: rendered by the real helm, accepted by a real API server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e


def _render(kube: Any, release: str, *sets: str) -> list[dict[str, Any]]:
    args = [
        "template",
        release,
        "charts/palisade",
        "--namespace",
        "palisade",
        "--set",
        "nodeAgent.enabled=true",
        "--set",
        "injector.enabled=false",
    ]
    for s in sets:
        args += ["--set", s]
    out = kube.helm(*args).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return [d for d in docs if d["metadata"]["name"].endswith("-nodeagent")]


def test_the_daemonset_has_host_pids_the_kubelet_socket_read_only_tolerations_and_probes(
    kube: Any,
) -> None:
    objs = _render(
        kube,
        "na",
        "nodeAgent.gpuNodesOnly=true",
        "nodeAgent.runtimeClassName=nvidia",
        "nodeAgent.trustedKeysSecret=bundle-keys",
    )
    by_kind = {o["kind"]: o for o in objs}
    assert set(by_kind) == {"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    spec = by_kind["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    (c,) = spec["containers"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["pod-resources"]["readOnly"] is True
    assert mounts["pod-resources"]["mountPath"] == "/var/lib/kubelet/pod-resources"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["KILL"]}
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "palisade" in env["PALISADE_NODEAGENT_SYSTEM_NAMESPACES"]["value"].split(",")
    assert (
        c["args"][:2] == ["nodeagent", "run"] and "--trusted-key=/etc/palisade/trusted" in c["args"]
    )
    rules = by_kind["ClusterRole"]["rules"]
    grants = {
        (r["apiGroups"][0], res, verb)
        for r in rules
        for res in r["resources"]
        for verb in r["verbs"]
    }
    assert ("", "pods", "watch") in grants and ("", "namespaces", "list") in grants
    assert ("", "events", "create") in grants and ("", "pods/eviction", "create") in grants
    assert not any(verb in ("delete", "update", "*") for _, _, verb in grants)


def test_without_options_there_is_no_node_selector_or_runtime_class(kube: Any) -> None:
    (ds,) = [o for o in _render(kube, "plain") if o["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert "nodeSelector" not in spec and "runtimeClassName" not in spec


def test_the_rendered_objects_are_accepted_by_the_api_server(kube: Any) -> None:
    release = f"na{uuid.uuid4().hex[:6]}"
    kube.create_namespace("palisade")
    manifest = yaml.safe_dump_all(_render(kube, release))
    out = kube.kubectl("apply", "--namespace", "palisade", "-f", "-", input=manifest)
    assert out.returncode == 0
    path = f"/apis/apps/v1/namespaces/palisade/daemonsets/{release}-palisade-nodeagent"
    ds = kube.request("GET", path)
    assert ds["spec"]["template"]["spec"]["hostPID"] is True
