"""The ``/status`` document, and ``palisade nodeagent status``, which prints it.

  palisade nodeagent status [--url http://127.0.0.1:9400] [-o table|wide|json|yaml]

``table`` is the tables a node operator reads (GPUs, processes, tenants,
violations, actions); ``wide`` adds columns (clocks, ECC, XID, energy per GPU;
enforcement per tenant); ``json`` and ``yaml`` are the ``/status`` document
as the agent serves it. ``--json`` (the older flag) means ``-o json``. Exit 1
when the agent cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from nodeagent.gpu import GpuSample

if TYPE_CHECKING:
    from rich.console import Console

    from nodeagent.agent import Agent


def _gpu(g: GpuSample, agent: Agent) -> dict[str, Any]:
    procs = [p for p in agent.attributed if p.gpu_uuid == g.uuid]
    return {
        "index": g.index,
        "uuid": g.uuid,
        "name": g.name,
        "ok": g.ok,
        "error": g.error,
        "migEnabled": g.mig_enabled,
        "utilizationPct": g.utilization_pct,
        "memoryUsedBytes": g.memory_used_bytes,
        "memoryTotalBytes": g.memory_total_bytes,
        "powerWatts": g.power_watts,
        "energyJoules": g.energy_joules,
        "temperatureC": g.temperature_c,
        "smClockMHz": g.sm_clock_mhz,
        "memoryClockMHz": g.memory_clock_mhz,
        "eccCorrected": g.ecc_corrected,
        "eccUncorrected": g.ecc_uncorrected,
        "xidEvents": list(g.xid_events),
        "unsupported": list(g.unsupported),
        "errors": dict(g.errors),
        "mig": [
            {
                "giId": m.gi_id,
                "ciId": m.ci_id,
                "profile": m.profile,
                "uuid": m.uuid,
                "slices": m.slices,
                "memoryUsedBytes": m.memory_used_bytes,
                "memoryTotalBytes": m.memory_total_bytes,
                "unsupported": list(m.unsupported),
            }
            for m in g.mig
        ],
        "processes": [
            {
                "pid": p.pid,
                "giId": p.gi_id,
                "profile": p.profile,
                "usedMemoryBytes": p.used_memory_bytes,
                "pod": f"{p.namespace}/{p.pod}" if p.pod else "",
                "container": p.container,
                "tenant": p.tenant,
                "allocated": p.allocated,
                "unattributed": p.unattributed_reason,
            }
            for p in procs
        ],
    }


def _quota(q: Any) -> dict[str, Any] | None:
    if q is None:
        return None
    return {
        "gpus": q.gpus,
        "gpuMemoryBytes": q.gpu_memory_bytes,
        "migInstances": dict(q.mig_instances),
        "powerWatts": q.power_watts,
        "allocatedDevicesOnly": q.allocated_devices_only,
        "enforcement": q.enforcement.value,
        "gracePeriodSeconds": q.grace_period_s,
    }


def status_document(agent: Agent) -> dict[str, Any]:
    snap = agent.snapshot
    tenants: dict[str, Any] = {}
    names = set(agent.usages) | set(agent.config.quotas)
    names |= {k for k in agent.ledger.joules if k not in ("idle", "unattributed")}
    for name in sorted(names):
        u = agent.usages.get(name)
        tenants[name] = {
            "usage": u.summary()
            if u
            else {"gpus": 0, "gpuMemoryBytes": 0, "migInstances": {}, "powerWatts": 0.0},
            "quota": _quota(agent.config.quotas.get(name)),
            "gpuSeconds": round(agent.ledger.gpu_seconds.get(name, 0.0), 3),
            "energyJoules": round(agent.ledger.joules.get(name, 0.0), 3),
        }
    first = agent.state.first_seen
    return {
        "node": agent.settings.node,
        "mode": agent.backend.mode.value,
        "detail": snap.detail if snap else "",
        "driverVersion": snap.driver_version if snap else "",
        "health": agent.health(),
        "ready": agent.ready,
        "dryRun": agent.settings.dry_run,
        "time": snap.time if snap else None,
        "samples": agent.samples,
        "lastError": agent.last_error,
        "allocationsError": agent.allocations_error,
        "podsSynced": agent.pods.synced,
        "gpus": [_gpu(g, agent) for g in snap.gpus] if snap else [],
        "tenants": tenants,
        "unattributed": [
            {
                "pid": p.pid,
                "gpu": p.gpu_uuid,
                "giId": p.gi_id,
                "usedMemoryBytes": p.used_memory_bytes,
                "podUid": p.pod_uid,
                "reason": p.unattributed_reason,
            }
            for p in agent.attributed
            if not p.attributed
        ],
        "energy": {
            "gpuSeconds": {k: round(v, 3) for k, v in sorted(agent.ledger.gpu_seconds.items())},
            "joules": {k: round(v, 3) for k, v in sorted(agent.ledger.joules.items())},
        },
        "violations": [
            {
                "tenant": v.tenant,
                "quota": v.kind,
                "measured": v.measured,
                "limit": v.limit,
                "since": first.get(v.key),
                "pods": [
                    f"{agent.usages[v.tenant].pods[uid].namespace}/"
                    f"{agent.usages[v.tenant].pods[uid].name}"
                    for uid in v.pods
                ],
            }
            for v in agent.violations
        ],
        "actions": [r.to_json() for r in agent.enforcer.records[-50:]],
        "bundle": {
            "revision": agent.config.revision,
            "digest": agent.config.digest,
            "source": agent.config.source,
        },
        "heartbeat": agent.heartbeat_status(),
        "trust": agent.trust() if agent.trust else None,
    }


def _gib(v: Any) -> str:
    return "-" if v is None else f"{v / 2**30:.1f}"


def _num(v: Any, unit: str = "") -> str:
    return "-" if v is None else f"{v:.0f}{unit}"


def _esc(v: Any) -> str:
    """A value from the node (a pod name, an error) shown as text, never as markup."""
    from rich.markup import escape

    return escape(str(v))


def render(doc: dict[str, Any], console: Console, *, wide: bool = False) -> None:
    """Print a ``/status`` document as tables for a node operator (``wide``: more columns)."""
    from rich.table import Table

    hb = doc.get("heartbeat") or {}
    console.print(
        f"[bold]node[/] {doc.get('node')}  [bold]mode[/] {doc.get('mode')}  "
        f"[bold]health[/] {doc.get('health')}  [bold]ready[/] {doc.get('ready')}  "
        f"[bold]dry-run[/] {doc.get('dryRun')}  [bold]bundle[/] "
        f"r{(doc.get('bundle') or {}).get('revision', 0)}  "
        f"[bold]heartbeat[/] {'connected' if hb.get('connected') else 'not connected'}"
        f" (last {hb.get('lastSent') or 'never'})"
    )
    if doc.get("detail"):
        console.print(f"[yellow]{doc['detail']}[/]")
    trust = doc.get("trust") or {}
    if trust.get("message"):
        console.print(f"[yellow]trusted keys: {trust['message']}[/]")
    for source in trust.get("sources") or []:
        if source.get("problem"):
            console.print(f"[yellow]  {source['problem']}[/]")
    gpus = Table(title="GPUs", title_justify="left")
    gpu_cols = ["#", "name", "UUID", "state", "MIG", "util %", "mem GiB", "power W", "temp C"]
    if wide:
        gpu_cols += ["SM MHz", "mem MHz", "energy J", "ECC corr/uncorr", "XID"]
    for col in gpu_cols:
        gpus.add_column(col)
    for g in doc.get("gpus", []):
        mig = ", ".join(f"{m['profile']}#{m['giId']}" for m in g["mig"]) or "off"
        cells = [
            str(g["index"]),
            _esc(g["name"]),
            g["uuid"],
            "ok" if g["ok"] else f"[red]{_esc(g['error'])}[/]",
            mig if g["migEnabled"] else "off",
            _num(g["utilizationPct"]),
            f"{_gib(g['memoryUsedBytes'])}/{_gib(g['memoryTotalBytes'])}",
            _num(g["powerWatts"]),
            _num(g["temperatureC"]),
        ]
        if wide:
            cells += [
                _num(g.get("smClockMHz")),
                _num(g.get("memoryClockMHz")),
                _num(g.get("energyJoules")),
                f"{_num(g.get('eccCorrected'))}/{_num(g.get('eccUncorrected'))}",
                ", ".join(str(x) for x in g.get("xidEvents") or []) or "-",
            ]
        gpus.add_row(*cells)
    console.print(gpus)
    procs = Table(title="Processes", title_justify="left")
    for col in ("pid", "GPU", "MIG", "mem GiB", "pod", "container", "tenant", "allocated"):
        procs.add_column(col)
    for g in doc.get("gpus", []):
        for p in g["processes"]:
            procs.add_row(
                str(p["pid"]),
                str(g["index"]),
                f"{p['profile']}#{p['giId']}" if p["giId"] is not None else "-",
                _gib(p["usedMemoryBytes"]),
                p["pod"] or "-",
                p["container"] or "-",
                p["tenant"] or f"[yellow]unattributed: {p['unattributed']}[/]",
                {True: "yes", False: "[red]no[/]", None: "?"}[p["allocated"]],
            )
    console.print(procs)
    tenants = Table(title="Tenants (usage / quota)", title_justify="left")
    tenant_cols = ["tenant", "GPUs", "mem GiB", "MIG", "power W", "GPU-s", "energy J"]
    if wide:
        tenant_cols += ["enforcement", "grace s", "allocated only"]
    for col in tenant_cols:
        tenants.add_column(col)
    for name, t in doc.get("tenants", {}).items():
        u, q = t["usage"], t["quota"] or {}
        mig = ", ".join(
            f"{k}:{v}/{(q.get('migInstances') or {}).get(k, '-')}"
            for k, v in u["migInstances"].items()
        )
        row = [
            _esc(name),
            f"{u['gpus']}/{q.get('gpus', '-') if q.get('gpus') is not None else '-'}",
            f"{_gib(u['gpuMemoryBytes'])}/{_gib(q.get('gpuMemoryBytes'))}",
            mig or "-",
            f"{u['powerWatts']:.0f}/{_num(q.get('powerWatts'))}",
            f"{t['gpuSeconds']:.1f}",
            f"{t['energyJoules']:.1f}",
        ]
        if wide:
            row += [
                str(q.get("enforcement") or "-"),
                _num(q.get("gracePeriodSeconds")),
                str(q.get("allocatedDevicesOnly", "-")),
            ]
        tenants.add_row(*row)
    console.print(tenants)
    if doc.get("violations"):
        vt = Table(title="Violations", title_justify="left")
        for col in ("tenant", "quota", "measured", "limit", "pods"):
            vt.add_column(col)
        for v in doc["violations"]:
            pods = ", ".join(v["pods"])
            if v["quota"] == "gpuMemoryBytes":
                measured, limit = f"{_gib(v['measured'])} GiB", f"{_gib(v['limit'])} GiB"
            else:
                measured, limit = f"{v['measured']:g}", f"{v['limit']:g}"
            vt.add_row(v["tenant"], v["quota"], measured, limit, pods)
        console.print(vt)
    if doc.get("actions"):
        at = Table(title="Actions", title_justify="left")
        for col in ("tenant", "quota", "action", "pod", "outcome"):
            at.add_column(col)
        for a in doc["actions"][-10:]:
            at.add_row(a["tenant"], a["quota"], a["enforcement"], a["pod"], a["outcome"])
        console.print(at)
    if doc.get("unattributed"):
        console.print(f"[yellow]{len(doc['unattributed'])} unattributed GPU process(es)[/]")


DEFAULT_URL = "http://127.0.0.1:9400"


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """A running agent's ``/status`` document."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=timeout) as resp:  # noqa: S310
        doc = json.loads(resp.read())
    if not isinstance(doc, dict):
        raise ValueError("status is not a JSON object")
    return doc


