"""The sidecar's link to the distributor: the shared client, the audit shipper and
the approvals, run together as background tasks; readiness, health, counters, gauges.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from prometheus_client import Gauge

from palisade.distribution import (
    ActiveBundle,
    ClientSettings,
    DistributionClient,
    State,
    TrustedKeys,
)
from sidecar.fleet.approvals import Approvals
from sidecar.fleet.audit import AuditShipper, ShippingWriter, audit_keys
from sidecar.fleet.identity import identity_of
from sidecar.intake import BundleIntake
from sidecar.metrics import SidecarMetrics
from sidecar.settings import DistributorSettings

log = logging.getLogger(__name__)


class SidecarFleet:
    """The distribution client, the audit shipper and the approvals, run together."""

    def __init__(
        self,
        settings: DistributorSettings,
        *,
        server: str,
        trusted: TrustedKeys,
        intake: BundleIntake,
        writer: ShippingWriter | None,
        metrics: SidecarMetrics,
        ship_interval_s: float = 0.2,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.metrics = metrics
        self.ship_interval_s = ship_interval_s
        self.client = DistributionClient(
            ClientSettings(
                targets=list(settings.targets),
                state_dir=settings.state_dir / "distribution",
                trusted=trusted,
                heartbeat_interval_s=settings.heartbeat_interval_s,
                tls_ca_file=settings.tls_ca_file,
                tls_cert_file=settings.tls_cert_file,
                tls_key_file=settings.tls_key_file,
                tls_server_name=settings.tls_server_name,
                token_file=settings.token_file,
                audit_keys=audit_keys(writer),
            ),
            identity_of(settings, server),
            self.activate,
            counters=self.counters,
            health=self.health,
        )
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.approvals = Approvals(
            self.client.approvals,
            denial_window_s=settings.denial_window_s,
            on_request=self._wake.set,
            state_file=settings.state_dir / "approvals.json",
        )
        self.shipper = (
            AuditShipper(writer, self.client.spool, max_spool_bytes=settings.spool_max_bytes)
            if writer is not None
            else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._register_metrics()

    def _register_metrics(self) -> None:
        """Gauges read at scrape time from the link's state (no bookkeeping on any hot path)."""
        r = self.metrics.registry
        for name, doc, fn in (
            (
                "palisade_sidecar_distributor_connected",
                "1 while the stream to a distributor is up",
                lambda: float(self.client.status.connected),
            ),
            (
                "palisade_sidecar_distributor_nacks",
                "Bundles pushed by the distributor and refused (NACKed) since start",
                lambda: float(self.client.nacks),
            ),
            (
                "palisade_sidecar_audit_unspooled_records",
                "Audit records written but not yet in the shipping spool",
                lambda: float(self.shipper.behind if self.shipper else 0),
            ),
            (
                "palisade_sidecar_audit_spool_bytes",
                "Audit bytes waiting on disk for the distributor",
                lambda: float(self.client.spool.pending_bytes()),
            ),
            (
                "palisade_sidecar_approvals_pending",
                "Calls held for a human's approval, not answered yet",
                lambda: float(self.approvals.pending),
            ),
            (
                "palisade_sidecar_approvals_refused",
                "Approval answers dropped: no trusted key signed them",
                lambda: float(self.client.approvals_refused),
            ),
        ):
            Gauge(name, doc, registry=r).set_function(fn)

    # -- bundles ---------------------------------------------------------------------------
    def activate(self, active: ActiveBundle) -> None:
        """The client verified ``active``; the file intake's path activates it (or raises: NACK)."""
        self.intake.activate_verified(
            active.bundle, active.revision, active.digest, active.signed.SerializeToString()
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Last good bundle first, then unshipped audit records, then connect."""
        if self.shipper is not None:
            with contextlib.suppress(Exception):
                while await self.shipper.pump(from_disk=True):
                    pass
        await self.client.start()
        self._tasks = [
            asyncio.create_task(self._ship_loop(), name="fleet-audit"),
            asyncio.create_task(self._approval_loop(), name="fleet-approvals"),
        ]
        log.info(
            "joining the fleet",
            extra={"targets": list(self.settings.targets), "client": self.settings.client_id},
        )

    async def stop(self, drain_s: float = 2.0) -> None:
        """Spool the last records, give the client ``drain_s`` to deliver them, then close."""
        # The shipper finishes its step (a cursor write may be running in a thread).
        self._stopping.set()
        self._wake.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
        self._tasks = []
        if self.shipper is not None:
            try:
                while await self.shipper.pump(from_disk=True):
                    pass
            except Exception as exc:
                log.warning("audit not spooled at stop", extra={"error": str(exc)})
            # The pod's volumes may go with it: deliver while the grace period lasts
            # (waiting out a reconnect too); what is left waits on disk for a restart.
            await self.client.drain_audit(drain_s)
        await self.client.stop()

    async def _ship_loop(self) -> None:
        while not self._stopping.is_set():
            if self.shipper is not None:
                try:
                    if await self.shipper.pump():
                        continue
                except Exception as exc:
                    log.warning("audit spooling deferred", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.ship_interval_s)

    async def _approval_loop(self) -> None:
        seen = -1
        while not self._stopping.is_set():
            self._wake.clear()
            if self.client.status.connected:
                if self.client.connects != seen:
                    seen = self.client.connects
                    self.approvals.resend_all()
                await self._send_approvals()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)

    async def _send_approvals(self) -> None:
        for req in self.approvals.unsent():
            try:
                await self.client.request_approval(
                    req.call,
                    call_digest=req.call_digest,
                    tenant=req.tenant,
                    rule_id=req.rule_id,
                    reason=req.reason,
                    approval_id=req.approval_id,
                    approvers=req.approvers,
                )
            except Exception as exc:
                log.info("approval request not sent yet", extra={"error": str(exc)})
                return
            self.approvals.mark_sent(req.approval_id)

    # -- status ---------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What keeps this sidecar from being ready, as far as the fleet goes (empty: ready)."""
        st = self.client.status
        if st.state is State.OK:
            return []
        where = f"connected to {self.client.target}" if st.connected else "not connected"
        if st.state is State.NOT_READY:
            return [f"no bundle from the distributor yet ({where})"]
        return [f"no usable bundle from the distributor: {st.last_error} ({where})"]

    def status_doc(self) -> dict[str, Any]:
        st = self.client.status
        return {
            "state": st.state.value,
            "connected": st.connected,
            "target": self.client.target,
            "revision": st.revision,
            "last_error": st.last_error,
            "acks": self.client.acks,
            "nacks": self.client.nacks,
            "audit_behind": self.shipper.behind if self.shipper else 0,
            "audit_spool_bytes": self.client.spool.pending_bytes(),
            "approvals_pending": self.approvals.pending,
            "approvals_refused": self.client.approvals_refused,
        }

    def readiness(self) -> tuple[list[str], dict[str, Any]]:
        return self.problems(), self.status_doc()

    def health(self) -> str:
        st = self.client.status
        if st.state is State.OK:
            return "ok" if not st.last_error else f"degraded: {st.last_error}"[:200]
        return f"{st.state.value}: {st.last_error}"[:200]

    def counters(self) -> dict[str, float]:
        """Heartbeat counters: calls and their decisions, revision, audit and approval backlog."""
        by: dict[str, float] = collections.defaultdict(float)
        for metric in self.metrics.decisions.decisions.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    by[sample.labels.get("decision", "")] += sample.value
        rejected = sum(
            s.value
            for m in self.metrics.rejected.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
        active = self.client.active
        return {
            "calls": sum(by.values()),
            "allowed": by["allow"],
            "denials": by["deny"],
            "approvals_required": by["require_approval"],
            "throttled": by["throttle"],
            "rejected": rejected,
            "revision": float(active.revision if active else 0),
            "bundle_acks": float(self.client.acks),
            "bundle_nacks": float(self.client.nacks),
            "audit_behind": float(self.shipper.behind if self.shipper else 0),
            "audit_spool_bytes": float(self.client.spool.pending_bytes()),
            "approvals_pending": float(self.approvals.pending),
            "approvals_granted": float(self.approvals.granted),
            "approvals_refused": float(self.client.approvals_refused),
        }
