"""In-process decision latency of the compiled engine, by bundle size, with and without CEL.

Bundles of 10, 1,000 and 10,000 rules over one registry (10 servers x 500
tools, 3 agents calling and one idle), exact names plus wildcard rules that
must be filtered out, with a catch-all deny at the end. Each call is timed on its own with
``time.perf_counter_ns`` over a fixed, shuffled set of calls that hits many
different routes; the first pass (which builds each route once) is a warm-up
and reported separately. Rows with CEL give every rule a ``when`` and start
with a global CEL guard rule, so every call evaluates at least one condition.
One row adds budgets (rate limit, spend cap, mutation cap) and an allowing
catch-all, so every call pays for the budget checks. The 10-rule
row without CEL is the baseline for the ratio column.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

from bench.common import Report, Target, percentile
from palisade.bundle import from_document
from palisade.policy import Call
from palisade.policy.engine import Engine, compile_bundle

SERVERS = 10
#: The registry is the same for every bundle size (10 servers x 500 tools x 3 agents), and so
#: is the set of calls: only the number of rules changes between rows.
TOOLS = 500
AGENTS = ("sre-a", "sre-b", "bot-c")
IDLE_AGENT = "nobody"  # declared, never calls: rules for it must cost nothing


def make_doc(rules: int, cel: bool, budgets: bool = False) -> dict[str, Any]:
    tools = TOOLS
    rule_list: list[dict[str, Any]] = []
    if cel:
        # A global guard every call meets, so every CEL row evaluates CEL on every call.
        rule_list.append(
            {
                "id": "no-dry-run-flag",
                "decision": "deny",
                "when": "has(args.force) && args.force == true",
            }
        )
    for i in range(rules - 1 - len(rule_list)):
        if i % 50 == 7:
            # A wildcard rule that never matches these agents: must cost nothing per call.
            match: dict[str, Any] = {"tools": [f"t{i % tools}*"], "agents": [IDLE_AGENT]}
        else:
            match = {
                "servers": [f"s{i % SERVERS}"],
                "tools": [f"t{(i // SERVERS) % tools}"],
                "agents": [AGENTS[i % len(AGENTS)]],
            }
        rule: dict[str, Any] = {
            "id": f"r{i}",
            "decision": "allow" if i % 4 else "deny",
            "match": match,
        }
        if cel:
            rule["when"] = f"has(args.namespace) && args.namespace == 'ns-{i % 3}'"
        rule_list.append(rule)
    # With budgets, the catch-all allows, so that every call goes through the budgets.
    rule_list.append({"id": "catch-all", "decision": "allow" if budgets else "deny"})
    spec: dict[str, Any] = {
        "servers": [
            {
                "name": f"s{s}",
                "tools": [{"name": f"t{t}", "risk": "read", "cost": 1} for t in range(tools)],
            }
            for s in range(SERVERS)
        ],
        "tenants": [{"name": "pay"}],
        "agents": [
            {"id": a, "tenant": "pay", "namespaces": ["ns-0"]} for a in (*AGENTS, IDLE_AGENT)
        ],
        "rules": rule_list,
    }
    if budgets:
        spec["budgets"] = {
            "rateLimits": [{"id": "rl", "rate": 1e9, "burst": 1e9}],
            "spendCaps": [{"id": "sc", "limit": 1e12, "windowSeconds": 3600}],
            "mutationsPerSession": 1000,
        }
    return {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": f"bench-{rules}"},
        "spec": spec,
    }


def make_calls(n: int, tools: int, seed: int = 7) -> list[Call]:
    rnd = random.Random(seed)
    return [
        Call(
            agent=rnd.choice(AGENTS),
            server=f"s{rnd.randrange(SERVERS)}",
            tool=f"t{rnd.randrange(tools)}",
            arguments={"namespace": f"ns-{rnd.randrange(3)}", "name": "payments-api"},
            session="bench",
        )
        for _ in range(n)
    ]


def measure(engine: Engine, calls: list[Call], rounds: int) -> list[float]:
    """Per-call latencies in seconds; GC paused so a collection does not land in one sample."""
    decide = engine.decide
    clock = time.perf_counter_ns
    samples: list[float] = []
    append = samples.append
    gc.disable()
    try:
        for _ in range(rounds):
            for c in calls:
                t0 = clock()
                decide(c)
                append((clock() - t0) / 1e9)
    finally:
        gc.enable()
    return samples


def run(quick: bool) -> Report:
    sizes = (10, 1_000, 10_000)
    rounds = 3 if quick else 20
    report = Report(
        name="engine",
        title="In-process decision latency (compiled engine, one call at a time)",
        columns=[
            "bundle",
            "rules",
            "cel",
            "compile_ms",
            "warmup_p50_us",
            "p50_us",
            "p99_us",
            "mean_us",
            "decisions/s",
            "p50_vs_10_rules",
        ],
    )
    cases = [(n, cel, False) for cel in (False, True) for n in sizes] + [(1_000, False, True)]
    calls = make_calls(2_000, TOOLS)
    engines: list[tuple[int, bool, bool, Engine, float, list[float]]] = []
    for n, cel, budgets in cases:
        bundle = from_document(make_doc(n, cel, budgets))
        t0 = time.perf_counter()
        engine = compile_bundle(bundle)
        compile_ms = (time.perf_counter() - t0) * 1e3
        warm = measure(engine, calls, 1)  # the first pass builds the routes
        engines.append((n, cel, budgets, engine, compile_ms, warm))
    # Interleave the rows round by round, so that noise from other processes on a
    # shared machine lands on every row alike rather than on whichever ran last.
    gc.collect()
    gc.freeze()
    samples: dict[int, list[float]] = {i: [] for i in range(len(engines))}
    for _ in range(rounds):
        for i, (_, _, _, engine, _, _) in enumerate(engines):
            samples[i].extend(measure(engine, calls, 1))
    gc.unfreeze()
    baseline: dict[bool, float] = {}
    for i, (n, cel, budgets, _, compile_ms, warm) in enumerate(engines):
        row = samples[i]
        p50 = percentile(row, 50)
        if not budgets:
            baseline.setdefault(cel, p50)
        name = f"{n:,} rules" + (" + CEL" if cel else "") + (" + budgets" if budgets else "")
        report.rows.append(
            {
                "bundle": name,
                "rules": n,
                "cel": "yes" if cel else "no",
                "compile_ms": compile_ms,
                "warmup_p50_us": percentile(warm, 50) * 1e6,
                "p50_us": p50 * 1e6,
                "p99_us": percentile(row, 99) * 1e6,
                "mean_us": sum(row) / len(row) * 1e6,
                "decisions/s": len(row) / sum(row),
                "p50_vs_10_rules": p50 / baseline[cel],
            }
        )
    report.targets = [
        Target("p50 at 1,000 rules without CEL", "1,000 rules", "p50_us", "<=", 10.0),
        Target("p99 at 1,000 rules without CEL", "1,000 rules", "p99_us", "<=", 50.0),
        Target(
            "10,000-rule p50 within 1.5x the 10-rule p50",
            "10,000 rules",
            "p50_vs_10_rules",
            "<=",
            1.5,
        ),
    ]
    report.notes.append(
        "warmup_p50_us is the first pass over 2,000 calls, which builds each (server, tool,"
        " agent, risk) route once; later passes reuse them"
    )
    report.notes.append(
        "CEL rows: every call evaluates the global guard's condition; at 10,000 rules about two"
        " calls in three also meet a rule of their own with a condition (two CEL evaluations), at"
        " 10 and 1,000 rules most calls do not, which is the 10,000-rule CEL row's extra cost"
    )
    report.notes.append(
        f"{rounds} rounds x 2,000 calls per row, rows interleaved round by round; GC paused"
        " while timing; one Python thread; same registry and calls for every row"
    )
    return report
