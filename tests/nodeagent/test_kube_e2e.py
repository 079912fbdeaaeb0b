"""Against a real kube-apiserver: the pod watcher, Events on pods, evictions and PDBs.

The control plane has no kubelet, so pods are bound to a made-up node by setting
``spec.nodeName`` and stay Pending; the one whose PodDisruptionBudget must hold is
marked Running through its status subresource (the Eviction API lets Pending pods
go whatever the budget says).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from nodeagent.kube import KubeActions, PodWatcher
from nodeagent.pods import PodIndex

pytestmark = pytest.mark.e2e

GIB = 2**30
NODE = "gpu-node-e2e"
G0 = "GPU-00000000-0000-0000-0000-000000000000"


def _pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "main", "image": "registry.invalid/cuda:1"}],
        },
    }


async def _until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _cgroup(uid: str, n: int) -> str:
    return f"0::/kubepods/burstable/pod{uid}/{n:064x}\n"


async def test_watched_pods_are_attributed_reported_and_evicted_respecting_budgets(
    kube: Any, make_node: Any
) -> None:
    ns = f"gpu-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(ns, {"palisade.dev/tenant": "payments"})
    free = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", _pod("batch"))
    guarded = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", _pod("api", {"app": "guarded"}))
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/api/status",
        {"status": {"phase": "Running"}},
        content_type="application/merge-patch+json",
    )
    kube.request(
        "POST",
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "guard"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )
    free_uid, guarded_uid = free["metadata"]["uid"], guarded["metadata"]["uid"]

    async with kube.api_client() as api:
        index = PodIndex()
        watcher = PodWatcher(api, NODE, index)
        await watcher.start()
        try:
            await _until(
                lambda: (
                    index.get(free_uid) is not None
                    and index.get(guarded_uid) is not None
                    and index.tenant_of(ns) == "payments"
                ),
                "the watcher to see both pods and the namespace label",
            )
            node = await make_node(
                {
                    "node": NODE,
                    "gpus": [{"index": 0, "uuid": G0, "powerWatts": 300}],
                    "processes": [
                        {
                            "pid": 990001001,
                            "gpu": 0,
                            "memoryGiB": 30,
                            "cgroup": _cgroup(free_uid, 1),
                        },
                        {
                            "pid": 990001002,
                            "gpu": 0,
                            "memoryGiB": 20,
                            "cgroup": _cgroup(guarded_uid, 2),
                        },
                    ],
                },
                {
                    "spec": {
                        "tenants": [
                            {
                                "name": "payments",
                                "namespaces": [ns],
                                "gpuQuota": {
                                    "gpuMemoryBytes": 10 * GIB,
                                    "enforcement": "evict",
                                    "gracePeriodSeconds": 1,
                                },
                            }
                        ]
                    }
                },
                kube=KubeActions(api, NODE),
                pods=index,
            )
            records = await node.run_until(1)
        finally:
            await watcher.stop()

    attributed = {p.pid: (p.pod, p.namespace, p.tenant) for p in node.agent.attributed}
    assert attributed == {
        990001001: ("batch", ns, "payments"),
        990001002: ("api", ns, "payments"),
    }
    outcomes = {r.pod: r.outcome for r in records}
    assert outcomes == {
        "batch": "event created; evicted",
        "api": "event created; refused: disruption budget",
    }
    batch = kube.request("GET", f"/api/v1/namespaces/{ns}/pods/batch")
    assert batch["metadata"].get("deletionTimestamp"), "eviction started graceful deletion"
    api_pod = kube.request("GET", f"/api/v1/namespaces/{ns}/pods/api")
    assert not api_pod["metadata"].get("deletionTimestamp"), "the budget kept it"
    events = kube.request("GET", f"/api/v1/namespaces/{ns}/events")["items"]
    ours = [e for e in events if e["reason"] == "GPUQuotaExceeded"]
    assert {e["involvedObject"]["name"] for e in ours} == {"batch", "api"}
    assert all(e["type"] == "Warning" and "gpuMemoryBytes" in e["message"] for e in ours)
    assert {e["involvedObject"]["uid"] for e in ours} == {free_uid, guarded_uid}
    audit = [a for a in node.audit() if a["details"]["phase"] == "done"]
    assert sorted(a["details"]["outcome"] for a in audit) == sorted(outcomes.values())
    assert len(node.audit()) == 4, "a decided record before each eviction, then its outcome"
    assert all(a["decision"] == "evict" for a in audit) and node.audit_verifies()


async def test_a_deleted_pod_leaves_the_index_and_its_processes_become_unattributed(
    kube: Any,
) -> None:
    ns = f"gpu-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(ns, {"palisade.dev/tenant": "research"})
    created = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", _pod("nb"))
    other = dict(_pod("elsewhere"))
    other["spec"] = {**other["spec"], "nodeName": "another-node"}
    elsewhere = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", other)
    uid = created["metadata"]["uid"]
    async with kube.api_client() as api:
        index = PodIndex()
        watcher = PodWatcher(api, NODE, index)
        await watcher.start()
        try:
            await _until(lambda: index.get(uid) is not None, "the pod to be watched")
            assert index.get(elsewhere["metadata"]["uid"]) is None, "only this node's pods"
            kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/nb", {"gracePeriodSeconds": 0})
            await _until(lambda: index.get(uid) is None, "the pod to leave the index")
        finally:
            await watcher.stop()
