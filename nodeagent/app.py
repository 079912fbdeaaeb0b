"""Wiring and lifecycle of ``palisade nodeagent run``: real adapters in, agent loop out.

:class:`Options` is every setting the command line gives; :func:`serve` builds
the backend (NVML, falling back to no-GPU mode; or a simulated scenario), the
cgroup reader, the pod index and its watcher, the kubelet PodResources client,
the audit writer, the enforcer, the distributor client and the watch on its
trusted keys, the HTTP server, and runs until SIGTERM/SIGINT, then stops
everything within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent import quota
from nodeagent.agent import Agent, AgentSettings, QuotaConfig
from nodeagent.cgroup import HOST, CgroupReader, Namespace, ProcCgroupReader
from nodeagent.enforce import Enforcer, KubeApi
from nodeagent.gpu import BackendUnavailable, GpuBackend, NoGpuBackend
from nodeagent.link import DistributorLink
from nodeagent.pods import AllocationSource, PodIndex
from nodeagent.trust import TrustWatcher
from palisade.bundle import TrustedKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    node: str
    listen_host: str = "0.0.0.0"  # noqa: S104 - a DaemonSet serves probes and scrapes
    listen_port: int = 9400
    backend: str = "auto"
    """``auto`` (NVML, else no-GPU mode), ``nvml``, ``none`` or ``sim``."""
    scenario: Path | None = None
    interval_s: float = 1.0
    dry_run: bool = False
    proc_root: Path = Path("/proc")
    pod_resources_socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    kube: str = "auto"
    """``auto`` (in-cluster when running in a pod), ``off``, or a kubeconfig path."""
    bundle: Path | None = None
    distributors: tuple[str, ...] = ()
    distributor_token_file: Path | None = None
    """The projected ServiceAccount token the distributor authenticates the agent by."""
    trusted_keys: tuple[Path, ...] = ()
    """Public key PEM files (several keys each) or directories of ``*.pem``; re-read while
    running, so a key published after the agent started is taken up without a restart."""
    trusted_key_poll_s: float = 5.0
    """How often the trusted-key paths are read again (0: only at start)."""
    state_dir: Path = Path("/var/lib/palisade-nodeagent")
    audit_key: Path | None = None
    kill_grace_s: float = 10.0
    heartbeat_interval_s: float = 10.0
    system_namespaces: frozenset[str] = field(default=quota.DEFAULT_SYSTEM_NAMESPACES)
    pod_uid: str = ""
    """The agent's own pod UID (downward API): names its own pod's processes, which
    under a private cgroup namespace carry no pod UID in their cgroup paths."""


def load_bundle_file(path: Path) -> QuotaConfig:
    """Quotas from a local bundle file, validated by ``palisade.bundle`` like any bundle.

    Raises ``palisade.bundle.BundleError`` (with file positions) or ``quota.QuotaError``.
    """
    from palisade.bundle import bundle_digest, load_file, to_document

    bundle = load_file(path)
    quotas, namespaces = quota.quotas_from_bundle(to_document(bundle))
    return QuotaConfig(
        quotas, namespaces, revision=0, digest=bundle_digest(bundle), source=f"file:{path}"
    )


def make_backend(opts: Options) -> tuple[GpuBackend, CgroupReader, PodIndex, Any]:
    """The backend, its cgroup reader, a pod index and static allocations (sim only)."""
    if opts.backend == "sim":
        from nodeagent.sim import Scenario, ScenarioCgroups, SimulatedBackend

        if opts.scenario is None:
            raise ValueError("--backend sim needs --scenario FILE")
        scenario = Scenario.load(opts.scenario)
        backend = SimulatedBackend(scenario, time.time)
        # An explicit --proc-root makes a simulated node read real cgroup files
        # (the benchmark lays them out), else the scenario's own texts.
        cgroups: CgroupReader = (
            ProcCgroupReader(opts.proc_root)
            if opts.proc_root != Path("/proc")
            else ScenarioCgroups(scenario)
        )
        return backend, cgroups, scenario.pod_index(), scenario
    cgroups = ProcCgroupReader(opts.proc_root)
    if opts.backend == "none":
        return NoGpuBackend("no-GPU mode requested (--backend none)"), cgroups, PodIndex(), None
    try:
        from nodeagent.nvml import NvmlBackend

        return NvmlBackend(), cgroups, PodIndex(), None
    except BackendUnavailable as exc:
        if opts.backend == "nvml":
            raise
        log.warning("no NVIDIA driver: running in no-GPU mode", extra={"reason": str(exc)})
        return NoGpuBackend(f"no NVIDIA driver on this node: {exc}"), cgroups, PodIndex(), None


def cgroup_namespace(opts: Options, cgroups: CgroupReader) -> Namespace:
    """The agent's cgroup namespace as seen through the ``/proc`` it reads."""
    if not isinstance(cgroups, ProcCgroupReader):
        return HOST  # a scenario's texts are written as the host sees them
    return Namespace.detect(cgroups.root, opts.pod_uid)


