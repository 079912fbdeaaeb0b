"""Fixtures for the node agent: a fake clock, a real PodResources gRPC server, a node builder.

Everything is real except the GPU (the simulated backend) and time (a clock the
test steps): the audit chain is written to disk and verified, the kubelet API is
a gRPC server on a unix socket serving the vendored proto, processes to kill are
real children.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from rich.console import Console

from nodeagent.agent import Agent, AgentSettings, QuotaConfig
from nodeagent.enforce import Enforcer, KubeApi
from nodeagent.podresources.client import PodResourcesClient
from nodeagent.podresources.v1 import api_pb2, api_pb2_grpc
from nodeagent.pods import AllocationSource, ContainerDevices, PodIndex
from nodeagent.quota import quotas_from_bundle
from nodeagent.sim import Scenario, ScenarioCgroups, SimulatedBackend
from nodeagent.status import render
from palisade.audit import AuditWriter, Signer, verify_files


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Lister(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    """A kubelet's PodResources endpoint serving whatever the test sets."""

    def __init__(self) -> None:
        self.items: list[ContainerDevices] = []
        self.calls = 0

    async def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        resp = api_pb2.ListPodResourcesResponse()
        pods: dict[tuple[str, str], Any] = {}
        for item in self.items:
            key = (item.namespace, item.pod)
            if key not in pods:
                pods[key] = resp.pod_resources.add(name=item.pod, namespace=item.namespace)
            c = pods[key].containers.add(name=item.container)
            c.devices.add(resource_name=item.resource, device_ids=list(item.device_ids))
        return resp


@dataclass
class Kubelet:
    lister: Lister
    socket: Path
    client: PodResourcesClient


@pytest.fixture
async def kubelet(tmp_path: Path) -> AsyncIterator[Kubelet]:
    sock = tmp_path / "kubelet.sock"
    server = grpc.aio.server()
    lister = Lister()
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(lister, server)
    server.add_insecure_port(f"unix://{sock}")
    await server.start()
    client = PodResourcesClient(str(sock), timeout_s=2.0)
    try:
        yield Kubelet(lister, sock, client)
    finally:
        await client.close()
        await server.stop(None)


CHILD_MARK = "palisade-nodeagent-test-child"


class OwnChildrenOnly:
    """A cgroup reader answering only for live processes carrying :data:`CHILD_MARK`."""

    def __init__(self, inner: ScenarioCgroups) -> None:
        self._inner = inner

    def read(self, pid: int) -> str | None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return self._inner.read(pid) if CHILD_MARK.encode() in cmdline else None


@dataclass
class Node:
    """One simulated node with the agent wired to real adapters."""

    agent: Agent
    clock: FakeClock
    scenario: Scenario
    audit_path: Path
    writer: AuditWriter

    async def step(self, seconds: float = 1.0) -> list[Any]:
        self.clock.advance(seconds)
        return await self.agent.tick()

    async def run_until(self, t: float) -> list[Any]:
        """Tick once a second up to scenario time ``t``; returns every action record."""
        records: list[Any] = []
        while self.clock.now - self.start < t:
            records += await self.step(1.0)
        return records

    @property
    def start(self) -> float:
        return self.agent.backend._start  # type: ignore[attr-defined, no-any-return]

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        lines = self.audit_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def audit_verifies(self) -> bool:
        return verify_files([self.audit_path]).ok

    def status_text(self) -> str:
        out = io.StringIO()
        render(self.agent.status(), Console(file=out, width=220, color_system=None))
        return out.getvalue()

    def gpu(self, uuid: str) -> dict[str, Any]:
        return next(g for g in self.agent.status()["gpus"] if g["uuid"] == uuid)


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Node] = []

    async def make(
        scenario: Mapping[str, Any],
        bundle: Mapping[str, Any] | None = None,
        *,
        allocations: AllocationSource | None = None,
        kube: KubeApi | None = None,
        dry_run: bool = False,
        kill_grace_s: float = 0.5,
        system_namespaces: Iterable[str] = ("kube-system",),
        pods: PodIndex | None = None,
        signal_cgroups: Any = None,
    ) -> Node:
        clock = FakeClock()
        sc = Scenario(scenario)
        backend = SimulatedBackend(sc, clock)
        cgroups = ScenarioCgroups(sc)
        path = tmp_path / f"audit-{len(made)}" / "nodeagent.jsonl"
        writer = AuditWriter(path, Signer.generate(), source=sc.node, fsync="never", clock=clock)
        await writer.start()
        # The enforcer re-reads a PID's cgroup before each signal. Simulated cgroup
        # texts outlive the processes, so guard them: only this test run's own
        # children (marked on their command line) may ever be signalled.
        signal_cgroups = signal_cgroups or OwnChildrenOnly(cgroups)
        enforcer = Enforcer(
            audit=writer, kube=kube, cgroups=signal_cgroups, kill_grace_s=kill_grace_s
        )
        agent = Agent(
            AgentSettings(
                node=sc.node, dry_run=dry_run, system_namespaces=frozenset(system_namespaces)
            ),
            backend,
            cgroups,
            pods if pods is not None else sc.pod_index(),
            allocations if allocations is not None else sc.static_allocations(),
            enforcer,
            clock=clock,
        )
        if bundle is not None:
            quotas, namespaces = quotas_from_bundle(bundle)
            agent.set_quotas(QuotaConfig(quotas, namespaces, revision=7, source="test"))
        node = Node(agent, clock, sc, path, writer)
        made.append(node)
        await agent.tick()  # t = 0
        return node

    yield make
    for node in made:
        await node.agent.enforcer.close()
        await node.writer.aclose()
