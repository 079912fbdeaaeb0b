"""Carrying out quota actions: report, evict, kill; every one audited with its evidence.

The decision of *what* to do is :func:`nodeagent.quota.plan` (pure). This module
only does it, through injected adapters, and writes one audit record per action
(``kind="action"``, the violation and the usage that proved it in ``details``):

* ``report``: a Warning Event on the pod, the violation metric, the audit record.
* ``evict``: the same Event, then the Eviction API (PodDisruptionBudgets decide).
* ``kill``: SIGTERM to the offending pod's processes on the GPU, SIGKILL to those
  still alive after ``kill_grace_s``. Before each signal the PID's cgroup is read
  again and must still name the same pod (a recycled PID is never signalled).
* dry-run, a system namespace: nothing is done; the record says what would have been.

Before an eviction or a kill a ``decided`` record is written; if the audit log
cannot take it, the action is not carried out (fail closed). The outcome follows
as a ``done`` record, a late SIGKILL as a ``followup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nodeagent import cgroup
from nodeagent.quota import Action, Enforcement

log = logging.getLogger(__name__)


class KubeApi(Protocol):
    async def event(
        self, namespace: str, pod: str, uid: str, reason: str, message: str, warning: bool = True
    ) -> str: ...

    async def evict(self, namespace: str, pod: str, uid: str) -> str: ...


class AuditSink(Protocol):
    """``palisade.audit.AuditWriter`` fits; so does anything with the same ``append``."""

    async def append(self, entry: Any, secret_names: Any = ()) -> dict[str, Any]: ...


#: ``os.kill``-shaped; injected so tests can watch signals to real processes.
Signal = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ActionRecord:
    time: float
    tenant: str
    quota: str
    enforcement: str
    pod: str
    namespace: str
    outcome: str
    dry_run: bool
    measured: float
    limit: float
    pids: tuple[int, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "tenant": self.tenant,
            "quota": self.quota,
            "enforcement": self.enforcement,
            "pod": f"{self.namespace}/{self.pod}",
            "outcome": self.outcome,
            "dryRun": self.dry_run,
            "measured": self.measured,
            "limit": self.limit,
            "pids": list(self.pids),
        }


class Enforcer:
    def __init__(
        self,
        *,
        audit: AuditSink,
        kube: KubeApi | None,
        cgroups: cgroup.CgroupReader,
        kill_grace_s: float = 10.0,
        send_signal: Signal = os.kill,
        clock: Callable[[], float] = time.time,
        bundle_revision: Callable[[], int] = lambda: 0,
        cgroup_ns: cgroup.Namespace = cgroup.HOST,
    ) -> None:
        self._audit = audit
        self._ns = cgroup_ns
        self._kube = kube
        self._cgroups = cgroups
        self._kill_grace = kill_grace_s
        self._signal = send_signal
        self._clock = clock
        self._revision = bundle_revision
        self._followups: set[asyncio.Task[None]] = set()
        self.records: list[ActionRecord] = []

    @property
    def kill_grace_s(self) -> float:
        return self._kill_grace

    def set_audit(self, audit: AuditSink) -> None:
        self._audit = audit

    async def execute(self, action: Action) -> ActionRecord:
        v = action.violation
        message = (
            f"palisade: tenant {v.tenant} over GPU quota {v.kind} "
            f"({_fmt(v.measured)} > {_fmt(v.limit)}); action {action.enforcement.value}"
        )
        if action.skipped:
            outcome = f"skipped: {action.skipped}"
        elif action.dry_run:
            outcome = f"dry-run: would {action.enforcement.value}"
        elif action.enforcement is not Enforcement.REPORT and not await self._write_audit(
            action, self._record(action, "decided"), message, phase="decided"
        ):
            # Fail closed: nothing destructive happens that the audit log cannot show.
            outcome = "not done: audit log unavailable"
        else:
            outcome = await self._do(action, message)
        record = self._record(action, outcome)
        self.records.append(record)
        del self.records[:-200]
        await self._write_audit(action, record, message)
        return record

    def _record(self, action: Action, outcome: str) -> ActionRecord:
        v, t = action.violation, action.target
        return ActionRecord(
            time=self._clock(),
            tenant=v.tenant,
            quota=v.kind,
            enforcement=action.enforcement.value,
            pod=t.pod,
            namespace=t.namespace,
            outcome=outcome,
            dry_run=action.dry_run,
            measured=v.measured,
            limit=v.limit,
            pids=t.pids,
        )

    async def _do(self, action: Action, message: str) -> str:
        t = action.target
        parts: list[str] = []
        if self._kube is not None:
            parts.append(
                await self._kube.event(t.namespace, t.pod, t.uid, "GPUQuotaExceeded", message)
            )
        else:
            parts.append("no Kubernetes API: event not created")
        if action.enforcement is Enforcement.EVICT:
            if self._kube is None:
                parts.append("failed: no Kubernetes API to evict through")
            else:
                parts.append(await self._kube.evict(t.namespace, t.pod, t.uid))
        elif action.enforcement is Enforcement.KILL:
            parts.append(self._terminate(action))
        return "; ".join(parts)

    def _same_pod(self, pid: int, uid: str) -> bool:
        where = cgroup.locate(self._cgroups.read(pid) or "", self._ns)
        return bool(uid) and any(i.pod_uid == uid for i in where.pods)

    def _terminate(self, action: Action) -> str:
        t = action.target
        sent: list[int] = []
        for pid in t.pids:
            if not self._same_pod(pid, t.uid):
                continue
            try:
                self._signal(pid, signal.SIGTERM)
                sent.append(pid)
            except ProcessLookupError:
                continue
            except PermissionError as exc:
                log.warning("cannot signal", extra={"pid": pid, "error": str(exc)})
        if sent:
            task = asyncio.create_task(self._kill_after_grace(action, sent))
            self._followups.add(task)
            task.add_done_callback(self._followups.discard)
        return f"SIGTERM sent to {sent}" if sent else "no live process of the pod to signal"

    async def _kill_after_grace(self, action: Action, pids: list[int]) -> None:
        await asyncio.sleep(self._kill_grace)
        killed: list[int] = []
        for pid in pids:
            if not self._same_pod(pid, action.target.uid):
                continue  # exited (or the PID now belongs to someone else)
            try:
                self._signal(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                continue
        if killed:
            t = action.target
            record = ActionRecord(
                time=self._clock(),
                tenant=action.violation.tenant,
                quota=action.violation.kind,
                enforcement="kill",
                pod=t.pod,
                namespace=t.namespace,
                outcome=f"SIGKILL sent to {killed} after {self._kill_grace:g}s grace",
                dry_run=False,
                measured=action.violation.measured,
                limit=action.violation.limit,
                pids=tuple(killed),
            )
            self.records.append(record)
            await self._write_audit(action, record, "grace period over", phase="followup")

    async def _write_audit(
        self, action: Action, record: ActionRecord, message: str, phase: str = "done"
    ) -> bool:
        """One record; ``phase`` is ``decided`` (before evict/kill), ``done`` or ``followup``."""
        from palisade.audit import Entry

        v = action.violation
        entry = Entry(
            tenant=v.tenant,
            kind="action",
            decision=record.enforcement,
            rule_id=f"gpuQuota/{v.kind}",
            reason=message,
            bundle_revision=self._revision(),
            details={
                "phase": phase,
                "outcome": record.outcome,
                "dryRun": record.dry_run,
                "pod": f"{record.namespace}/{record.pod}",
                "podUid": action.target.uid,
                "pids": list(record.pids),
                "quota": v.kind,
                "measured": v.measured,
                "limit": v.limit,
                "evidence": dict(v.evidence),
            },
        )
        try:
            await self._audit.append(entry)
        except Exception as exc:
            log.error("audit record not written", extra={"error": str(exc)})
            return False
        return True

    async def settle(self) -> None:
        """Wait for pending SIGKILL follow-ups (and their audit records) to finish."""
        while self._followups:
            await asyncio.gather(*list(self._followups), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._followups):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
