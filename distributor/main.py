"""``palisade distributor``: flags and environment into settings, real backends, lifecycle.

The only place of this daemon that reads the environment
(``PALISADE_ADMIN_TOKEN`` as an alternative to ``--admin-token-file``,
``PALISADE_AUDIT_STORE`` as an alternative to ``--audit-store``, ``POD_NAMESPACE``
as the default of ``--key-namespace``).

Signing keys come from files (``--signing-key``) or from a Secret
(``--signing-key-secret``: generated and written there when it holds none,
distributor/signing_bootstrap.py); with ``--trust-configmap`` their public halves
are published for the injector and the node agents. Both need the Kubernetes API,
as does ``--crd``: one client serves all three.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from distributor.approvers import (
    Approvers,
    DevApprovers,
    KubernetesApprovers,
    KubernetesAsyncioReviews,
)
from distributor.replay_gate import GateMode, GateSettings
from distributor.server import Distributor, Settings, Source
from distributor.signing_keys import SigningKeyError
from distributor.sources import FileSource
from distributor.store import StoreError
from distributor.subscriber_auth import (
    DEFAULT_AUDIENCE,
    Authenticator,
    KubernetesAsyncioApi,
    TokenReviewAuthenticator,
)
from palisade.bundle import BundleError, load_private_key
from palisade.distribution.lkg import atomic_write

log = logging.getLogger("distributor")


def register(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--policy-dir", type=Path, help="directory of PolicyBundle YAML files")
    src.add_argument("--crd", action="store_true", help="watch PolicyBundle custom resources")
    parser.add_argument("--namespace", default="", help="CRD mode: one namespace (default all)")
    parser.add_argument("--kubeconfig", default="", help="CRD mode: kubeconfig (else in-cluster)")
    parser.add_argument(
        "--store",
        type=Path,
        default=Path("distributor.db"),
        help="SQLite store shared by the replicas",
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        action="append",
        default=[],
        help="Ed25519 private key (PEM); repeat to sign with several",
    )
    parser.add_argument(
        "--signing-key-secret",
        default="",
        metavar="NAME",
        help="instead of --signing-key: a Secret in --key-namespace holding the key(s) (*.pem);"
        " when it holds none, a key is generated and written there (get/update on it)",
    )
    parser.add_argument(
        "--trust-configmap",
        default="",
        metavar="NAME",
        help="publish the signing keys' public halves (PEM) in this ConfigMap of"
        " --key-namespace, for the injector and the node agents (get/update on it)",
    )
    parser.add_argument("--trust-configmap-key", default="keys.pem", help="its data key")
    parser.add_argument(
        "--key-namespace",
        default="",
        help="namespace of --signing-key-secret and --trust-configmap (default: env"
        " POD_NAMESPACE, else the pod's own namespace)",
    )
    parser.add_argument(
        "--key-check-interval",
        type=float,
        default=60.0,
        help="seconds between re-checks of the Secret and the ConfigMap",
    )
    parser.add_argument("--grpc-listen", default="0.0.0.0:8443")
    parser.add_argument("--http-listen", default="0.0.0.0:8080")
    parser.add_argument("--replica-id", default=socket.gethostname())
    parser.add_argument("--debounce", type=float, default=0.2, help="seconds")
    parser.add_argument("--poll", type=float, default=0.5, help="store poll, seconds")
    parser.add_argument("--heartbeat-grace", type=float, default=40.0, help="seconds")
    parser.add_argument("--gone-after", type=float, default=300.0, help="seconds")
    parser.add_argument("--approval-window", type=float, default=300.0, help="seconds")
    gate = parser.add_argument_group(
        "replay gate", "replay recent calls against every changed candidate before publishing it"
    )
    gate.add_argument(
        "--replay-gate",
        choices=[m.value for m in GateMode],
        default=os.environ.get("PALISADE_REPLAY_GATE", GateMode.FLAG.value),
        help="flag (default): publish and warn; refuse: do not publish; off: do not replay"
        " (env PALISADE_REPLAY_GATE)",
    )
    gate.add_argument(
        "--replay-threshold",
        type=_fraction,
        default=GateSettings.threshold,
        help="the fraction of recently allowed calls a candidate may stop allowing (default 0.05)",
    )
    gate.add_argument(
        "--replay-window",
        type=float,
        default=GateSettings.window_s,
        help="seconds of recorded calls replayed (default 86400)",
    )
    gate.add_argument(
        "--replay-max-records",
        type=int,
        default=GateSettings.max_records,
        help="at most this many of them, the newest (default 20000)",
    )
    parser.add_argument("--admin-token-file", type=Path, help="bearer token for the HTTP API")
    parser.add_argument(
        "--admin-token-secret",
        default="",
        metavar="NAME",
        help="the HTTP API's bearer token from this Secret (key token) in the key namespace;"
        " generated and written there when it holds none (what the chart does)",
    )
    parser.add_argument(
        "--ready-file", type=Path, help="write {grpc_port, http_port} here once serving"
    )
    parser.add_argument("--tls-cert", type=Path, help="serve gRPC over TLS: certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    parser.add_argument("--tls-client-ca", type=Path, help="require client certificates (mTLS)")
    parser.add_argument(
        "--bind-identity",
        action="store_true",
        help="with mTLS: a client's Hello id must be a name (CN/SAN) in its certificate",
    )
    parser.add_argument(
        "--audit-forward",
        default="",
        metavar="FILE",
        help="append newly stored audit records as JSON lines (- for stdout)",
    )
    parser.add_argument(
        "--audit-store",
        default="",
        metavar="URL",
        help="postgresql://... : keep audit records in PostgreSQL (default: the --store file;"
        " env PALISADE_AUDIT_STORE)",
    )
    parser.add_argument(
        "--subscriber-auth",
        choices=("token-review",),
        default="",
        help="token-review: every subscriber sends its pod's projected ServiceAccount token;"
        " id and scope come from it (TokenReview + the pod), never from the Hello",
    )
    parser.add_argument(
        "--subscriber-audience",
        default=DEFAULT_AUDIENCE,
        help="audience the subscribers' tokens must carry",
    )
    parser.add_argument(
        "--node-agent-service-account",
        action="append",
        default=[],
        metavar="NS:NAME",
        help="ServiceAccount of the node agents (repeatable); other pods subscribe as sidecars",
    )
    parser.add_argument(
        "--insecure-subscribers",
        action="store_true",
        help="dev/local only: believe whatever a client's Hello says about who it is",
    )
    parser.add_argument(
        "--approver-audience",
        action="append",
        default=[],
        metavar="AUD",
        help="audience approvers' tokens must carry (repeatable; default: the API server's)",
    )
    parser.add_argument(
        "--insecure-approvers",
        action="store_true",
        help="dev/local only: believe the 'by' of an approval answer (behind the admin token"
        " when there is one) instead of verifying the person's token",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(func=_run)


def settings_from(args: argparse.Namespace) -> Settings:
    token = os.environ.get("PALISADE_ADMIN_TOKEN", "")
    # With --admin-token-secret, the file (the same Secret, mounted) may not be there yet.
    if args.admin_token_file and (args.admin_token_file.exists() or not args.admin_token_secret):
        token = args.admin_token_file.read_text().strip()
    return Settings(
        replica_id=args.replica_id,
        store_path=args.store,
        grpc_listen=args.grpc_listen,
        http_listen=args.http_listen,
        debounce_s=args.debounce,
        poll_s=args.poll,
        heartbeat_grace_s=args.heartbeat_grace,
        gone_after_s=args.gone_after,
        approval_window_s=args.approval_window,
        admin_token=token,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        audit_forward=args.audit_forward,
        bind_identity=args.bind_identity,
        audit_store=args.audit_store or os.environ.get("PALISADE_AUDIT_STORE", ""),
        replay_gate=GateSettings(
            mode=GateMode(args.replay_gate),
            threshold=args.replay_threshold,
            window_s=args.replay_window,
            max_records=args.replay_max_records,
        ),
    )


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a fraction), not {value}")
    return value


_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def key_namespace(args: argparse.Namespace) -> str:
    """Where the signing-key Secret and the trust ConfigMap live."""
    if args.key_namespace:
        return str(args.key_namespace)
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return _IN_CLUSTER_NAMESPACE.read_text().strip()
    return "default"


async def _api_client(args: argparse.Namespace) -> Any:
    from kubernetes_asyncio import client, config

    if args.kubeconfig:
        await config.load_kube_config(config_file=args.kubeconfig)
    else:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


async def _optional_api_client(args: argparse.Namespace) -> Any:
    """The Kubernetes API for approvers only: None (approvals refused) outside a cluster."""
    from kubernetes_asyncio.config import ConfigException

    try:
        return await _api_client(args)
    except (ConfigException, OSError) as exc:
        log.warning(
            "no Kubernetes API (%s): approval answers will be refused, as approvers cannot be"
            " authenticated; give --kubeconfig, run in a cluster, or on a laptop"
            " --insecure-approvers",
            exc,
        )
        return None


def approvers_from(args: argparse.Namespace, api_client: Any) -> Approvers | None:
    """Who may answer approvals (None: nobody; the replica refuses every answer)."""
    if args.insecure_approvers:
        log.warning(
            "INSECURE APPROVERS: approval answers name whoever their 'by' says; anyone holding"
            " the admin token (or anyone at all without one) can approve held calls as anybody."
            " For a laptop or tests only; in a cluster approvers send their own token"
            " (TokenReview + SubjectAccessReview), the default."
        )
        return DevApprovers()
    if api_client is None:
        return None
    log.info(
        "approvers authenticate with their own Kubernetes tokens (TokenReview) and need"
        " the approve/deny verbs on approvals.palisade.dev (SubjectAccessReview)",
        extra={"audiences": list(args.approver_audience)},
    )
    return KubernetesApprovers(
        KubernetesAsyncioReviews(api_client), audiences=args.approver_audience
    )


async def _until_stopped(stop: asyncio.Event, work: Any) -> Any:
    """``await work``, or None as soon as ``stop`` is set (the work is cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _serve(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api_client: Any = None
    if (
        args.crd
        or args.signing_key_secret
        or args.trust_configmap
        or args.subscriber_auth
        or args.admin_token_secret
    ):
        api_client = await _api_client(args)
    elif not args.insecure_approvers:
        api_client = await _optional_api_client(args)
    try:
        if args.admin_token_secret and not settings.admin_token:
            from distributor.admin_token import ensure_admin_token

            token = await _until_stopped(
                stop, ensure_admin_token(api_client, key_namespace(args), args.admin_token_secret)
            )
            if token is None:
                return
            settings = dataclasses.replace(settings, admin_token=token)
        await _serve_with(args, settings, stop, api_client)
    finally:
        if api_client is not None:
            await api_client.close()


async def _serve_with(
    args: argparse.Namespace, settings: Settings, stop: asyncio.Event, api_client: Any
) -> None:
    source: Source | None = None
    reporter: Any = None
    bootstrap: Any = None
    keys = [load_private_key(p) for p in args.signing_key]
    if args.signing_key_secret or args.trust_configmap:
        from distributor.signing_bootstrap import SigningBootstrap

        bootstrap = SigningBootstrap(
            api_client,
            key_namespace(args),
            secret=args.signing_key_secret or None,
            configmap=args.trust_configmap or None,
            configmap_key=args.trust_configmap_key,
            interval_s=args.key_check_interval,
        )
        if args.signing_key_secret:
            loaded = await _until_stopped(stop, bootstrap.load_keys())
            if loaded is None:
                return
            keys = list(loaded)
    if args.policy_dir:
        source = FileSource(args.policy_dir)
    elif args.crd:
        from distributor.crd import CrdStatusReporter
        from distributor.sources import CrdSource

        crd_source = CrdSource(api_client, namespace=args.namespace)
        reporter = CrdStatusReporter(crd_source)
        source = crd_source
    host = settings.http_listen.rpartition(":")[0].strip("[]")
    if not settings.admin_token and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "the HTTP API has no admin token: whoever reaches %s can approve held calls and "
            "roll back bundles; give --admin-token-file (the chart always does)",
            settings.http_listen,
        )
    authenticator: Authenticator | None = None
    if args.subscriber_auth == "token-review":
        authenticator = TokenReviewAuthenticator(
            KubernetesAsyncioApi(api_client),
            audience=args.subscriber_audience,
            node_agent_accounts=args.node_agent_service_account,
        )
        log.info(
            "subscribers authenticate with ServiceAccount tokens (TokenReview)",
            extra={
                "audience": args.subscriber_audience,
                "node_agent_accounts": list(args.node_agent_service_account),
            },
        )
    else:
        log.warning(
            "INSECURE SUBSCRIBERS: gRPC clients are not authenticated; whoever reaches %s can"
            " subscribe under any id, take over another client's stream and approval answers"
            " and ship audit records in its name. For a laptop or tests only; in a cluster"
            " run with --subscriber-auth token-review (the chart does).",
            settings.grpc_listen,
        )
    dist = Distributor(
        settings,
        keys,
        source,
        status_writer=reporter.write if reporter else None,
        authenticator=authenticator,
        approvers=approvers_from(args, api_client),
    )
    await dist.start()
    extras: list[asyncio.Task[None]] = []
    if reporter is not None:
        reporter.dist = dist
        extras.append(asyncio.create_task(reporter.run()))
    if bootstrap is not None:
        # Publishing never holds up serving: running sidecars already trust the keys.
        extras.append(asyncio.create_task(bootstrap.keep(keys)))
    if args.ready_file:
        atomic_write(
            args.ready_file,
            json.dumps({"grpc_port": dist.grpc_port, "http_port": dist.http_port}).encode(),
        )
    await stop.wait()
    for extra in extras:
        extra.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await extra
    try:
        await asyncio.wait_for(dist.stop(), 10)
    except TimeoutError:
        log.error("shutdown deadline passed")


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if not args.signing_key and not args.signing_key_secret:
        log.error("at least one --signing-key is required (or --signing-key-secret NAME)")
        return 2
    if args.signing_key and args.signing_key_secret:
        log.error("--signing-key and --signing-key-secret are alternatives; give one")
        return 2
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        log.error("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
        return 2
    audit_store = args.audit_store or os.environ.get("PALISADE_AUDIT_STORE", "")
    if audit_store and not audit_store.startswith(("postgresql://", "postgres://")):
        log.error("--audit-store must be a postgresql:// URL")
        return 2
    if args.subscriber_auth and args.insecure_subscribers:
        log.error("--subscriber-auth and --insecure-subscribers are alternatives; give one")
        return 2
    grpc_host = args.grpc_listen.rpartition(":")[0].strip("[]")
    if not args.subscriber_auth and not args.insecure_subscribers and not _loopback(grpc_host):
        log.error(
            "gRPC on %s without subscriber authentication: give --subscriber-auth token-review"
            " (or, for a laptop or tests, --insecure-subscribers)",
            args.grpc_listen,
        )
        return 2
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError, BundleError, StoreError, SigningKeyError) as exc:
        log.error("distributor failed: %s", exc)
        return 1
    return 0
