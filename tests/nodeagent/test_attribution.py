"""Who a host PID belongs to: cgroup text + this node's pod list -> pod, container, tenant."""

from __future__ import annotations

import pytest

from nodeagent.attribution import (
    NO_TENANT,
    NOT_A_POD,
    NOT_SYNCED,
    OWN_POD_UNNAMED,
    UNKNOWN_POD,
    UNLISTED_CONTAINER,
    UNREADABLE,
    attribute,
    owner_of,
)
from nodeagent.cgroup import Namespace
from nodeagent.gpu import BackendMode, GpuSample, NodeSnapshot, ProcessSample
from nodeagent.pods import PodIndex, PodInfo, pod_from_object

UID = "8dbc5577-d0e2-4706-8787-57d52c03ddf2"
UID_ = UID.replace("-", "_")
APP = "14011c7d92a9e513dfd69211da0413dbf319a5e45a02b354ba6e98e10272542d"
SIDECAR = "a" * 64
SANDBOX = "b" * 64
AGENT_UID = "0b7e8a1c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"
AGENT_CID = "d" * 64


def _index(synced: bool = True) -> PodIndex:
    pods = PodIndex()
    pods.upsert(
        PodInfo(UID, "payments-api-0", "payments", {APP: "mcp-server", SIDECAR: "palisade"})
    )
    pods.upsert(PodInfo(AGENT_UID, "palisade-nodeagent-x", "palisade", {AGENT_CID: "nodeagent"}))
    pods.set_namespace("payments", {"palisade.dev/tenant": "payments"})
    pods.synced = synced
    return pods


V1_BESTEFFORT = (
    "".join(
        f"{c}:/kubepods/besteffort/pod{UID}/{{cid}}\n"
        for c in ("9:name=systemd", "8:pids", "4:memory", "2:cpuacct", "1:cpu")
    )
    + "0::/\n"
)
V2_SYSTEMD = (
    f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
    "cri-containerd-{cid}.scope\n"
)
V2_FROM_CGROUPNS = "0::/../../../burstable/pod" + UID + "/{cid}\n"


@pytest.mark.parametrize("shape", [V1_BESTEFFORT, V2_SYSTEMD, V2_FROM_CGROUPNS])
@pytest.mark.parametrize(("cid", "container"), [(APP, "mcp-server"), (SIDECAR, "palisade")])
def test_a_containers_process_is_its_pods_with_the_container_name_and_tenant(
    shape: str, cid: str, container: str
) -> None:
    owner = owner_of(4242, shape.format(cid=cid), _index())
    assert owner.kind == "pod" and owner.attributed
    assert (owner.namespace, owner.pod, owner.container, owner.tenant) == (
        "payments",
        "payments-api-0",
        container,
        "payments",
    )
    assert (owner.pod_uid, owner.container_id, owner.note) == (UID, cid, "")


def test_the_pause_containers_process_is_the_pods_but_no_named_container() -> None:
    owner = owner_of(7, V1_BESTEFFORT.format(cid=SANDBOX), _index())
    assert owner.kind == "pod" and owner.pod == "payments-api-0" and owner.tenant == "payments"
    assert owner.container == "" and owner.container_id == SANDBOX
    assert owner.note == UNLISTED_CONTAINER


@pytest.mark.parametrize(
    "text",
    [
        "0::/system.slice/containerd.service\n",
        "0::/\n",
        "0::/../../../..\n",
        "9:name=systemd:/\n4:memory:/process_api/49f3656ceed192d86bc872db272acd3d\n0::/\n",
        "12:memory:/docker/" + APP + "\n",
    ],
)
def test_a_process_in_no_pod_cgroup_is_a_host_process_and_never_a_tenants(text: str) -> None:
    owner = owner_of(1, text, _index())
    assert owner.kind == "host" and not owner.attributed and owner.reason == NOT_A_POD
    assert (owner.pod, owner.namespace, owner.tenant, owner.pod_uid) == ("", "", "", "")


def test_a_gone_process_is_unreadable() -> None:
    owner = owner_of(1, None, _index())
    assert owner.kind == "host" and owner.reason == UNREADABLE


