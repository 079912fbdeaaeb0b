"""Device allocations from the kubelet's PodResources API (gRPC ``List`` on a unix socket).

The kubelet serves ``v1.PodResourcesLister`` at
``/var/lib/kubelet/pod-resources/kubelet.sock``; ``List`` returns, per pod and
container, the device ids each resource was allocated (``nvidia.com/gpu`` with
GPU UUIDs, ``nvidia.com/mig-<profile>`` with MIG UUIDs). Errors surface as
:class:`PodResourcesError`; the agent then treats allocations as unknown and
never acts on "allocated devices only" without them.
"""

from __future__ import annotations

import grpc
import grpc.aio

from nodeagent.podresources.v1 import api_pb2, api_pb2_grpc
from nodeagent.pods import ContainerDevices

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"


class PodResourcesError(Exception):
    """The kubelet could not be asked (socket missing, timeout, RPC error)."""


def from_response(resp: api_pb2.ListPodResourcesResponse) -> list[ContainerDevices]:
    out: list[ContainerDevices] = []
    for pod in resp.pod_resources:
        for c in pod.containers:
            for d in c.devices:
                out.append(
                    ContainerDevices(
                        namespace=pod.namespace,
                        pod=pod.name,
                        container=c.name,
                        resource=d.resource_name,
                        device_ids=tuple(d.device_ids),
                    )
                )
    return out


class PodResourcesClient:
    """An :class:`nodeagent.pods.AllocationSource` backed by the kubelet."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = 5.0) -> None:
        self._target = f"unix://{socket_path}"
        self._timeout = timeout_s
        self._channel: grpc.aio.Channel | None = None

    async def list(self) -> list[ContainerDevices]:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target)
        stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            resp = await stub.List(api_pb2.ListPodResourcesRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise PodResourcesError(
                f"kubelet PodResources List failed: {exc.code().name}: {exc.details()}"
            ) from exc
        return from_response(resp)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
