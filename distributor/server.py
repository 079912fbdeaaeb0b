"""One distributor replica: sources -> compile -> store -> hub -> streams, plus the fleet API.

``Distributor.run()`` starts the gRPC server (``DistributionService``), the
HTTP/JSON fleet API and the background loops:

- *source loop*: takes source snapshots, waits ``debounce_s`` for a burst to
  settle, compiles the last snapshot and publishes it; a snapshot that does not
  compile is logged with file, line and field, kept as ``last_error`` (shown by
  ``palisade fleet bundles``) and written to the resources' status in CRD mode,
  and the previous revision keeps being served;
- *store loop*: every ``poll_s`` picks up revisions published by other replicas
  (or by a rollback), delivers approval answers for this replica's streams, and
  flushes changed fleet rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from distributor import replay_gate
from distributor.approvers import Approvers, NoApprovers
from distributor.compiler import Compiled, CompileError, SourceError, compile_bundle
from distributor.forward import JsonLinesForwarder
from distributor.replay_gate import GateResult, GateSettings
from distributor.service import Hub, generic_handler
from distributor.sources import Snapshot
from distributor.store import AsyncStore, Store
from distributor.subscriber_auth import Authenticator
from palisade.bundle import canonical_json

log = logging.getLogger(__name__)


class Source(Protocol):
    def snapshots(self) -> AsyncIterator[Snapshot]: ...

    def published(self) -> None:
        """The last snapshot was published (not refused by validation or the replay gate)."""


@dataclass(frozen=True)
class Settings:
    replica_id: str
    """Names this replica in fleet rows and logs."""
    store_path: Path
    """SQLite file shared by every replica."""
    grpc_listen: str = "127.0.0.1:0"
    http_listen: str = "127.0.0.1:0"
    debounce_s: float = 0.2
    """Quiet time after a source change before compiling (bursts become one revision)."""
    poll_s: float = 0.5
    """How often the store is read for other replicas' revisions and approval answers."""
    flush_s: float = 1.0
    heartbeat_grace_s: float = 40.0
    gone_after_s: float = 300.0
    approval_window_s: float = 300.0
    """How long an approved call may be retried."""
    admin_token: str = field(default="", repr=False)
    """Bearer token required on the HTTP API when set."""
    tls_cert_file: Path | None = None
    """Serve gRPC over TLS with this certificate chain (PEM) and ``tls_key_file``."""
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    """When set, clients must present a certificate signed by this CA (mTLS)."""
    bind_identity: bool = False
    """With mTLS: refuse a Hello whose id is not a name in the client certificate."""
    audit_forward: str = ""
    """Append newly stored audit records as JSON lines to this file (``-``: stdout)."""
    audit_store: str = field(default="", repr=False)
    """``postgresql://...``: audit records go to PostgreSQL; empty: the SQLite file."""
    replay_gate: GateSettings = field(default_factory=GateSettings)
    """Replay recent calls against every changed candidate before publishing it."""