async def _kube_client(opts: Options) -> Any:
    if opts.kube == "off":
        return None
    from kubernetes_asyncio import client, config

    if opts.kube == "auto":
        if "KUBERNETES_SERVICE_HOST" not in os.environ:
            return None
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    cfg = client.Configuration()
    await config.load_kube_config(config_file=opts.kube, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


class _ShippingAudit:
    """Writes records to the local signed chain, then queues them for the distributor."""

    def __init__(self, writer: Any, dist: Any) -> None:
        self._writer = writer
        self._dist = dist

    async def append(self, entry: Any, secret_names: Any = ()) -> dict[str, Any]:
        record: dict[str, Any] = await self._writer.append(entry, secret_names)
        if self._dist is not None:
            from palisade.audit import to_proto

            try:
                self._dist.record_audit([to_proto(record)])
            except Exception as exc:
                log.warning("audit record not queued for shipping", extra={"error": str(exc)})
        return record


async def serve(opts: Options) -> int:
    from nodeagent import server
    from palisade.audit import AuditWriter, Signer, load_signer

    # Bad input fails here, before anything is started.
    initial = load_bundle_file(opts.bundle) if opts.bundle is not None else None
    backend, cgroups, pods, scenario = make_backend(opts)
    api = await _kube_client(opts)
    watcher = None
    kube: KubeApi | None = None
    if api is not None:
        from nodeagent.kube import KubeActions, PodWatcher

        pods = PodIndex()
        watcher = PodWatcher(api, opts.node, pods)
        kube = KubeActions(api, opts.node)
    allocations: AllocationSource | None = None
    if scenario is not None and api is None:
        allocations = scenario.static_allocations()
    elif _usable_socket(opts.pod_resources_socket):
        from nodeagent.podresources.client import PodResourcesClient

        allocations = PodResourcesClient(str(opts.pod_resources_socket))
    signer = load_signer(opts.audit_key) if opts.audit_key else Signer.generate()
    writer = AuditWriter(opts.state_dir / "audit" / "nodeagent.jsonl", signer, source=opts.node)
    await writer.start()
    agent_box: list[Agent] = []
    ns = cgroup_namespace(opts, cgroups)
    enforcer = Enforcer(
        audit=_ShippingAudit(writer, None),
        kube=kube,
        cgroups=cgroups,
        kill_grace_s=opts.kill_grace_s,
        bundle_revision=lambda: agent_box[0].config.revision if agent_box else 0,
        cgroup_ns=ns,
    )
    agent = Agent(
        AgentSettings(
            node=opts.node,
            interval_s=opts.interval_s,
            dry_run=opts.dry_run,
            system_namespaces=opts.system_namespaces,
        ),
        backend,
        cgroups,
        pods,
        allocations,
        enforcer,
        cgroup_ns=ns,
    )
    agent_box.append(agent)
    dist, trust = _distribution_link(opts, agent_box, writer)
    if dist is not None:
        enforcer.set_audit(_ShippingAudit(writer, dist))
    if initial is not None:
        agent.set_quotas(initial)
    runner, port = await server.start(agent, opts.listen_host, opts.listen_port)
    log.info(
        "node agent serving",
        extra={"port": port, "mode": backend.mode.value, "cgroup_ns_private": ns.private},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if watcher is not None:
        await watcher.start()
    if dist is not None and trust is not None:
        await dist.start()
        await trust.start(dist.set_trusted)
    try:
        await agent.run(stop)
    finally:
        deadline = opts.kill_grace_s + 10  # pending SIGKILLs first, then the rest
        if trust is not None:
            await trust.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_shutdown(agent, watcher, dist, runner, writer, api), deadline)
        backend.close()
    return 0


async def _shutdown(
    agent: Agent, watcher: Any, dist: Any, runner: Any, writer: Any, api: Any
) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agent.enforcer.settle(), agent.enforcer.kill_grace_s + 1)
    await agent.enforcer.close()
    if watcher is not None:
        await watcher.stop()
    if dist is not None:
        await dist.stop()
    await runner.cleanup()
    await writer.aclose()
    if api is not None:
        await api.close()
    if agent.allocations is not None and hasattr(agent.allocations, "close"):
        await agent.allocations.close()


