"""``palisade nodeagent``: ``run`` the GPU node agent; a running agent's ``status``;
``attribute PID`` (which pod is this host process?).

The only place that reads flags and the environment (``NODE_NAME`` from the
downward API, ``PALISADE_NODEAGENT_*`` for the chart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nodeagent.quota import DEFAULT_SYSTEM_NAMESPACES
from nodeagent.status import add_status_parser


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PALISADE_NODEAGENT_{name}", default)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    run = sub.add_parser("run", help="run the agent (DaemonSet entry point)")
    run.add_argument("--node", default=os.environ.get("NODE_NAME", socket.gethostname()))
    run.add_argument(
        "--pod-uid",
        default=os.environ.get("POD_UID", ""),
        help="this agent's own pod UID (downward API metadata.uid; env POD_UID)",
    )
    run.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:9400"), help="HOST:PORT")
    run.add_argument(
        "--backend",
        choices=["auto", "nvml", "none", "sim"],
        default=_env("BACKEND", "auto"),
        help="auto: NVML, else no-GPU mode; sim: a simulated node (--scenario)",
    )
    run.add_argument("--scenario", type=Path, help="simulated node YAML (examples/gpu-sim/)")
    run.add_argument("--interval", type=float, default=float(_env("INTERVAL", "1.0")))
    run.add_argument("--dry-run", action="store_true", default=_env("DRY_RUN", "") == "true")
    run.add_argument("--proc-root", type=Path, default=Path(_env("PROC_ROOT", "/proc")))
    run.add_argument(
        "--pod-resources-socket",
        type=Path,
        default=Path(_env("POD_RESOURCES_SOCKET", "/var/lib/kubelet/pod-resources/kubelet.sock")),
    )
    run.add_argument(
        "--kube", default=_env("KUBE", "auto"), help="auto (in-cluster), off, or a kubeconfig"
    )
    run.add_argument("--bundle", type=Path, help="local policy bundle YAML with gpuQuota")
    run.add_argument(
        "--distributor",
        action="append",
        default=[t for t in _env("DISTRIBUTORS", "").split(",") if t],
        help="distributor gRPC address host:port (repeatable)",
    )
    run.add_argument(
        "--distributor-token-file",
        type=Path,
        default=_env("DISTRIBUTOR_TOKEN_FILE", "") or None,
        help="bearer token for the distributor (a projected ServiceAccount token), re-read on"
        " every connect",
    )
    run.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        default=[],
        help="PEM file of public keys trusted to sign bundles (one or more), or a directory "
        "of *.pem (repeatable); re-read while running",
    )
    run.add_argument(
        "--trusted-key-poll",
        type=float,
        default=float(_env("TRUSTED_KEY_POLL", "5")),
        help="seconds between re-reads of the --trusted-key files (0: only at start)",
    )
    run.add_argument(
        "--state-dir", type=Path, default=Path(_env("STATE_DIR", "/var/lib/palisade-nodeagent"))
    )
    run.add_argument("--audit-key", type=Path, help="Ed25519 PEM key signing audit records")
    run.add_argument(
        "--heartbeat-interval",
        type=float,
        default=float(_env("HEARTBEAT_INTERVAL", "10")),
        help="seconds between heartbeats to the distributor",
    )
    run.add_argument(
        "--kill-grace",
        type=float,
        default=float(_env("KILL_GRACE", "10")),
        help="SIGTERM -> SIGKILL seconds",
    )
    run.add_argument(
        "--system-namespaces",
        default=_env("SYSTEM_NAMESPACES", ",".join(sorted(DEFAULT_SYSTEM_NAMESPACES))),
        help="comma-separated namespaces never acted on",
    )
    run.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    run.set_defaults(func=_run)

    add_status_parser(sub, default_url=_env("URL", "http://127.0.0.1:9400"))

    attr = sub.add_parser(
        "attribute",
        help="which pod is this host PID? (asks a running agent's /attribution)",
        description="Print the namespace, pod, container, tenant and pod UID of a host "
        "PID, as the node agent attributes it from /proc/PID/cgroup and its live pod list. "
        "Exit 0 when the PID was found (a pod's or a host process), 1 otherwise.",
    )
    attr.add_argument("pid", type=_pid_arg, help="host PID (as ps on the node shows it)")
    attr.add_argument("--url", default=_env("URL", "http://127.0.0.1:9400"))
    attr.add_argument("--json", action="store_true", help="print the raw /attribution JSON")
    attr.add_argument(
        "--local",
        action="store_true",
        help="read /proc here instead of asking an agent (pod UID and container id only)",
    )
    attr.add_argument("--proc-root", type=Path, default=Path(_env("PROC_ROOT", "/proc")))
    attr.set_defaults(func=_attribute)


def _run(ns: argparse.Namespace) -> int:
    from nodeagent.app import Options, serve

    logging.basicConfig(
        level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    host, _, port = ns.listen.rpartition(":")
    opts = Options(
        node=ns.node,
        listen_host=host or "0.0.0.0",  # noqa: S104
        listen_port=int(port),
        backend=ns.backend,
        scenario=ns.scenario,
        interval_s=ns.interval,
        dry_run=ns.dry_run,
        proc_root=ns.proc_root,
        pod_resources_socket=ns.pod_resources_socket,
        kube=ns.kube,
        bundle=ns.bundle,
        distributors=tuple(ns.distributor),
        distributor_token_file=ns.distributor_token_file,
        trusted_keys=tuple(ns.trusted_key),
        trusted_key_poll_s=ns.trusted_key_poll,
        state_dir=ns.state_dir,
        audit_key=ns.audit_key,
        kill_grace_s=ns.kill_grace,
        heartbeat_interval_s=ns.heartbeat_interval,
        system_namespaces=frozenset(s for s in ns.system_namespaces.split(",") if s),
        pod_uid=ns.pod_uid,
    )
    try:
        return asyncio.run(serve(opts))
    except Exception as exc:  # startup errors: one clear line, no traceback
        print(f"palisade nodeagent: {exc}", file=sys.stderr)
        return 1


def _pid_arg(raw: str) -> int:
    from nodeagent.server import BadPid, parse_pid

    try:
        return parse_pid([raw])
    except BadPid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def fetch_attribution(url: str, pid: int, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, body)`` of a running agent's ``/attribution?pid=N``."""
    target = f"{url.rstrip('/')}/attribution?pid={pid}"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = int(exc.code), exc.read()
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("attribution is not a JSON object")
    return status, doc