def status_command(ns: argparse.Namespace) -> int:
    """``palisade nodeagent status``: exit 0 when printed, 1 when the agent cannot be read."""
    from rich.console import Console

    from palisade.cli.output import dump

    if not str(ns.url).startswith(("http://", "https://")):
        print(f"palisade nodeagent status: --url must be http(s): {ns.url!r}", file=sys.stderr)
        return 2
    try:
        doc = fetch_status(ns.url)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"palisade nodeagent status: cannot read {ns.url}/status: {exc}", file=sys.stderr)
        return 1
    fmt = "json" if getattr(ns, "json", False) else ns.output
    if fmt in ("json", "yaml"):
        print(dump(doc, fmt))
    else:
        render(doc, Console(width=200), wide=fmt == "wide")
    return 0


def add_status_parser(sub: Any, default_url: str = DEFAULT_URL) -> argparse.ArgumentParser:
    """Mount ``status`` (with ``--url`` and ``-o``) on the ``nodeagent`` subcommands."""
    from palisade.cli.output import add_output_flag

    status = sub.add_parser("status", help="print a running agent's status")
    status.add_argument("--url", default=default_url, help="the agent's HTTP address")
    add_output_flag(status)
    status.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # = -o json
    status.set_defaults(func=status_command)
    return status  # type: ignore[no-any-return]
