"""The PolicyBundle schema for the API server and for editors, generated from the bundle model.

One source: the frozen dataclasses of :mod:`palisade.bundle.schema` give the
fields, their types and which are required; :data:`FIELDS` and
:data:`CLASSES` here add what a type cannot say (descriptions, enums of plain
strings, patterns, bounds, rules that span fields). Two renderings:

- :func:`crd` / :func:`crd_schema`: the CustomResourceDefinition with a
  structural OpenAPI v3 schema, so ``kubectl explain policybundle.spec.rules``
  describes every field and the API server refuses a malformed spec
  (``x-kubernetes-validations`` CEL rules for constraints across fields,
  ``x-kubernetes-list-type: map`` for lists whose entries are unique by key);
- :func:`json_schema`: a JSON Schema (draft 2020-12) for bundle files, for
  editors (``# yaml-language-server: $schema=...``).

Both are looser than or equal to :func:`palisade.bundle.validate.build_bundle`,
which stays the authority and the source of the messages users see: every
document it accepts, these accept. They check shape, not meaning (references
between sections, CEL that compiles, duplicate ids across budget kinds are the
validator's). ``scripts/gen-schemas`` writes the files; ``--check`` fails when
they are stale.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from palisade.bundle import schema as model
from palisade.bundle.schema import API_VERSION, KIND
from palisade.bundle.validate import METADATA_SERVER_FIELDS

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "policybundles"
CRD_NAME = f"{PLURAL}.{GROUP}"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_SHA256 = "sha256:[0-9a-f]{64}"
_DNS_LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SA_NAME = "[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
#: Rule ids the engine uses for its own decisions (validate._BUILTIN_RULE_IDS).
RESERVED_RULE_IDS = ("default", "registry", "failure")
#: What ``serverRequests`` may allow (validate.SERVER_REQUEST_KINDS).
SERVER_REQUEST_KINDS = ("sampling", "elicitation", "roots")


@dataclass(frozen=True, slots=True)
class F:
    """What the type of one dataclass field does not say."""

    description: str
    pattern: str = ""
    #: For lists of strings: the pattern or enum of each item.
    item_pattern: str = ""
    item_enum: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    min_length: int | None = None
    #: For lists of objects: entries are unique by this key (list-type map).
    unique_key: str = ""
    #: Shown as the default (documentation only: nothing is written into resources).
    default: Any = None
    #: The validator accepts ``null`` here (taken as "not set").
    nullable: bool | None = None
    #: Not in the YAML (e.g. the bundle name, which is ``metadata.name``).
    omit: bool = False
    #: Override whether the field is required.
    required: bool | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """A rule that spans fields: CEL for the API server, the same as JSON Schema for editors."""

    cel: str
    message: str
    json: Mapping[str, Any]
    #: The field the API server names in its error (``.approvers``), else the object.
    field_path: str = ""


@dataclass(frozen=True, slots=True)
class C:
    """What a dataclass as a whole needs: its description and its cross-field checks."""

    description: str
    checks: tuple[Check, ...] = ()


_NAME = "must not be empty"


def _name(what: str) -> F:
    return F(description=what, min_length=1)


_MATCH = F(
    description="Which calls this applies to. Every field is optional (left out: any);"
    " values in one list are ORed, fields are ANDed. Values are shell-style globs"
    " ('*' matches anything, including an empty value).",
    nullable=True,
)

#: Per class (by name), per Python field name.
FIELDS: dict[str, dict[str, F]] = {
    "Bundle": {
        "name": F("", omit=True),
        "labels": F("", omit=True),
        "default_decision": F(
            "Decision when no rule matches a call.", default="deny", item_enum=()
        ),
        "failure_mode": F(
            "What happens when evaluation fails (a 'when' that errors at run time, a missing"
            " bundle, evaluation over its time budget): closed denies, open allows (rule id"
            " 'failure').",
            default="closed",
        ),
        "servers": F(
            "The registry of approved MCP servers. A call to a server or tool not listed here"
            " is denied before any rule runs (rule id 'registry').",
            unique_key="name",
        ),
        "tenants": F(
            "Tenants: groups of namespaces, with an optional GPU quota the node agent enforces.",
            unique_key="name",
        ),
        "agents": F(
            "The agents allowed to call tools, and how an authenticated token maps to each.",
            unique_key="id",
        ),
        "budgets": F(
            "Rate limits, spend caps and mutation caps, applied to calls the rules allow.",
            nullable=True,
        ),
        "rules": F(
            "Policy rules, evaluated in order; the first whose match and when both hold"
            " decides. No rule matched: defaultDecision (rule id 'default').",
            unique_key="id",
        ),
        "tests": F(
            "Example calls (or GPU usage) and what the bundle must answer; run by"
            " 'palisade bundle test'.",
            unique_key="name",
        ),
    },
    "Server": {
        "name": _name(
            "Registry name of the server; pods carry it in the label palisade.dev/mcp-server."
        ),
        "versions": F(
            "Globs on the version the server reports (serverInfo.version); empty: any.",
        ),
        "images": F(
            "Allowed image digests of the server's container; empty: any.",
            item_pattern=f"^{_SHA256}$",
        ),
        "tools": F(
            "The server's tools that agents may call; any other is denied.",
            unique_key="name",
            required=True,
        ),
        "server_requests": F(
            "Requests the server may send the client: sampling, elicitation, roots."
            " Any other is refused. Default: none.",
            item_enum=SERVER_REQUEST_KINDS,
        ),
    },
    "Tool": {
        "name": _name("Tool name as the server lists it (also resources/read, prompts/get)."),
        "risk": F(
            "Risk class of the tool. Unknown risk never matches a risk filter and counts as"
            " mutating."
        ),
        "cost": F("Cost units one call spends (for spend caps).", minimum=0, default=0),
        "untrusted_output": F(
            "The tool's output goes through the quarantine before the agent's model sees it.",
            default=False,
        ),
        "secret_arguments": F("Argument names redacted in audit records."),
        "pinned": F(
            "sha256 digest of the whole tool definition as listed (less _meta); a server that"
            " advertises anything else for this tool is refused. Empty: not pinned.",
            pattern=f"^({_SHA256})?$",
        ),
    },
    "Tenant": {
        "name": _name("Tenant name."),
        "namespaces": F("Namespaces that belong to this tenant."),
        "gpu_quota": F("GPU quota, enforced by the node agent on each node."),
    },
    "GpuQuota": {
        "gpus": F("Whole GPUs the tenant may use on a node.", minimum=0, nullable=True),
        "gpu_memory_bytes": F("GPU memory the tenant may use, in bytes.", minimum=0, nullable=True),
        "mig_instances": F(
            "MIG instances allowed per profile (e.g. '1g.18gb': 4); a quota that lists"
            " profiles allows none it omits.",
            minimum=0,
            nullable=True,
        ),
        "power_watts": F("Power the tenant's GPUs may draw, in watts.", minimum=0, nullable=True),
        "allocated_devices_only": F(
            "The tenant's processes may use only devices the kubelet allocated to their pods.",
            default=False,
        ),
        "enforcement": F(
            "What the node agent does over quota: report, evict the pod, or kill the process.",
            default="report",
        ),
        "grace_period_seconds": F(
            "How long usage may stay over quota before enforcement.", minimum=0, default=30
        ),
    },
    "Agent": {
        "id": _name("Agent id, as rules and audit records name it."),
        "tenant": F("The tenant the agent belongs to (declared under spec.tenants)."),
        "namespaces": F("Namespaces the agent may act in (CEL: agent.namespaces)."),
        "scopes": F("Scopes granted to the agent (CEL: agent.scopes)."),
        "identities": F("How an authenticated token maps to this agent; one identity, one agent."),
        "cluster_credential": F(
            "The cluster credential the sidecar hands the upstream for this agent's calls: a"
            " short-lived token of this ServiceAccount. Absent: none, and the calls are refused"
            " before they reach an upstream that needs one."
        ),
    },
    "Identity": {
        "issuer": F("Token issuer (with subject)."),
        "subject": F("Token subject (with issuer)."),
        "service_account": F("A ServiceAccount as '<namespace>/<name>'."),
    },
    "ClusterCredential": {
        "service_account": F(
            "'<namespace>/<name>' of the ServiceAccount.",
            pattern=f"^{_DNS_LABEL}/{_SA_NAME}$",
        ),
    },
    "Match": {
        "servers": F("Server names (globs)."),
        "tools": F("Tool names (globs); each must be registered by a server the match selects."),
        "risk": F("Risk classes."),
        "agents": F("Agent ids (globs)."),
        "tenants": F("Tenant names (globs)."),
        "labels": F("Labels of the call (values are globs); all must match.", nullable=True),
    },
    "Rule": {
        "id": _name(
            "Rule id, unique in the bundle; named in verdicts and audit records. 'default',"
            " 'registry' and 'failure' are reserved."
        ),
        "decision": F("What the rule decides when it matches."),
        "match": _MATCH,
        "when": F(
            "Optional CEL condition over args, agent and call; it must give a boolean."
            " A missing key is an evaluation error: guard with has(args.x)."
        ),
        "reason": F("Reason given to the caller and written in the audit record."),
        "retry_after_seconds": F(
            "For throttle rules: how long the caller should wait.", minimum=0, default=1
        ),
        "approvers": F(
            "For require_approval rules only: how many distinct people must approve.",
            minimum=1,
            maximum=10,
            default=1,
        ),
        "mode": F(
            "enforce (default): the rule decides the call. audit: the rule is evaluated and"
            " what it would have decided is recorded in the call's audit record and counted"
            " in palisade_audit_mode_decisions_total; the call goes on to the next rule.",
            default="enforce",
        ),
    },
    "Budgets": {
        "rate_limits": F(
            "Token buckets; a call over the limit is throttled with a retry-after.",
            unique_key="id",
        ),
        "spend_caps": F(
            "Cost units per agent per fixed window; a call over the cap is denied.",
            unique_key="id",
        ),
        "mutations_per_session": F(
            "Mutating calls allowed per session before approval is needed.",
            minimum=0,
            nullable=True,
        ),
        "mutations_per_agent": F(
            "Mutating calls allowed per agent in a window, across all its sessions; more"
            " need approval.",
            nullable=True,
        ),
    },
    "RateLimit": {
        "id": _name("Budget id; the verdict's rule id is budget/<id>."),
        "rate": F("Tokens added per second.", minimum=0, exclusive_minimum=True),
        "burst": F("Bucket size: calls allowed at once.", minimum=1),
        "per": F(
            "What one bucket counts: per agent, per (server, tool) or per deciding rule.",
            default="agent",
        ),
        "match": _MATCH,
    },
    "SpendCap": {
        "id": _name("Budget id; the verdict's rule id is budget/<id>."),
        "limit": F("Cost units allowed per window.", minimum=0),
        "window_seconds": F("Length of the window.", minimum=0, exclusive_minimum=True),
        "match": _MATCH,
    },
    "MutationWindow": {
        "limit": F("Mutating calls allowed in the window.", minimum=0),
        "window_seconds": F("Length of the window.", minimum=0, exclusive_minimum=True),
    },
    "BundleTest": {
        "name": _name("Test name, unique in the bundle."),
        "call": F("A tool call to decide.", required=False),
        "gpu": F("A tenant's GPU usage on one node, checked against its quota."),
        "expect": F("What the bundle must answer."),
        "repeat": F(
            "Call tests: make the call this many times in one fresh session.",
            minimum=1,
            default=1,
        ),
        "every_seconds": F(
            "Call tests: seconds the fake clock advances between repetitions.",
            minimum=0,
            default=0,
        ),
    },
    "TestCall": {
        "agent": F("Calling agent id."),
        "server": F("Server name."),
        "tool": F("Tool name."),
        "arguments": F("The call's arguments (JSON values)."),
        "session": F("Session id.", default="test-session"),
        "on_behalf_of": F("The person the agent acts for."),
        "server_version": F("Version the server reports."),
        "labels": F("Labels of the call.", nullable=True),
        "server_declared_risk": F("Risk the server declares for the tool."),
    },
    "GpuUsage": {
        "tenant": F("Tenant name (it must have a gpuQuota)."),
        "gpus": F("Whole GPUs in use.", minimum=0),
        "gpu_memory_bytes": F("GPU memory in use, in bytes.", minimum=0),
        "mig_instances": F("MIG instances in use per profile.", minimum=0, nullable=True),
        "power_watts": F("Power drawn, in watts.", minimum=0),
        "unallocated_devices": F(
            "Devices in use that the kubelet did not allocate to the tenant's pods.", minimum=0
        ),
    },
    "TestExpect": {
        "decision": F("Call tests: the expected decision."),
        "rule": F("Call tests: the rule expected to decide (or default, registry, budget/<id>)."),
        "reason_contains": F("Call tests: text the reason must contain."),
        "violations": F(
            "GPU tests: the quota limits exceeded (empty: none).",
            item_pattern="^(gpus|gpuMemoryBytes|powerWatts|allocatedDevicesOnly|migInstances/.+)$",
        ),
    },
}

CLASSES: dict[str, C] = {
    "Bundle": C("The policy: MCP server registry, tenants, agents, budgets, rules and tests."),
    "Server": C("An approved MCP server and its tools."),
    "Tool": C("A tool of the server."),
    "Tenant": C("A tenant."),
    "GpuQuota": C("GPU limits per node; a limit is exceeded when usage is strictly above it."),
    "Agent": C("An agent."),
    "Identity": C(
        "Either serviceAccount, or both issuer and subject.",
        checks=(
            Check(
                cel="(has(self.serviceAccount) && self.serviceAccount != '')"
                " || (has(self.issuer) && self.issuer != ''"
                " && has(self.subject) && self.subject != '')",
                message="an identity needs either serviceAccount or both issuer and subject",
                json={
                    "anyOf": [
                        {
                            "required": ["serviceAccount"],
                            "properties": {"serviceAccount": {"minLength": 1}},
                        },
                        {
                            "required": ["issuer", "subject"],
                            "properties": {
                                "issuer": {"minLength": 1},
                                "subject": {"minLength": 1},
                            },
                        },
                    ]
                },
            ),
        ),
    ),
    "ClusterCredential": C("A ServiceAccount whose short-lived tokens the upstream acts with."),
    "Match": C(_MATCH.description),
    "Rule": C(
        "A policy rule.",
        checks=(
            Check(
                cel="!has(self.approvers) || self.decision == 'require_approval'",
                message="only a require_approval rule has approvers",
                json={
                    "if": {"required": ["approvers"]},
                    "then": {"properties": {"decision": {"const": "require_approval"}}},
                },
                field_path=".approvers",
            ),
            Check(
                cel="!(self.id in " + str(list(RESERVED_RULE_IDS)) + ")",
                message="rule ids default, registry and failure are reserved for the engine",
                json={"properties": {"id": {"not": {"enum": list(RESERVED_RULE_IDS)}}}},
                field_path=".id",
            ),
        ),
    ),
    "Budgets": C("Budgets, applied only to calls the rules allow."),
    "RateLimit": C("A token bucket."),
    "SpendCap": C("A spend cap."),
    "MutationWindow": C("At most limit mutating calls per agent in a fixed window."),
    "BundleTest": C(
        "A bundle test: exactly one of call and gpu.",
        checks=(
            Check(
                cel="has(self.call) != has(self.gpu)",
                message="a test needs exactly one of call (a tool call to decide) or gpu"
                " (a tenant's GPU usage)",
                json={"oneOf": [{"required": ["call"]}, {"required": ["gpu"]}]},
            ),
            Check(
                cel="has(self.gpu) ? has(self.expect.violations) : has(self.expect.decision)",
                message="a call test expects a decision, a GPU test expects violations",
                json={
                    "if": {"required": ["gpu"]},
                    "then": {"properties": {"expect": {"required": ["violations"]}}},
                    "else": {"properties": {"expect": {"required": ["decision"]}}},
                },
                field_path=".expect",
            ),
        ),
    ),
    "TestCall": C("The call to decide."),
    "GpuUsage": C("GPU usage of one tenant on one node."),
    "TestExpect": C("The expected answer."),
}


# -- generation -----------------------------------------------------------------


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True, slots=True)
class _Type:
    """A field's Python type, reduced to what a schema needs."""

    kind: str  # string | integer | number | boolean | enum | object | array | map | any
    optional: bool = False
    enum: tuple[str, ...] = ()
    cls: type | None = None
    item: _Type | None = None