def _distribution_link(
    opts: Options, agent_box: list[Agent], writer: Any = None
) -> tuple[DistributorLink | None, TrustWatcher | None]:
    """The shared distributor client (quotas in, heartbeats out) and its key watch."""
    if not opts.distributors:
        return None, None
    from palisade.distribution import ActiveBundle, ClientSettings, DistributionClient
    from palisade.v1 import distribution_pb2

    def activate(bundle: ActiveBundle) -> None:
        quotas, namespaces = quota.quotas_from_bundle(dict(bundle.document))
        config = QuotaConfig(quotas, namespaces, bundle.revision, bundle.digest, "distributor")
        if agent_box:
            agent_box[0].set_quotas(config)

    def summary() -> dict[str, Any]:
        agent = agent_box[0]
        agent.heartbeat["lastSent"] = time.time()
        agent.heartbeat["sent"] = int(agent.heartbeat.get("sent", 0)) + 1
        return agent.summary()

    identity = distribution_pb2.ClientIdentity(
        kind=distribution_pb2.CLIENT_KIND_NODE_AGENT, id=opts.node, node=opts.node
    )
    trust = TrustWatcher(opts.trusted_keys, poll_s=opts.trusted_key_poll_s)
    settings = ClientSettings(
        targets=opts.distributors,
        state_dir=opts.state_dir / "distribution",
        trusted=trust.load(),
        heartbeat_interval_s=opts.heartbeat_interval_s,
        token_file=opts.distributor_token_file,
        # the distributor stores only records signed by a key registered for this agent
        audit_keys=(_audit_key(writer),) if writer is not None else (),
    )

    def make(keys: TrustedKeys) -> DistributionClient:
        return DistributionClient(
            dataclasses.replace(settings, trusted=keys),
            identity,
            activate,
            summary=summary,
            health=lambda: agent_box[0].health() if agent_box else "starting",
            counters=lambda: agent_box[0].counters() if agent_box else {},
        )

    link = DistributorLink(make, settings.trusted)
    if agent_box:
        agent_box[0].link = link.view
        agent_box[0].trust = trust.document
    return link, trust


def _audit_key(writer: Any) -> Any:
    from palisade.v1 import distribution_pb2

    kid, source, proof = writer.key_proof()
    return distribution_pb2.AuditKey(key_id=kid, source=source, proof=proof)


def _usable_socket(path: Path) -> bool:
    """Whether the kubelet's PodResources socket is there for us to use.

    The kubelet keeps it root-only: as another user the agent runs without
    allocation data (GPU use is still attributed through cgroups), and says so.
    """
    try:
        present = path.exists()
    except PermissionError:
        present = True
    if present and not os.access(path, os.R_OK | os.W_OK):
        log.warning(
            "cannot use the kubelet's PodResources socket %s (it is root-only): running "
            "without device allocations",
            path,
        )
        return False
    return present
