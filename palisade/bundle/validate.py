"""Plain document (from YAML or JSON) -> checked :class:`Bundle`, or every error at once.

The checks, each with its own message: missing or wrong ``apiVersion`` and
``kind``; unknown fields (with a suggestion); wrong types; bad enum values;
missing required fields; duplicate servers, tools, tenants, agents, rules,
budgets and tests; references to unknown servers, tools, agents and tenants;
bad globs; empty match lists; CEL that does not compile or uses unknown variables;
bad budget and quota numbers; tests expecting an unknown rule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from palisade.bundle import cel_ext as cel
from palisade.bundle.checker import Checker, typename
from palisade.bundle.codes import Code
from palisade.bundle.errors import BundleValidationError
from palisade.bundle.globs import glob_problem, is_glob
from palisade.bundle.schema import (
    API_VERSION,
    KIND,
    Agent,
    Budgets,
    Bundle,
    ClusterCredential,
    Enforcement,
    FailureMode,
    GpuQuota,
    Identity,
    Match,
    MutationWindow,
    RateLimit,
    RatePer,
    Rule,
    RuleMode,
    Server,
    SpendCap,
    Tenant,
    Tool,
)
from palisade.bundle.validate_tests import read_test
from palisade.bundle.yamlpos import Path, Positions
from palisade.policy.types import Decision, Risk

T = TypeVar("T")

#: Variables a ``when`` expression may use (comprehension variables aside).
CEL_VARIABLES = frozenset({"args", "agent", "call"})
#: The most distinct approvers a ``require_approval`` rule may ask for.
MAX_APPROVERS = 10
#: What a server entry's ``serverRequests`` may allow (sampling/createMessage,
#: elicitation/create, roots/list).
SERVER_REQUEST_KINDS = ("sampling", "elicitation", "roots")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_COMPREHENSION = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)")


# -- sections -----------------------------------------------------------------


def _tool(c: Checker, path: Path, raw: Any) -> Tool | None:
    d = c.obj(raw, path, ["name"], ["risk", "cost", "untrustedOutput", "secretArguments", "pinned"])
    if d is None:
        return None
    risk = c.enum_value(d["risk"], (*path, "risk"), Risk) if "risk" in d else None
    pinned = c.string(d, "pinned", path)
    if pinned and not _SHA256.match(pinned):
        c.err(
            (*path, "pinned"),
            "must be 'sha256:' followed by 64 lowercase hex digits",
            code=Code.BAD_FORMAT,
        )
    return Tool(
        name=c.name(d, "name", path),
        risk=risk,
        cost=c.number(d, "cost", path, 0.0) or 0.0,
        untrusted_output=c.boolean(d, "untrustedOutput", path, False),
        secret_arguments=c.strings(d, "secretArguments", path),
        pinned=pinned,
    )


def _server(c: Checker, path: Path, raw: Any) -> Server | None:
    d = c.obj(raw, path, ["name", "tools"], ["versions", "images", "serverRequests"])
    if d is None:
        return None
    images = c.strings(d, "images", path)
    server_requests = c.strings(d, "serverRequests", path)
    for i, kind in enumerate(server_requests):
        if kind not in SERVER_REQUEST_KINDS:
            c.err(
                (*path, "serverRequests", i),
                f"{kind!r} is not one of {', '.join(SERVER_REQUEST_KINDS)}",
                code=Code.NOT_A_CHOICE,
            )
    for i, image in enumerate(images):
        if not _SHA256.match(image):
            c.err(
                (*path, "images", i),
                "must be an image digest 'sha256:<64 hex digits>'",
                code=Code.BAD_FORMAT,
            )
    tools: list[Tool] = []
    tool_names: list[tuple[Path, str]] = []
    for p, raw_t in c.items(d, "tools", path):
        t = _tool(c, p, raw_t)
        if t is not None:
            tools.append(t)
            tool_names.append(((*p, "name"), t.name))
    c.unique(tool_names, "tool")
    return Server(
        name=c.name(d, "name", path),
        versions=c.strings(d, "versions", path, globs=True),
        images=images,
        tools=tuple(tools),
        server_requests=tuple(
            dict.fromkeys(k for k in server_requests if k in SERVER_REQUEST_KINDS)
        ),
    )


def _quota(c: Checker, path: Path, raw: Any) -> GpuQuota | None:
    d = c.obj(
        raw,
        path,
        [],
        [
            "gpus",
            "gpuMemoryBytes",
            "migInstances",
            "powerWatts",
            "allocatedDevicesOnly",
            "enforcement",
            "gracePeriodSeconds",
        ],
    )
    if d is None:
        return None
    mig: dict[str, int] = {}
    raw_mig = d.get("migInstances") or {}
    if not isinstance(raw_mig, dict):
        c.err(
            (*path, "migInstances"),
            f"must be a mapping, got {typename(raw_mig)}",
            code=Code.WRONG_TYPE,
        )
    else:
        for profile in raw_mig:
            n = c.integer(raw_mig, profile, (*path, "migInstances"), None)
            if n is not None:
                mig[profile] = n
    return GpuQuota(
        gpus=c.integer(d, "gpus", path, None),
        gpu_memory_bytes=c.integer(d, "gpuMemoryBytes", path, None),
        mig_instances=mig,
        power_watts=c.number(d, "powerWatts", path, None),
        allocated_devices_only=c.boolean(d, "allocatedDevicesOnly", path, False),
        enforcement=c.enum(d, "enforcement", path, Enforcement, Enforcement.REPORT),
        grace_period_seconds=c.number(d, "gracePeriodSeconds", path, 30.0) or 0.0,
    )


def _tenant(c: Checker, path: Path, raw: Any) -> Tenant | None:
    d = c.obj(raw, path, ["name"], ["namespaces", "gpuQuota"])
    if d is None:
        return None
    quota = _quota(c, (*path, "gpuQuota"), d["gpuQuota"]) if "gpuQuota" in d else None
    return Tenant(
        name=c.name(d, "name", path),
        namespaces=c.strings(d, "namespaces", path),
        gpu_quota=quota,
    )


def _agent(c: Checker, path: Path, raw: Any) -> Agent | None:
    d = c.obj(
        raw, path, ["id"], ["tenant", "namespaces", "scopes", "identities", "clusterCredential"]
    )
    if d is None:
        return None
    identities: list[Identity] = []
    for p, raw_i in c.items(d, "identities", path):
        i = c.obj(raw_i, p, [], ["issuer", "subject", "serviceAccount"])
        if i is None:
            continue
        ident = Identity(
            issuer=c.string(i, "issuer", p),
            subject=c.string(i, "subject", p),
            service_account=c.string(i, "serviceAccount", p),
        )
        if not ident.service_account and not (ident.issuer and ident.subject):
            c.err(
                p,
                "needs either 'serviceAccount' or both 'issuer' and 'subject'",
                code=Code.COMBINATION,
            )
        identities.append(ident)
    return Agent(
        id=c.name(d, "id", path),
        tenant=c.string(d, "tenant", path),
        namespaces=c.strings(d, "namespaces", path),
        scopes=c.strings(d, "scopes", path),
        identities=tuple(identities),
        cluster_credential=_cluster_credential(c, (*path, "clusterCredential"), d),
    )


#: A ServiceAccount's name (a DNS subdomain); its namespace is a DNS label (_DNS_LABEL).
_SA_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _cluster_credential(c: Checker, path: Path, d: dict[str, Any]) -> ClusterCredential | None:
    """``clusterCredential: {serviceAccount: <namespace>/<name>}``, or None when absent."""
    if "clusterCredential" not in d:
        return None
    cc = c.obj(d["clusterCredential"], path, ["serviceAccount"], [])
    if cc is None:
        return None
    ref = c.string(cc, "serviceAccount", path)
    namespace, slash, name = ref.partition("/")
    if not (slash and _DNS_LABEL.fullmatch(namespace) and _SA_NAME.fullmatch(name)):
        c.err(
            (*path, "serviceAccount"),
            f"{ref!r} is not '<namespace>/<name>' of a ServiceAccount",
            code=Code.BAD_FORMAT,
        )
        return None
    return ClusterCredential(service_account=ref)


def _match(c: Checker, path: Path, raw: Any) -> Match:
    if raw is None:
        return Match()
    d = c.obj(raw, path, [], ["servers", "tools", "risk", "agents", "tenants", "labels"])
    if d is None:
        return Match()
    for key in ("servers", "tools", "risk", "agents", "tenants"):
        if d.get(key) == []:
            c.err(
                (*path, key),
                "an empty list matches nothing; leave the field out to match any",
                code=Code.COMBINATION,
            )
    risks = tuple(
        r for p, v in c.items(d, "risk", path) if (r := c.enum_value(v, p, Risk)) is not None
    )
    labels = c.str_map(d, "labels", path)
    for k, v in labels.items():
        problem = glob_problem(v)
        if problem:
            c.err((*path, "labels", k), f"bad glob {v!r}: {problem}", code=Code.GLOB)
    return Match(
        servers=c.strings(d, "servers", path, globs=True),
        tools=c.strings(d, "tools", path, globs=True),
        risk=risks,
        agents=c.strings(d, "agents", path, globs=True),
        tenants=c.strings(d, "tenants", path, globs=True),
        labels=labels,
    )


def check_cel(expr: str) -> str:
    """Return why ``expr`` is not a usable ``when`` condition, or "" when it is."""
    try:
        program = cel.compile(expr)
    except (ValueError, RuntimeError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"CEL does not compile: {first}"
    bound = set(_COMPREHENSION.findall(expr))
    unknown = sorted(set(program.variables()) - CEL_VARIABLES - bound)
    if unknown:
        return (
            f"CEL uses unknown variable(s) {', '.join(unknown)}; "
            f"only {', '.join(sorted(CEL_VARIABLES))} are defined"
        )
    return ""


def _rule(c: Checker, path: Path, raw: Any) -> Rule | None:
    d = c.obj(
        raw,
        path,
        ["id", "decision"],
        ["match", "when", "reason", "retryAfterSeconds", "approvers", "mode"],
    )
    if d is None:
        return None
    decision = c.enum(d, "decision", path, Decision, Decision.DENY)
    approvers = c.integer(d, "approvers", path, 1, minimum=1) or 1
    if approvers > MAX_APPROVERS:
        c.err(
            (*path, "approvers"),
            f"must be at most {MAX_APPROVERS}, got {approvers}",
            code=Code.OUT_OF_RANGE,
        )
        approvers = 1
    if "approvers" in d and decision is not Decision.REQUIRE_APPROVAL:
        c.err(
            (*path, "approvers"),
            "only a require_approval rule has approvers",
            code=Code.COMBINATION,
        )
    when = c.string(d, "when", path)
    if when:
        problem = check_cel(when)
        if problem:
            c.err((*path, "when"), problem, code=Code.EXPRESSION)
    return Rule(
        id=c.name(d, "id", path),
        decision=decision,
        match=_match(c, (*path, "match"), d.get("match")),
        when=when,
        reason=c.string(d, "reason", path),
        retry_after_seconds=c.number(d, "retryAfterSeconds", path, 1.0) or 0.0,
        approvers=approvers,
        mode=c.enum(d, "mode", path, RuleMode, RuleMode.ENFORCE),
    )


def _budgets(c: Checker, path: Path, raw: Any) -> tuple[Budgets, list[tuple[Path, Match]]]:
    """The budgets, plus (path, match) of each limit for the reference checks."""
    if raw is None:
        return Budgets(), []
    d = c.obj(
        raw, path, [], ["rateLimits", "spendCaps", "mutationsPerSession", "mutationsPerAgent"]
    )
    if d is None:
        return Budgets(), []
    ids: list[tuple[Path, str]] = []
    matches: list[tuple[Path, Match]] = []
    rates: list[RateLimit] = []
    for p, raw_r in c.items(d, "rateLimits", path):
        r = c.obj(raw_r, p, ["id", "rate", "burst"], ["per", "match"])
        if r is None:
            continue
        rate = c.number(r, "rate", p, None, minimum=0.0, exclusive=True)
        burst = c.number(r, "burst", p, None, minimum=1.0)
        rates.append(
            RateLimit(
                id=c.name(r, "id", p),
                rate=rate or 1.0,
                burst=burst or 1.0,
                per=c.enum(r, "per", p, RatePer, RatePer.AGENT),
                match=_match(c, (*p, "match"), r.get("match")),
            )
        )
        ids.append(((*p, "id"), rates[-1].id))
        matches.append(((*p, "match"), rates[-1].match))
    caps: list[SpendCap] = []
    for p, raw_s in c.items(d, "spendCaps", path):
        s = c.obj(raw_s, p, ["id", "limit", "windowSeconds"], ["match"])
        if s is None:
            continue
        caps.append(
            SpendCap(
                id=c.name(s, "id", p),
                limit=c.number(s, "limit", p, None) or 0.0,
                window_seconds=c.number(s, "windowSeconds", p, None, exclusive=True) or 1.0,
                match=_match(c, (*p, "match"), s.get("match")),
            )
        )
        ids.append(((*p, "id"), caps[-1].id))
        matches.append(((*p, "match"), caps[-1].match))
    c.unique(ids, "budget id")
    budgets = Budgets(
        rate_limits=tuple(rates),
        spend_caps=tuple(caps),
        mutations_per_session=c.integer(d, "mutationsPerSession", path, None),
        mutations_per_agent=_mutation_window(c, (*path, "mutationsPerAgent"), d),
    )
    return budgets, matches


def _mutation_window(c: Checker, path: Path, budgets: dict[str, Any]) -> MutationWindow | None:
    if budgets.get("mutationsPerAgent") is None:
        return None
    w = c.obj(budgets["mutationsPerAgent"], path, ["limit", "windowSeconds"], [])
    if w is None:
        return None
    return MutationWindow(
        limit=c.integer(w, "limit", path, None) or 0,
        window_seconds=c.number(w, "windowSeconds", path, None, exclusive=True) or 1.0,
    )


def _section(
    c: Checker,
    d: Mapping[str, Any],
    key: str,
    path: Path,
    build: Callable[[Checker, Path, Any], T | None],
) -> tuple[list[tuple[Path, Any]], list[T | None]]:
    items = c.items(d, key, path)
    return items, [build(c, p, raw) for p, raw in items]


def _refs(c: Checker, path: Path, patterns: tuple[str, ...], known: set[str], what: str) -> None:
    """Exact names must exist; a glob must match at least one known name."""
    for i, pat in enumerate(patterns):
        if is_glob(pat):
            if known and not any(fnmatchcase(k, pat) for k in known):
                c.err((*path, i), f"glob {pat!r} matches no declared {what}", code=Code.GLOB)
        elif pat not in known:
            close = difflib.get_close_matches(pat, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            c.err(
                (*path, i),
                f"unknown {what} {pat!r}{hint} (declare it under spec.{what}s)",
                code=Code.UNKNOWN_REFERENCE,
            )


def _tool_refs(
    c: Checker,
    path: Path,
    m: Match,
    servers: list[Server | None],
    memo: dict[tuple[str, ...], frozenset[str]],
) -> None:
    """Tools named in a match must be registered by a server the match can select.

    Unregistered tools are denied before any rule runs, so such a rule is dead:
    almost always a typo. ``memo`` caches the tool names per ``servers`` patterns.
    """
    if not m.tools:
        return
    known = memo.get(m.servers)
    if known is None:
        known = frozenset(
            t.name
            for s in servers
            if s is not None
            and (not m.servers or any(fnmatchcase(s.name, pat) for pat in m.servers))
            for t in s.tools
        )
        memo[m.servers] = known
    if not known:
        return  # the servers are wrong already (reported there)
    for i, pat in enumerate(m.tools):
        if is_glob(pat):
            if not any(fnmatchcase(k, pat) for k in known):
                c.err(
                    (*path, i),
                    f"glob {pat!r} matches no registered tool of the servers matched",
                    code=Code.GLOB,
                )
        elif pat not in known:
            close = difflib.get_close_matches(pat, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            c.err(
                (*path, i),
                f"unknown tool {pat!r}{hint} (no server this rule can match registers it;"
                " unregistered tools are denied before rules run)",
                code=Code.UNKNOWN_REFERENCE,
            )


_BUILTIN_RULE_IDS = ("default", "registry", "failure")
#: The metadata fields the API server sets or may carry; a bundle may hold them.
METADATA_SERVER_FIELDS = (
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
    "generateName",
)
_METADATA_OPTIONAL = ("labels", "annotations", *METADATA_SERVER_FIELDS)


def build_bundle(doc: Any, positions: Positions) -> Bundle:
    """Check ``doc`` and build the bundle; raise :class:`BundleValidationError` with every issue."""
    c = Checker(positions)
    # `status` and the server-set metadata fields are accepted (and ignored) so that a
    # custom resource exported with `kubectl get -o yaml` lints as it is.
    root = c.obj(doc, (), ["apiVersion", "kind", "metadata", "spec"], ["status"])
    if root is None:
        raise BundleValidationError(c.issues)
    if "apiVersion" in root and root["apiVersion"] != API_VERSION:
        c.err(
            ("apiVersion",),
            f"unsupported apiVersion {root['apiVersion']!r}; use {API_VERSION!r}",
            code=Code.KIND,
        )
    if "kind" in root and root["kind"] != KIND:
        c.err(("kind",), f"kind must be {KIND!r}, got {root['kind']!r}", code=Code.KIND)
    meta: dict[str, Any] = {}
    if "metadata" in root:  # (its absence is already reported)
        meta = c.obj(root["metadata"], ("metadata",), ["name"], _METADATA_OPTIONAL) or {}
    name = c.string(meta, "name", ("metadata",))
    if "name" in meta and isinstance(meta["name"], str) and not _DNS_LABEL.match(name):
        c.err(
            ("metadata", "name"),
            f"{name!r} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)",
            code=Code.BAD_FORMAT,
        )
    labels = c.str_map(meta, "labels", ("metadata",))
    c.str_map(meta, "annotations", ("metadata",))
    sp: Path = ("spec",)
    spec = (
        c.obj(
            root.get("spec", {}),
            sp,
            [],
            [
                "defaultDecision",
                "failureMode",
                "servers",
                "tenants",
                "agents",
                "budgets",
                "rules",
                "tests",
            ],
        )
        or {}
    )
    default = c.enum(spec, "defaultDecision", sp, Decision, Decision.DENY)
    failure = c.enum(spec, "failureMode", sp, FailureMode, FailureMode.CLOSED)

    s_items, servers = _section(c, spec, "servers", sp, _server)
    t_items, tenants = _section(c, spec, "tenants", sp, _tenant)
    a_items, agents = _section(c, spec, "agents", sp, _agent)
    budgets, budget_items = _budgets(c, (*sp, "budgets"), spec.get("budgets"))
    r_items, rules = _section(c, spec, "rules", sp, _rule)
    x_items, tests = _section(c, spec, "tests", sp, read_test)

    def named(items: list[tuple[Path, Any]], objs: list[Any], attr: str) -> list[tuple[Path, str]]:
        return [((*p, attr), getattr(o, attr)) for (p, _), o in zip(items, objs, strict=True) if o]

    c.unique(named(s_items, servers, "name"), "server")
    c.unique(named(t_items, tenants, "name"), "tenant")
    c.unique(named(a_items, agents, "id"), "agent")
    c.unique(named(r_items, rules, "id"), "rule id")
    c.unique(named(x_items, tests, "name"), "test name")

    server_names = {s.name for s in servers if s}
    tenant_names = {t.name for t in tenants if t}
    agent_ids = {a.id for a in agents if a}
    rule_ids = {r.id for r in rules if r}
    tool_memo: dict[tuple[str, ...], frozenset[str]] = {}
    for (p, _), r in zip(r_items, rules, strict=True):
        if r is None:
            continue
        if r.id in _BUILTIN_RULE_IDS:
            c.err(
                (*p, "id"),
                f"rule id {r.id!r} is reserved for the engine; pick another",
                code=Code.RESERVED,
            )
        mp = (*p, "match")
        _refs(c, (*mp, "servers"), r.match.servers, server_names, "server")
        _tool_refs(c, (*mp, "tools"), r.match, servers, tool_memo)
        _refs(c, (*mp, "agents"), r.match.agents, agent_ids, "agent")
        _refs(c, (*mp, "tenants"), r.match.tenants, tenant_names, "tenant")
    owners: dict[tuple[str, str, str], str] = {}
    for (p, _), a in zip(a_items, agents, strict=True):
        if a is None:
            continue
        if a.tenant and a.tenant not in tenant_names:
            c.err(
                (*p, "tenant"),
                f"unknown tenant {a.tenant!r} (declare it under spec.tenants)",
                code=Code.UNKNOWN_REFERENCE,
            )
        for i, ident in enumerate(a.identities):
            key = (ident.issuer, ident.subject, ident.service_account)
            owner = owners.setdefault(key, a.id)
            if owner != a.id:
                c.err(
                    (*p, "identities", i),
                    f"this identity already maps to agent {owner!r}; one identity, one agent",
                    code=Code.DUPLICATE,
                )
    for mp, m in budget_items:
        _refs(c, (*mp, "servers"), m.servers, server_names, "server")
        _tool_refs(c, (*mp, "tools"), m, servers, tool_memo)
        _refs(c, (*mp, "agents"), m.agents, agent_ids, "agent")
        _refs(c, (*mp, "tenants"), m.tenants, tenant_names, "tenant")
    known_rules = (
        rule_ids
        | set(_BUILTIN_RULE_IDS)
        | {f"budget/{b.id}" for b in budgets.rate_limits}
        | {f"budget/{b.id}" for b in budgets.spend_caps}
        | {"budget/mutationsPerSession", "budget/mutationsPerAgent"}
    )
    quotas = {t.name: t.gpu_quota for t in tenants if t is not None}
    for (p, _), t in zip(x_items, tests, strict=True):
        if t is not None and t.gpu is not None:
            if t.gpu.tenant not in quotas:
                c.err(
                    (*p, "gpu", "tenant"),
                    f"unknown tenant {t.gpu.tenant!r}",
                    code=Code.UNKNOWN_REFERENCE,
                )
            elif quotas[t.gpu.tenant] is None:
                c.err(
                    (*p, "gpu", "tenant"),
                    f"tenant {t.gpu.tenant!r} has no gpuQuota to test",
                    code=Code.COMBINATION,
                )
        if t is not None and t.expect.rule and t.expect.rule not in known_rules:
            close = difflib.get_close_matches(t.expect.rule, sorted(known_rules), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            c.err(
                (*p, "expect", "rule"),
                f"test expects unknown rule {t.expect.rule!r}{hint}",
                code=Code.UNKNOWN_REFERENCE,
            )

    if c.issues:
        raise BundleValidationError(c.issues)
    return Bundle(
        name=name,
        default_decision=default,
        failure_mode=failure,
        servers=tuple(s for s in servers if s),
        tenants=tuple(t for t in tenants if t),
        agents=tuple(a for a in agents if a),
        budgets=budgets,
        rules=tuple(r for r in rules if r),
        tests=tuple(t for t in tests if t),
        labels=labels,
    )