class Distributor:
    def __init__(
        self,
        settings: Settings,
        keys: Sequence[Ed25519PrivateKey],
        source: Source | None,
        *,
        status_writer: Callable[[list[SourceError], int, str], Any] | None = None,
        authenticator: Authenticator | None = None,
        approvers: Approvers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self.settings = settings
        self.clock = clock
        #: Who may answer approval requests (distributor/approvers.py); fail closed.
        self.approvers: Approvers = approvers or NoApprovers(
            "this replica cannot authenticate approvers: give it a Kubernetes API"
            " (in-cluster, or --kubeconfig), or --insecure-approvers on a laptop"
        )
        if settings.audit_store:
            from distributor.store_postgres import open_store

            self.store = AsyncStore(
                open_store(settings.store_path, settings.audit_store, clock=clock)
            )
        else:
            self.store = AsyncStore(Store(settings.store_path, clock=clock))
        self.hub = Hub(settings.replica_id, self.store, keys, clock=clock)
        self.hub.bind_identity = settings.bind_identity
        self.hub.metrics.source_state = self._source_state
        self.hub.authenticator = authenticator
        if settings.audit_forward:
            self.hub.forwarder = JsonLinesForwarder(settings.audit_forward)
        self.source = source
        self.status_writer = status_writer
        self.grpc_port = 0
        self.http_port = 0
        self.last_errors: list[SourceError] = []
        self._grpc: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    def _source_state(self) -> tuple[int, bool]:
        """(sources refused now, fleet held): for the metrics."""
        set_aside = getattr(self.source, "rejected", {})  # a CRD source isolates each resource
        held = {e.source for e in self.last_errors}
        return len(held | set(set_aside)), bool(self.last_errors)

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        latest = await self.store.call(self.store.store.latest)
        if latest is not None:
            self.hub.set_current(latest)
        server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.max_concurrent_streams", 100_000),
                # A fleet reconnecting at once (a replica died) arrives faster than
                # the loop accepts calls; core's default (1,000 pending, hard limit
                # 3,000) would cancel the rest and make them back off needlessly.
                ("grpc.server.max_pending_requests", 50_000),
                ("grpc.server.max_pending_requests_hard_limit", 100_000),
            ]
        )
        server.add_generic_rpc_handlers((generic_handler(self.hub),))
        self.grpc_port = self._add_port(server)
        if not self.grpc_port:
            raise OSError(f"cannot listen on {self.settings.grpc_listen}")
        await server.start()
        self._grpc = server
        from distributor.http_api import make_app

        self._runner = web.AppRunner(make_app(self), handle_signals=False, access_log=None)
        await self._runner.setup()
        host, _, port = self.settings.http_listen.rpartition(":")
        site = web.TCPSite(self._runner, host or "127.0.0.1", int(port))
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])
        self._tasks.append(asyncio.create_task(self._store_loop(), name="store-loop"))
        if self.source is not None:
            self._tasks.append(asyncio.create_task(self._source_loop(), name="source-loop"))
        self.ready.set()
        log.info(
            "distributor started",
            extra={
                "replica": self.settings.replica_id,
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
            },
        )

    def _add_port(self, server: grpc.aio.Server) -> int:
        s = self.settings
        if s.bind_identity and s.tls_client_ca_file is None:
            raise ValueError("binding identities to certificates needs client certificates (mTLS)")
        if s.tls_cert_file is None or s.tls_key_file is None:
            return int(server.add_insecure_port(s.grpc_listen))
        client_ca = s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file else None
        creds = grpc.ssl_server_credentials(
            [(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        return int(server.add_secure_port(s.grpc_listen, creds))

    async def stop(self, grace_s: float = 2.0) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
        with contextlib.suppress(Exception):
            await self.hub.flush()
            await self.store.call(self.store.store.disconnect_replica, self.settings.replica_id)
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()

    # -- loops -------------------------------------------------------------
    async def _source_loop(self) -> None:
        assert self.source is not None
        pending: Snapshot | None = None
        changed = asyncio.Event()

        async def collect() -> None:
            nonlocal pending
            assert self.source is not None
            async for snap in self.source.snapshots():
                pending = snap
                changed.set()

        collector = asyncio.create_task(collect())
        try:
            while True:
                await changed.wait()
                # Debounce: wait until no new snapshot arrives for debounce_s.
                while True:
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), self.settings.debounce_s)
                        continue
                    break
                snap, pending = pending, None
                if snap is not None:
                    try:
                        await self.publish_snapshot(snap)
                    except Exception:
                        log.exception("cannot publish policy snapshot")
                if collector.done():
                    collector.result()
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await collector

    async def publish_snapshot(self, snap: Snapshot) -> None:
        try:
            compiled = compile_bundle(snap)
        except CompileError as exc:
            await self._hold(exc.errors)
            return
        gate = await self._replay_gate(compiled)
        if gate is not None and gate.refused:
            await self._hold([SourceError("", 0, "", f"replay gate: the candidate {gate.message}")])
            return
        self.last_errors = []
        rev, new = await self.store.call(
            self.store.store.publish,
            compiled.digest,
            ",".join(compiled.names),
            canonical_json(compiled.document),
        )
        await self.store.call(self.store.store.set_meta, "last_error", "")
        if new:
            log.info("published revision", extra={"revision": rev.revision, "digest": rev.digest})
        self.hub.set_current(rev)
        if self.source is not None:
            self.source.published()
        await self._report_status([])

    async def _hold(self, errors: list[SourceError]) -> None:
        """Nothing is published: the fleet stays on its revision; the errors are reported."""
        self.last_errors = errors
        for err in errors:
            log.error("policy source rejected: %s", err)
        await self.store.call(
            self.store.store.set_meta,
            "last_error",
            json.dumps({"time": self.clock(), "errors": [e.as_dict() for e in errors]}),
        )
        await self._report_status(errors)

    async def _replay_gate(self, compiled: Compiled) -> GateResult | None:
        """Replay recent calls against a changed candidate (distributor/replay_gate.py)."""
        cur = self.hub.current
        if cur is not None and cur.digest == compiled.digest:
            return None
        now = self.clock()
        result = await replay_gate.check(
            self.settings.replay_gate, self.store, compiled.document, compiled.digest, now
        )
        self.hub.metrics.replay_gate.labels(result.verdict).inc()
        await self.store.call(
            self.store.store.set_meta, "last_replay", json.dumps(result.as_dict(now))
        )
        return result

    async def _report_status(self, errors: list[SourceError]) -> None:
        if self.status_writer is None:
            return
        cur = self.hub.current
        try:
            result = self.status_writer(
                errors, cur.revision if cur else 0, cur.digest if cur else ""
            )
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("cannot write source status")

    async def _store_loop(self) -> None:
        last_flush = 0.0
        while True:
            try:
                latest_n = await self.store.call(self.store.store.latest_number)
                cur = self.hub.current
                if latest_n and (cur is None or latest_n > cur.revision):
                    latest = await self.store.call(self.store.store.latest)
                    if latest is not None:
                        self.hub.set_current(latest)
                await self.hub.deliver_approvals()
                now = time.monotonic()
                if now - last_flush >= self.settings.flush_s:
                    last_flush = now
                    await self.hub.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("store loop iteration failed")
            await asyncio.sleep(self.settings.poll_s)
