"""The canonical form of a bundle: one JSON byte string and its ``sha256:`` digest.

:func:`to_document` writes the *normalised* bundle (defaults filled in, every
field spelled out), so two YAML files that mean the same thing have the same
digest. :func:`from_document` reads it back through the same validator as
YAML, so a document from the wire is checked exactly like a file from Git.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from palisade.bundle.schema import (
    API_VERSION,
    KIND,
    Bundle,
    BundleTest,
    GpuQuota,
    Match,
    RuleMode,
)
from palisade.bundle.yamlpos import Positions


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form every replica agrees on."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _match(m: Match) -> dict[str, Any]:
    return {
        "servers": list(m.servers),
        "tools": list(m.tools),
        "risk": [r.value for r in m.risk],
        "agents": list(m.agents),
        "tenants": list(m.tenants),
        "labels": dict(m.labels),
    }


def _quota(q: GpuQuota) -> dict[str, Any]:
    out: dict[str, Any] = {
        "migInstances": dict(q.mig_instances),
        "allocatedDevicesOnly": q.allocated_devices_only,
        "enforcement": q.enforcement.value,
        "gracePeriodSeconds": _num(q.grace_period_seconds),
    }
    if q.gpus is not None:
        out["gpus"] = q.gpus
    if q.gpu_memory_bytes is not None:
        out["gpuMemoryBytes"] = q.gpu_memory_bytes
    if q.power_watts is not None:
        out["powerWatts"] = _num(q.power_watts)
    return out


def to_document(bundle: Bundle) -> dict[str, Any]:
    """The bundle as a plain JSON-able document in the YAML schema's spelling."""
    b = bundle.budgets
    budgets: dict[str, Any] = {
        "rateLimits": [
            {
                "id": r.id,
                "per": r.per.value,
                "rate": _num(r.rate),
                "burst": _num(r.burst),
                "match": _match(r.match),
            }
            for r in b.rate_limits
        ],
        "spendCaps": [
            {
                "id": s.id,
                "limit": _num(s.limit),
                "windowSeconds": _num(s.window_seconds),
                "match": _match(s.match),
            }
            for s in b.spend_caps
        ],
    }
    if b.mutations_per_session is not None:
        budgets["mutationsPerSession"] = b.mutations_per_session
    if b.mutations_per_agent is not None:
        budgets["mutationsPerAgent"] = {
            "limit": b.mutations_per_agent.limit,
            "windowSeconds": _num(b.mutations_per_agent.window_seconds),
        }
    spec: dict[str, Any] = {
        "defaultDecision": bundle.default_decision.value,
        "failureMode": bundle.failure_mode.value,
        "servers": [
            {
                "name": s.name,
                "versions": list(s.versions),
                "images": list(s.images),
                "tools": [
                    {
                        "name": t.name,
                        **({"risk": t.risk.value} if t.risk else {}),
                        "cost": _num(t.cost),
                        "untrustedOutput": t.untrusted_output,
                        "secretArguments": list(t.secret_arguments),
                        "pinned": t.pinned,
                    }
                    for t in s.tools
                ],
                # only when set: bundles without it keep their digest
                **({"serverRequests": list(s.server_requests)} if s.server_requests else {}),
            }
            for s in bundle.servers
        ],
        "tenants": [
            {
                "name": t.name,
                "namespaces": list(t.namespaces),
                **({"gpuQuota": _quota(t.gpu_quota)} if t.gpu_quota else {}),
            }
            for t in bundle.tenants
        ],
        "agents": [
            {
                "id": a.id,
                "tenant": a.tenant,
                "namespaces": list(a.namespaces),
                "scopes": list(a.scopes),
                "identities": [{k: v for k, v in _identity(i).items() if v} for i in a.identities],
                # only when set: bundles without one keep their digest
                **(
                    {"clusterCredential": {"serviceAccount": a.cluster_credential.service_account}}
                    if a.cluster_credential
                    else {}
                ),
            }
            for a in bundle.agents
        ],
        "budgets": budgets,
        "rules": [
            {
                "id": r.id,
                "match": _match(r.match),
                "when": r.when,
                "decision": r.decision.value,
                "reason": r.reason,
                "retryAfterSeconds": _num(r.retry_after_seconds),
                # only when not the default: bundles without it keep their digest
                **({"approvers": r.approvers} if r.approvers != 1 else {}),
                **({"mode": r.mode.value} if r.mode is not RuleMode.ENFORCE else {}),
            }
            for r in bundle.rules
        ],
        "tests": [_test(t) for t in bundle.tests],
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": bundle.name, "labels": dict(bundle.labels)},
        "spec": _drop_empty_matches(spec),
    }


def _test(t: BundleTest) -> dict[str, Any]:
    if t.gpu is not None:
        g = t.gpu
        return {
            "name": t.name,
            "gpu": {
                "tenant": g.tenant,
                "gpus": g.gpus,
                "gpuMemoryBytes": g.gpu_memory_bytes,
                "migInstances": dict(g.mig_instances),
                "powerWatts": _num(g.power_watts),
                "unallocatedDevices": g.unallocated_devices,
            },
            "expect": {"violations": list(t.expect.violations or ())},
        }
    c, decision = t.call, t.expect.decision
    if c is None or decision is None:  # validation makes this impossible
        raise ValueError(f"test {t.name!r} has neither a call with a decision nor gpu usage")
    return {
        "name": t.name,
        "call": {
            "agent": c.agent,
            "server": c.server,
            "tool": c.tool,
            "arguments": dict(c.arguments),
            "session": c.session,
            "onBehalfOf": c.on_behalf_of,
            "serverVersion": c.server_version,
            "labels": dict(c.labels),
            **(
                {"serverDeclaredRisk": c.server_declared_risk.value}
                if c.server_declared_risk
                else {}
            ),
        },
        "expect": {
            "decision": decision.value,
            "rule": t.expect.rule,
            "reasonContains": t.expect.reason_contains,
        },
        "repeat": t.repeat,
        "everySeconds": _num(t.every_seconds),
    }


def _identity(i: Any) -> dict[str, str]:
    return {"issuer": i.issuer, "subject": i.subject, "serviceAccount": i.service_account}


def _drop_empty_matches(spec: dict[str, Any]) -> dict[str, Any]:
    """Empty match lists mean "any" in the model but are refused in YAML: leave them out."""

    def clean(m: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if v}

    for rule in spec["rules"]:
        rule["match"] = clean(rule["match"])
    for key in ("rateLimits", "spendCaps"):
        for lim in spec["budgets"][key]:
            lim["match"] = clean(lim["match"])
    return spec


def canonical_bytes(bundle: Bundle) -> bytes:
    return canonical_json(to_document(bundle))


def bundle_digest(bundle: Bundle) -> str:
    return digest_of(canonical_bytes(bundle))


def from_document(doc: Any, source: str = "<document>") -> Bundle:
    """Check a plain document (e.g. decoded canonical JSON) and build the bundle."""
    from palisade.bundle.validate import build_bundle

    return build_bundle(doc, Positions(source, {}))