def _reduce(hint: Any) -> _Type:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _reduce(args[0])
        return dataclasses.replace(inner, optional=True)
    if origin is tuple:
        return _Type("array", item=_reduce(typing.get_args(hint)[0]))
    if origin in (Mapping, dict) or origin is typing.get_origin(Mapping[str, str]):
        value = typing.get_args(hint)[1]
        return _Type("any" if value is Any else "map", item=_reduce(value))
    if hint is Any:
        return _Type("any")
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return _Type("enum", enum=tuple(m.value for m in hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _Type("object", cls=hint)
    for py, kind in ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "number")):
        if hint is py:
            return _Type(kind)
    raise TypeError(f"no schema for {hint!r}")


class _Gen:
    """Renders the model for one dialect: ``openapi`` (the CRD) or ``json`` (JSON Schema)."""

    def __init__(self, dialect: str) -> None:
        self.openapi = dialect == "openapi"

    def obj(self, cls: type, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        name = cls.__name__
        meta = FIELDS.get(name, {})
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            fm = meta.get(f.name)
            if fm is None:
                raise KeyError(f"{name}.{f.name} has no description in palisade.bundle.openapi")
            if fm.omit:
                continue
            key = camel(f.name)
            props[key] = self.field(_reduce(hints[f.name]), fm)
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if fm.required if fm.required is not None else not has_default:
                required.append(key)
        out: dict[str, Any] = {"type": "object"}
        if name in CLASSES:
            out["description"] = CLASSES[name].description
        out["properties"] = props
        if required:
            out["required"] = required
        if not self.openapi:
            out["additionalProperties"] = False
        checks = CLASSES[name].checks if name in CLASSES else ()
        if checks and self.openapi:
            out["x-kubernetes-validations"] = [
                {"rule": c.cel, "message": c.message}
                | ({"fieldPath": c.field_path} if c.field_path else {})
                for c in checks
            ]
        elif checks:
            out["allOf"] = [dict(c.json) for c in checks]
        return out

    def field(self, t: _Type, fm: F) -> dict[str, Any]:
        s = self.value(t, fm)
        s = {"description": fm.description, **{k: v for k, v in s.items() if k != "description"}}
        if fm.default is not None and not self.openapi:
            s["default"] = fm.default
        nullable = fm.nullable if fm.nullable is not None else t.kind == "array"
        if nullable and not self.openapi:
            # The validator takes null as "not set"; the API server prunes nulls anyway.
            s["type"] = [s["type"], "null"]
        if t.kind == "array" and fm.unique_key and self.openapi:
            s["x-kubernetes-list-type"] = "map"
            s["x-kubernetes-list-map-keys"] = [fm.unique_key]
        return s

    def bounds(self, s: dict[str, Any], fm: F) -> None:
        if fm.minimum is not None:
            if fm.exclusive_minimum and self.openapi:
                s["minimum"] = fm.minimum
                s["exclusiveMinimum"] = True
            elif fm.exclusive_minimum:
                s["exclusiveMinimum"] = fm.minimum
            else:
                s["minimum"] = fm.minimum
        if fm.maximum is not None:
            s["maximum"] = fm.maximum

    def value(self, t: _Type, fm: F) -> dict[str, Any]:
        if t.kind == "object":
            assert t.cls is not None
            return self.obj(t.cls)
        if t.kind == "array":
            assert t.item is not None
            if t.item.kind == "string":
                items: dict[str, Any] = {"type": "string"}
                if fm.item_pattern:
                    items["pattern"] = fm.item_pattern
                if fm.item_enum:
                    items["enum"] = list(fm.item_enum)
            else:
                items = self.value(t.item, F(""))
            return {"type": "array", "items": items}
        if t.kind == "map":
            assert t.item is not None
            inner = self.value(t.item, fm)
            return {"type": "object", "additionalProperties": inner}
        if t.kind == "any":
            if self.openapi:
                return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            return {"type": "object"}
        if t.kind == "enum":
            return {"type": "string", "enum": list(t.enum)}
        s: dict[str, Any] = {"type": t.kind}
        if t.kind in ("integer", "number"):
            self.bounds(s, fm)
        if t.kind == "integer" and self.openapi:
            s["format"] = "int64"
        if t.kind == "string":
            if fm.pattern:
                s["pattern"] = fm.pattern
            if fm.min_length is not None:
                s["minLength"] = fm.min_length
        return s

    def spec(self) -> dict[str, Any]:
        s = self.obj(model.Bundle)
        s["description"] = (
            "The policy. 'palisade bundle lint' and the distributor check it in full (references"
            " between sections, CEL); this schema checks its shape."
        )
        return s


def spec_schema(dialect: str = "openapi") -> dict[str, Any]:
    """The schema of ``spec`` alone."""
    return _Gen(dialect).spec()


def status_schema() -> dict[str, Any]:
    """``status``, written by the distributor (see distributor/crd.py)."""
    condition = {
        "type": "object",
        "description": "A condition in the Kubernetes convention.",
        "required": ["type", "status", "lastTransitionTime"],
        "properties": {
            "type": {
                "type": "string",
                "description": "Valid: the spec passed validation. Ready: the live fleet runs"
                " the revision.",
            },
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "description": "One CamelCase word."},
            "message": {"type": "string", "description": "Details for a person."},
            "lastTransitionTime": {
                "type": "string",
                "format": "date-time",
                "description": "When status last changed (not when it was last checked).",
            },
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation this condition was computed from.",
            },
        },
    }
    return {
        "type": "object",
        "description": "Written by the distributor.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation the distributor last read.",
            },
            "revision": {
                "type": "integer",
                "format": "int64",
                "description": "Fleet revision served (it contains this bundle's last valid spec).",
            },
            "digest": {"type": "string", "description": "sha256 digest of that revision."},
            "validGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The last metadata.generation that was valid; while the current"
                " one is not, that one is served.",
            },
            "subscribers": {
                "type": "integer",
                "description": "Live clients running the revision.",
            },
            "fleet": {"type": "integer", "description": "Live clients."},
            "rollout": {"type": "string", "description": "subscribers/fleet, e.g. 12/12."},
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": condition,
            },
        },
    }


