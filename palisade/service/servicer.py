"""The PolicyService servicer: decide, audit, count; fail closed on every error.

For each Check: validate the request (a bad one is denied, audited with rule
``invalid-request`` and answered ``INVALID_ARGUMENT``); take the current
engine (none loaded: deny, rule ``no-bundle``); decide (an exception: deny,
rule ``engine-error``); write the audit record (cannot: deny, rule
``audit-unavailable``, and the response carries no audit hash); observe the
metrics; answer. Nothing a caller sends can stop the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from palisade.audit import AuditError, AuditWriter, Entry
from palisade.audit.redact import ALL_FIELDS
from palisade.policy.types import Call, Decision, DecisionEngine, Verdict
from palisade.runtime.metrics import DecisionMetrics
from palisade.service.convert import (
    DEFAULT_LIMITS,
    BadRequest,
    Limits,
    call_from_request,
    response_from_verdict,
)
from palisade.v1 import policy_pb2, policy_pb2_grpc

log = logging.getLogger(__name__)

SecretNames = Callable[[str, str], Iterable[str]]


def _no_secrets(server: str, tool: str) -> Iterable[str]:
    return ()


NO_BUNDLE = "no policy bundle is loaded; every call is denied"


@dataclass(frozen=True, slots=True)
class Active:
    """What decides right now: the engine (None: deny all), its secret names, and why."""

    engine: DecisionEngine | None
    secret_names: SecretNames = _no_secrets
    #: Reason given with every deny while no engine is active.
    reason: str = ""


class EngineHolder:
    """The active engine; :meth:`swap` replaces it atomically (one reference assignment)."""

    __slots__ = ("_active",)

    def __init__(
        self,
        engine: DecisionEngine | None = None,
        *,
        secret_names: SecretNames = _no_secrets,
        reason: str = "",
    ) -> None:
        self._active = Active(engine, secret_names, reason or NO_BUNDLE)

    def get(self) -> Active:
        return self._active

    def swap(
        self,
        engine: DecisionEngine | None,
        *,
        secret_names: SecretNames = _no_secrets,
        reason: str = "",
    ) -> None:
        self._active = Active(engine, secret_names, reason or NO_BUNDLE)


def _deny(rule: str, reason: str, revision: int = 0) -> Verdict:
    return Verdict(decision=Decision.DENY, rule_id=rule, reason=reason, bundle_revision=revision)


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Answers ``Check``; see the module docstring for the order of events."""

    def __init__(
        self,
        engines: EngineHolder,
        audit: AuditWriter,
        metrics: DecisionMetrics,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._engines = engines
        self._audit = audit
        self._metrics = metrics
        self._limits = limits

    def _decide(self, active: Active, call: Call, dry_run: bool, explain: bool) -> Verdict:
        if active.engine is None:
            return _deny("no-bundle", active.reason or NO_BUNDLE)
        try:
            return active.engine.decide(call, dry_run=dry_run, explain=explain)
        except Exception as exc:  # fail closed, whatever the engine did
            log.error(
                "policy evaluation failed; denying",
                extra={
                    "agent": call.agent,
                    "server": call.server,
                    "tool": call.tool,
                    "error": type(exc).__name__,
                },
            )
            return _deny("engine-error", "policy evaluation failed; the call is denied")

    async def check_bytes(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> policy_pb2.CheckResponse:
        """Check with the request still serialized, so that undecodable bytes are
        answered ``INVALID_ARGUMENT`` and audited too (gRPC's own deserializer would
        answer ``UNKNOWN`` and leave no record)."""
        start = time.perf_counter_ns()
        try:
            request = policy_pb2.CheckRequest.FromString(raw)
        except DecodeError as exc:
            if "depth" in str(exc).lower():
                problem = "arguments nested deeper than the protobuf decoder allows"
            else:
                problem = "the request is not a valid palisade.v1.CheckRequest"
            return await self._check(policy_pb2.CheckRequest(), context, start, problem)
        return await self._check(request, context, start, None)

    async def Check(
        self, request: policy_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.CheckResponse:
        return await self._check(request, context, time.perf_counter_ns(), None)

    async def _check(
        self,
        request: policy_pb2.CheckRequest,
        context: grpc.aio.ServicerContext,
        start: int,
        undecodable: str | None,
    ) -> policy_pb2.CheckResponse:
        bad: str | None = undecodable
        active = self._engines.get()
        try:
            if bad is not None:
                raise BadRequest(bad)
            call = call_from_request(request, self._limits)
        except Exception as exc:  # BadRequest, or a bug in conversion: refuse either way
            if isinstance(exc, BadRequest):
                bad = str(exc)
            else:
                log.exception("request conversion failed")
                bad = "the request could not be read"
            verdict = _deny("invalid-request", f"invalid request: {bad}")
            call = Call(
                agent=request.agent[:256],
                server=request.server[:256],
                tool=request.tool[:256],
                session=request.session[:256],
                request_id=request.request_id[:256],
            )
        else:
            verdict = self._decide(active, call, request.dry_run, request.explain)
        latency = time.perf_counter_ns() - start
        names = self._secret_names(active, call) if bad is None else ()
        audit_hash = await self._write_audit(call, verdict, latency, request.dry_run, bad, names)
        if audit_hash is None:
            verdict = _deny(
                "audit-unavailable",
                "the decision could not be audited; the call is denied",
                verdict.bundle_revision,
            )
            audit_hash = ""
        self._metrics.observe(
            decision=verdict.decision.value,
            rule=verdict.rule_id,
            agent=call.agent if bad is None else "",
            server=call.server if bad is None else "",
            tool=call.tool if bad is None else "",
            seconds=(time.perf_counter_ns() - start) / 1e9,
        )
        if bad is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad)
        return response_from_verdict(verdict, audit_hash=audit_hash)

    @staticmethod
    def _secret_names(active: Active, call: Call) -> Iterable[str]:
        try:
            return tuple(active.secret_names(call.server, call.tool))
        except Exception:
            # unknown which fields are secret: redact every argument (the digest stays)
            log.exception("secret argument lookup failed; redacting all arguments")
            return (ALL_FIELDS,)

    async def _write_audit(
        self,
        call: Call,
        verdict: Verdict,
        latency_ns: int,
        dry_run: bool,
        bad: str | None,
        secret_names: Iterable[str],
    ) -> str | None:
        details: dict[str, Any] = {}
        if dry_run:
            details["dry_run"] = True
        if verdict.retry_after_s:
            details["retry_after_s"] = verdict.retry_after_s
        if verdict.risk is not None:
            details["risk"] = verdict.risk.value
        entry = Entry(
            agent=call.agent,
            tenant=verdict.tenant,
            on_behalf_of=call.on_behalf_of,
            server=call.server,
            tool=call.tool,
            session=call.session,
            arguments=call.arguments,
            decision=verdict.decision.value,
            rule_id=verdict.rule_id,
            reason=verdict.reason,
            bundle_revision=verdict.bundle_revision,
            latency_ns=latency_ns,
            request_id=call.request_id,
            approval_id=verdict.approval_id,
            kind="decision" if bad is None else "invalid-request",
            details=details,
        )
        try:
            record = await self._audit.append(entry, secret_names)
        except (AuditError, OSError) as exc:
            self._metrics.audit_failures.inc()
            log.error("audit write failed; denying", extra={"error": str(exc)})
            return None
        return str(record["hash"])
