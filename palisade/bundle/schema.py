"""The bundle schema as frozen dataclasses (see docs/bundle-format.md).

Field names are the Python spelling of the YAML keys (``defaultDecision`` ->
``default_decision``). Values are already checked and normalised: tuples
instead of lists, enums instead of strings, defaults filled in. Build these
with :func:`palisade.bundle.validate.build_bundle`, never by hand from YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from palisade.policy.types import Decision, Risk

API_VERSION = "palisade.dev/v1alpha1"
KIND = "PolicyBundle"


class FailureMode(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class RatePer(StrEnum):
    AGENT = "agent"
    TOOL = "tool"
    RULE = "rule"


class RuleMode(StrEnum):
    #: the rule decides the call
    ENFORCE = "enforce"
    #: the rule is evaluated and what it would have decided is recorded; the call
    #: goes on to the next rule (Kyverno's Audit, Gatekeeper's dryrun)
    AUDIT = "audit"


class Enforcement(StrEnum):
    REPORT = "report"
    EVICT = "evict"
    KILL = "kill"


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    risk: Risk | None = None
    cost: float = 0.0
    untrusted_output: bool = False
    secret_arguments: tuple[str, ...] = ()
    #: "sha256:<hex>" of the tool definition, or "" when not pinned.
    pinned: str = ""


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    versions: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    #: Requests the server may send the client (``sampling``, ``elicitation``,
    #: ``roots``); any other is refused by the sidecar (docs/bundle-format.md).
    server_requests: tuple[str, ...] = ()

    def tool(self, name: str) -> Tool | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None


@dataclass(frozen=True, slots=True)
class GpuQuota:
    gpus: int | None = None
    gpu_memory_bytes: int | None = None
    mig_instances: Mapping[str, int] = field(default_factory=dict)
    power_watts: float | None = None
    allocated_devices_only: bool = False
    enforcement: Enforcement = Enforcement.REPORT
    grace_period_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    namespaces: tuple[str, ...] = ()
    gpu_quota: GpuQuota | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """One way an authenticated token maps to an agent."""

    issuer: str = ""
    subject: str = ""
    service_account: str = ""


@dataclass(frozen=True, slots=True)
class ClusterCredential:
    """The cluster credential the sidecar hands the upstream for this agent's calls:
    a short-lived TokenRequest token of the agent's own ServiceAccount
    (docs/credentials.md)."""

    #: ``namespace/name`` of the ServiceAccount.
    service_account: str

    @property
    def namespace(self) -> str:
        return self.service_account.partition("/")[0]

    @property
    def name(self) -> str:
        return self.service_account.partition("/")[2]

    @property
    def username(self) -> str:
        """The identity the API server sees: ``system:serviceaccount:<ns>:<name>``."""
        return f"system:serviceaccount:{self.namespace}:{self.name}"


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    tenant: str = ""
    namespaces: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    identities: tuple[Identity, ...] = ()
    #: None: the sidecar hands the upstream no cluster credential for this agent.
    cluster_credential: ClusterCredential | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """Every field optional (empty = any); values in a list are ORed, fields ANDed."""

    servers: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    risk: tuple[Risk, ...] = ()
    agents: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    decision: Decision
    match: Match = field(default_factory=Match)
    when: str = ""
    reason: str = ""
    #: For ``throttle`` rules: how long the caller should wait.
    retry_after_seconds: float = 1.0
    #: For ``require_approval`` rules: how many distinct people must approve.
    approvers: int = 1
    #: ``audit``: evaluated and recorded as what it would decide; the next rule decides.
    mode: RuleMode = RuleMode.ENFORCE


@dataclass(frozen=True, slots=True)
class RateLimit:
    id: str
    rate: float
    burst: float
    per: RatePer = RatePer.AGENT
    match: Match = field(default_factory=Match)


@dataclass(frozen=True, slots=True)
class SpendCap:
    id: str
    limit: float
    window_seconds: float
    match: Match = field(default_factory=Match)


@dataclass(frozen=True, slots=True)
class MutationWindow:
    """At most ``limit`` mutating calls per agent in a fixed window, across all its sessions."""

    limit: int
    window_seconds: float


@dataclass(frozen=True, slots=True)
class Budgets:
    rate_limits: tuple[RateLimit, ...] = ()
    spend_caps: tuple[SpendCap, ...] = ()
    #: Mutating calls allowed per session before approval is needed; None = no cap.
    mutations_per_session: int | None = None
    #: Mutating calls allowed per agent in a window, whatever its sessions; None = no cap.
    mutations_per_agent: MutationWindow | None = None


@dataclass(frozen=True, slots=True)
class TestCall:
    agent: str
    server: str
    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    session: str = "test-session"
    on_behalf_of: str = ""
    server_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    server_declared_risk: Risk | None = None


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """A tenant's GPU use on one node, for quota tests."""

    tenant: str
    gpus: int = 0
    gpu_memory_bytes: int = 0
    mig_instances: Mapping[str, int] = field(default_factory=dict)
    power_watts: float = 0.0
    #: Devices its processes use that the kubelet did not allocate to their pods.
    unallocated_devices: int = 0


@dataclass(frozen=True, slots=True)
class TestExpect:
    #: For call tests.
    decision: Decision | None = None
    rule: str = ""
    reason_contains: str = ""
    #: For GPU tests: the quota limits exceeded (``gpus``, ``migInstances/1g.18gb``, ...).
    violations: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class BundleTest:
    """An example call (or GPU usage) and what the bundle must answer.

    Exactly one of ``call`` and ``gpu`` is set.
    """

    __test__ = False  # not a pytest class

    name: str
    call: TestCall | None
    expect: TestExpect
    gpu: GpuUsage | None = None
    #: Make the call this many times in one fresh session (budgets count up).
    repeat: int = 1
    #: Seconds the fake clock advances between repetitions.
    every_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Bundle:
    name: str
    default_decision: Decision = Decision.DENY
    failure_mode: FailureMode = FailureMode.CLOSED
    servers: tuple[Server, ...] = ()
    tenants: tuple[Tenant, ...] = ()
    agents: tuple[Agent, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)
    rules: tuple[Rule, ...] = ()
    tests: tuple[BundleTest, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def server(self, name: str) -> Server | None:
        for s in self.servers:
            if s.name == name:
                return s
        return None

    def agent(self, agent_id: str) -> Agent | None:
        for a in self.agents:
            if a.id == agent_id:
                return a
        return None

    def tenant(self, name: str) -> Tenant | None:
        for t in self.tenants:
            if t.name == name:
                return t
        return None
