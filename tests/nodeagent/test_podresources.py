"""The kubelet PodResources client against a real gRPC server serving the vendored proto."""

from __future__ import annotations

from typing import Any

import pytest

from nodeagent.attribution import allocations_by_pod, attribute
from nodeagent.gpu import BackendMode, GpuSample, MigSample, NodeSnapshot, ProcessSample
from nodeagent.podresources.client import PodResourcesClient, PodResourcesError
from nodeagent.pods import ContainerDevices, PodIndex, PodInfo

G0 = "GPU-00000000-0000-0000-0000-000000000000"
UID = "8dbc5577-d0e2-4706-8787-57d52c03ddf2"
CID = "a" * 64


async def test_list_returns_every_container_device_including_mig_resources(kubelet: Any) -> None:
    kubelet.lister.items = [
        ContainerDevices("research", "nb", "jupyter", "nvidia.com/mig-1g.10gb", ("MIG-1", "MIG-2")),
        ContainerDevices("research", "nb", "sidecar", "nvidia.com/gpu", (G0,)),
        ContainerDevices("payments", "api", "main", "cpu-manager/none", ()),
    ]
    got = await kubelet.client.list()
    assert got == kubelet.lister.items
    assert kubelet.lister.calls == 1


async def test_the_wire_method_is_the_kubelets_own(kubelet: Any) -> None:
    import grpc.aio

    from nodeagent.podresources.v1 import api_pb2

    async with grpc.aio.insecure_channel(f"unix://{kubelet.socket}") as channel:
        call = channel.unary_unary(
            "/v1.PodResourcesLister/List",
            request_serializer=api_pb2.ListPodResourcesRequest.SerializeToString,
            response_deserializer=api_pb2.ListPodResourcesResponse.FromString,
        )
        resp = await call(api_pb2.ListPodResourcesRequest(), timeout=2)
    assert list(resp.pod_resources) == []


async def test_an_unreachable_kubelet_is_a_clear_error(tmp_path: Any) -> None:
    client = PodResourcesClient(str(tmp_path / "nothing.sock"), timeout_s=0.5)
    with pytest.raises(PodResourcesError, match="kubelet PodResources List failed: UNAVAILABLE"):
        await client.list()
    await client.close()


async def test_mig_allocations_decide_whether_a_mig_process_is_on_its_own_slice(
    kubelet: Any,
) -> None:
    kubelet.lister.items = [
        ContainerDevices("research", "nb", "jupyter", "nvidia.com/mig-1g.10gb", ("MIG-2",))
    ]
    pods = PodIndex()
    pods.upsert(PodInfo(UID, "nb", "research", {CID: "jupyter"}))
    pods.set_namespace("research", {"palisade.dev/tenant": "research"})
    gpu = GpuSample(
        index=0,
        uuid=G0,
        mig_enabled=True,
        mig=(
            MigSample(gi_id=1, ci_id=0, profile="1g.10gb", uuid="MIG-1"),
            MigSample(gi_id=2, ci_id=0, profile="1g.10gb", uuid="MIG-2"),
        ),
        processes=(
            ProcessSample(pid=10, gpu_uuid=G0, gi_id=2, used_memory_bytes=1),
            ProcessSample(pid=11, gpu_uuid=G0, gi_id=1, used_memory_bytes=1),
        ),
    )
    cg = f"0::/kubepods/burstable/pod{UID}/{CID}\n"
    allocated = allocations_by_pod(await kubelet.client.list(), pods)
    snap = NodeSnapshot(time=0.0, mode=BackendMode.SIMULATED, gpus=(gpu,))
    procs = {p.pid: p for p in attribute(snap, {10: cg, 11: cg}, pods, allocated)}
    assert procs[10].allocated is True and procs[10].profile == "1g.10gb"
    assert procs[11].allocated is False
    assert procs[10].container == "jupyter" and procs[10].tenant == "research"


def test_the_generated_stubs_match_the_vendored_proto() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        ["bash", "nodeagent/podresources/generate.sh", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr


def test_before_the_first_pod_list_a_pod_process_is_unattributed_and_says_why() -> None:
    pods = PodIndex()
    gpu = GpuSample(index=0, uuid=G0, processes=(ProcessSample(pid=5, gpu_uuid=G0),))
    snap = NodeSnapshot(time=0.0, mode=BackendMode.SIMULATED, gpus=(gpu,))
    cg = f"0::/kubepods/burstable/pod{UID}/{CID}\n"
    (p,) = attribute(snap, {5: cg}, pods, None)
    assert p.unattributed_reason == "pod list not yet synced" and p.pod_uid == UID
    pods.synced = True
    (p,) = attribute(snap, {5: cg}, pods, None)
    assert p.unattributed_reason == "pod is not known on this node"