def describe_owner(doc: dict[str, Any]) -> str:
    """One line for an operator, from an ``/attribution`` document."""
    pid = doc.get("pid")
    if doc.get("kind") == "pod":
        container = doc.get("container") or f"(id {str(doc.get('containerID', ''))[:12]})"
        tenant = doc.get("tenant") or "none"
        line = (
            f"pid {pid}: pod {doc.get('namespace')}/{doc.get('pod')} container {container} "
            f"tenant {tenant} uid {doc.get('podUID')}"
        )
    elif doc.get("kind") in ("unknown-pod", "own-pod") and doc.get("podUID"):
        line = f"pid {pid}: pod uid {doc.get('podUID')} container id {doc.get('containerID')}"
    elif doc.get("kind") == "own-pod":
        line = f"pid {pid}: in this agent's own pod"
    else:
        line = f"pid {pid}: host process (cgroup {doc.get('cgroupPath') or '?'})"
    keys = ("note",) if doc.get("kind") == "host" else ("reason", "note")
    details = [str(doc[k]) for k in keys if doc.get(k)]
    return line + "".join(f"\n  {d}" for d in details)


def _attribute(ns: argparse.Namespace) -> int:
    pid: int = ns.pid
    if ns.local:
        from nodeagent.attribution import owner_of
        from nodeagent.cgroup import Namespace, ProcCgroupReader
        from nodeagent.pods import PodIndex

        reader = ProcCgroupReader(ns.proc_root)
        text = reader.read(pid)
        if text is None:
            print(f"palisade nodeagent attribute: no process {pid} here", file=sys.stderr)
            return 1
        owner = owner_of(pid, text, PodIndex(), Namespace.detect(ns.proc_root))
        doc = owner.to_json()
        if owner.kind == "unknown-pod":
            doc["reason"] = "no pod list here (--local): only the pod UID is known"
        status = 200
    else:
        try:
            status, doc = fetch_attribution(ns.url, pid)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            print(f"palisade nodeagent attribute: cannot ask {ns.url}: {exc}", file=sys.stderr)
            return 1
    if ns.json:
        print(json.dumps(doc, indent=2))
    elif status == 200:
        print(describe_owner(doc))
    else:
        print(f"palisade nodeagent attribute: {doc.get('error', status)}", file=sys.stderr)
    return 0 if status == 200 else 1
