"""``palisade check-server``: serve ``palisade.v1.PolicyService/Check`` on a Unix socket.

  palisade check-server --bundle FILE --socket PATH [--tcp 127.0.0.1:PORT]
      --audit-file F --audit-key KEY [--metrics-port N] [--fsync interval]

A bundle that cannot be loaded does not stop the server: it starts and
denies every call (rule ``no-bundle``, the load error as reason), audited,
because an unreachable policy point would be worse for callers that fail
open. SIGHUP reloads the bundle; a bad new bundle leaves the last good one
active and logs why. SIGTERM/SIGINT: health turns NOT_SERVING, in-flight
calls get ``--grace`` seconds, the audit log is fsynced and closed. An audit
key that cannot be read is fatal (exit 2): nothing is decided unaudited.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from palisade.audit import AuditError, AuditKeyError, AuditWriter, load_signer
from palisade.policy.guard import Guard
from palisade.runtime.lifecycle import run_daemon
from palisade.runtime.logs import setup_logging
from palisade.runtime.metrics import DecisionMetrics, serve_metrics
from palisade.service import EngineHolder, PolicyServicer, ServerSettings, start_server
from palisade.service.policy_source import PolicyLoadError, load_policy
from palisade.service.server import ServerError, stop_server

log = logging.getLogger("palisade.check_server")


class _Reloader:
    """Loads the bundle file into one guard; each successful load gets the next revision."""

    def __init__(self, holder: EngineHolder, bundle: str, revision: int) -> None:
        self.holder = holder
        self.bundle = bundle
        self.revision = revision
        self.guard = Guard()

    def load(self) -> None:
        try:
            policy = load_policy(self.bundle, revision=self.revision, guard=self.guard)
        except PolicyLoadError as exc:
            if self.holder.get().engine is not None:
                log.error(
                    "bundle reload failed; keeping the last good bundle", extra={"error": str(exc)}
                )
            else:
                self.holder.swap(None, reason=f"{exc}; every call is denied")
                log.error("no usable bundle; denying every call", extra={"error": str(exc)})
            return
        self.holder.swap(policy.engine, secret_names=policy.secret_names)
        log.info(
            "bundle active",
            extra={"bundle": policy.name, "file": self.bundle, "revision": policy.revision},
        )
        self.revision += 1


async def _serve(ns: argparse.Namespace, signer_path: str, stop: asyncio.Event) -> None:
    signer = load_signer(Path(signer_path))
    holder = EngineHolder()
    reloader = _Reloader(holder, ns.bundle, ns.revision)
    reloader.load()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reloader.load)
    metrics = DecisionMetrics()
    if ns.metrics_port:
        serve_metrics(ns.metrics_port)
    writer = AuditWriter(
        ns.audit_file,
        signer,
        source=ns.source,
        max_bytes=ns.audit_max_bytes,
        fsync=ns.fsync,
        sign_each=ns.audit_sign_each,
    )
    await writer.start()
    try:
        servicer = PolicyServicer(holder, writer, metrics)
        settings = ServerSettings(socket_path=ns.socket or "", tcp=ns.tcp or "")
        server, health, port = await start_server(servicer, settings)
        log.info(
            "check server listening",
            extra={"socket": ns.socket, "tcp_port": port, "audit_file": ns.audit_file},
        )
        await stop.wait()
        await stop_server(server, health, ns.grace)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await writer.aclose()
        log.info("check server stopped", extra={"audit_seq": writer.head[0]})


def _run(ns: argparse.Namespace) -> int:
    setup_logging(ns.log_level)
    if not ns.socket and not ns.tcp:
        print("palisade check-server: give --socket PATH and/or --tcp", file=sys.stderr)
        return 2
    try:
        load_signer(Path(ns.audit_key))  # fail before binding anything
    except AuditKeyError as exc:
        print(f"palisade check-server: {exc}", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> None:
        await _serve(ns, ns.audit_key, stop)

    try:
        return run_daemon(main, grace_s=ns.grace + 5)
    except (AuditError, ServerError) as exc:
        print(f"palisade check-server: {exc}", file=sys.stderr)
        return 2


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="policy bundle file or directory")
    parser.add_argument(
        "--revision", type=int, default=1, help="revision of the first load; +1 on each reload"
    )
    parser.add_argument("--socket", default="", help="Unix socket path to listen on")
    parser.add_argument("--tcp", default="", help="optional loopback address, 127.0.0.1:PORT")
    parser.add_argument("--audit-file", required=True, help="audit log (JSON Lines)")
    parser.add_argument("--audit-key", required=True, help="Ed25519 private key (PKCS#8 PEM)")
    parser.add_argument(
        "--audit-max-bytes", type=int, default=64 * 2**20, help="rotate the audit file at this size"
    )
    parser.add_argument(
        "--fsync",
        choices=("always", "interval", "never"),
        default="interval",
        help="audit durability (see docs/audit.md)",
    )
    parser.add_argument(
        "--audit-sign-each",
        action="store_true",
        help="sign every audit record, not only the last of each group commit",
    )
    parser.add_argument("--source", default="check-server", help="audit record source name")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds for in-flight calls")
    parser.add_argument("--log-level", default="info")
    parser.set_defaults(func=_run)