def crd_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the CRD."""
    return {
        "type": "object",
        "description": "A policy bundle: the distributor validates, merges, versions, signs and"
        " pushes PolicyBundles to sidecars and node agents, and reports in status.",
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.matches('^{_DNS_LABEL}$')",
                "message": "metadata.name must be a DNS-1123 label (lowercase letters, digits"
                " and '-', at most 63)",
            }
        ],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema("openapi"),
            "status": status_schema(),
        },
    }


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "palisade"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "policybundle",
                "kind": KIND,
                "listKind": f"{KIND}List",
                "shortNames": ["pb"],
                "categories": ["palisade"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Revision",
                            "type": "integer",
                            "jsonPath": ".status.revision",
                            "description": "Fleet revision that contains this bundle",
                        },
                        {
                            "name": "Valid",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Valid")].status',
                        },
                        {
                            "name": "Rollout",
                            "type": "string",
                            "jsonPath": ".status.rollout",
                            "description": "Live subscribers running the revision / live"
                            " subscribers",
                        },
                        {
                            "name": "Digest",
                            "type": "string",
                            "jsonPath": ".status.digest",
                            "priority": 1,
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {"openAPIV3Schema": crd_schema()},
                }
            ],
        },
    }


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one bundle document, for editors."""
    gen = _Gen("json")
    any_value: dict[str, Any] = {}
    metadata = {
        "type": "object",
        "description": "The bundle's name and labels (the rest is set by the API server).",
        "required": ["name"],
        "properties": {
            "name": {
                "type": "string",
                "description": "Bundle name, a DNS-1123 label.",
                "pattern": f"^{_DNS_LABEL}$",
            },
            "labels": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "annotations": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "string"},
            },
            **{k: any_value for k in METADATA_SERVER_FIELDS},
        },
        "additionalProperties": False,
    }
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"{KIND} ({API_VERSION})",
        "description": "A Palisade policy bundle file. 'palisade bundle lint' checks it in full.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": KIND},
            "metadata": metadata,
            "spec": gen.spec(),
            "status": {"description": "Written by the distributor; ignored in files."},
        },
        "additionalProperties": False,
    }


# -- files ----------------------------------------------------------------------

CRD_PATH = "charts/palisade/crds/policybundles.palisade.dev.yaml"
#: The same CRD for the chart's templated copy (crds/ is never upgraded by Helm).
CRD_CHART_FILE = "charts/palisade/files/crd-policybundles.yaml"
JSON_SCHEMA_PATH = "schemas/policybundle.schema.json"

_CRD_HEADER = """\
# PolicyBundle: policy kept in Git and rolled by GitOps; the distributor
# validates, versions, signs and pushes it, and reports back in .status.
# GENERATED by scripts/gen-schemas from palisade/bundle/schema.py and
# palisade/bundle/openapi.py: do not edit by hand.
"""


def generated_files() -> dict[str, str]:
    """Repository path -> content of every generated schema file."""
    import json

    import yaml

    crd_text = _CRD_HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)
    return {
        CRD_PATH: crd_text,
        CRD_CHART_FILE: crd_text,
        JSON_SCHEMA_PATH: json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n",
    }