def test_a_pod_the_node_does_not_know_is_named_by_uid_only() -> None:
    other = "11111111-2222-3333-4444-555555555555"
    text = f"0::/kubepods/besteffort/pod{other}/{APP}\n"
    owner = owner_of(5, text, _index())
    assert owner.kind == "unknown-pod" and owner.reason == UNKNOWN_POD
    assert owner.pod_uid == other and owner.pod == "" and owner.tenant == ""
    assert owner_of(5, text, _index(synced=False)).reason == NOT_SYNCED


def test_a_pod_in_a_namespace_without_tenant_is_named_but_unattributed() -> None:
    text = f"0::/kubepods/besteffort/pod{AGENT_UID}/{AGENT_CID}\n"
    owner = owner_of(9, text, _index())
    assert (owner.kind, owner.namespace, owner.container) == ("pod", "palisade", "nodeagent")
    assert owner.reason == NO_TENANT and not owner.attributed


def test_the_agents_own_pod_seen_through_its_cgroup_namespace() -> None:
    unnamed = owner_of(1, "0::/\n", _index(), Namespace(private=True))
    assert unnamed.kind == "own-pod" and unnamed.reason == OWN_POD_UNNAMED
    named = owner_of(1, "0::/\n", _index(), Namespace(private=True, pod_uid=AGENT_UID))
    assert (named.kind, named.pod, named.namespace) == ("pod", "palisade-nodeagent-x", "palisade")
    sandbox = owner_of(
        2, f"0::/../{SANDBOX}\n", _index(), Namespace(private=True, pod_uid=AGENT_UID)
    )
    assert sandbox.pod == "palisade-nodeagent-x" and sandbox.container_id == SANDBOX


def test_of_several_pods_on_a_path_the_one_this_node_knows_owns_the_process() -> None:
    outer = "11111111-2222-3333-4444-555555555555"
    text = f"0::/kubepods/burstable/pod{outer}/{'e' * 64}/kubepods/besteffort/pod{UID}/{APP}\n"
    owner = owner_of(3, text, _index())
    assert owner.pod_uid == UID and owner.container == "mcp-server"


def test_native_sidecars_and_ephemeral_containers_are_named_from_the_pod_status() -> None:
    pod = pod_from_object(
        {
            "metadata": {"uid": UID, "name": "p", "namespace": "payments"},
            "status": {
                "containerStatuses": [{"name": "app", "containerID": f"containerd://{APP}"}],
                "initContainerStatuses": [
                    {"name": "palisade", "containerID": f"containerd://{SIDECAR}"}
                ],
                "ephemeralContainerStatuses": [
                    {"name": "debugger", "containerID": f"containerd://{AGENT_CID}"}
                ],
            },
        }
    )
    assert pod is not None
    assert dict(pod.containers) == {APP: "app", SIDECAR: "palisade", AGENT_CID: "debugger"}


def test_gpu_attribution_uses_the_same_owner_rule() -> None:
    gpu = GpuSample(
        index=0,
        uuid="GPU-1",
        processes=(
            ProcessSample(pid=10, gpu_uuid="GPU-1", used_memory_bytes=1 << 30),
            ProcessSample(pid=11, gpu_uuid="GPU-1", used_memory_bytes=1 << 20),
        ),
    )
    snap = NodeSnapshot(time=0.0, mode=BackendMode.NVML, gpus=(gpu,))
    texts = {10: V2_FROM_CGROUPNS.format(cid=APP), 11: "0::/../../../..\n"}
    pod_proc, host_proc = attribute(snap, texts, _index(), None, Namespace(private=True))
    assert (pod_proc.tenant, pod_proc.container, pod_proc.attributed) == (
        "payments",
        "mcp-server",
        True,
    )
    assert host_proc.unattributed_reason == NOT_A_POD and host_proc.tenant == ""


def test_owner_json_carries_every_field_an_operator_asks_for() -> None:
    doc = owner_of(4242, V2_SYSTEMD.format(cid=APP), _index()).to_json()
    assert doc == {
        "pid": 4242,
        "kind": "pod",
        "attributed": True,
        "namespace": "payments",
        "pod": "payments-api-0",
        "container": "mcp-server",
        "tenant": "payments",
        "podUID": UID,
        "containerID": APP,
        "runtime": "containerd",
        "cgroupVersion": 2,
        "cgroupDriver": "systemd",
        "cgroupPath": V2_SYSTEMD.format(cid=APP)[3:].strip(),
        "reason": "",
        "note": "",
    }
