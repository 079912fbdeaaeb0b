"""``palisade sidecar``: flags and environment in, a running proxy out.

The only module of the sidecar that reads flags or the environment. Every flag
has an environment variable (``PALISADE_<FLAG>``, dashes as underscores) used as
its default; the table is in docs/sidecar.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from palisade.audit import AuditWriter, Signer, load_signer
from palisade.bundle.canonical import to_document
from palisade.bundle.signing import TrustedKeys, load_public_key
from palisade.runtime.lifecycle import run_daemon
from palisade.runtime.logs import setup_logging
from sidecar.app import build_app
from sidecar.app_health import AppHealth, ProbeConfigError
from sidecar.app_health import parse as app_health_parse
from sidecar.audit import AuditSink, LogSink, WriterSink
from sidecar.core import ProxyCore
from sidecar.credentials import FileCredential
from sidecar.credentials.caller import CallerBinding
from sidecar.credentials.kube_token import (
    AccountLookup,
    BundleAccounts,
    KubeTokenCredential,
    TokenRequestSettings,
)
from sidecar.identity import DevAgent
from sidecar.identity.jwks import IssuerConfig
from sidecar.identity.mapping import IdentityMap
from sidecar.identity.principal import Authenticator
from sidecar.identity.stack import (
    IN_CLUSTER_API,
    SA_CA_FILE,
    SA_TOKEN_FILE,
    IdentitySettings,
    IdentityStack,
    TokenReviewSettings,
    discovered_cluster_issuer,
)
from sidecar.intake import BundleIntake
from sidecar.metrics import SidecarMetrics
from sidecar.policy import PolicyHolder, PolicySnapshot
from sidecar.quarantine import config as quarantine_config
from sidecar.sessions import SessionBook
from sidecar.settings import DistributorSettings, Limits, SidecarSettings
from sidecar.upstream import Upstream

_DEFAULT_LIMITS = Limits()
#: Seconds the audit spool is always given to reach the distributor at shutdown, on top of
#: what ``--shutdown-grace`` leaves after the in-flight calls (the pod's volumes may be
#: deleted with it). The injector keeps the pod's terminationGracePeriodSeconds above
#: the default grace plus this.
AUDIT_DRAIN_MIN_S = 5.0

if TYPE_CHECKING:
    from palisade.service import EngineHolder
    from sidecar import fleet
    from sidecar.credentials.vault import VaultCredential

log = logging.getLogger(__name__)


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get("PALISADE_" + name.upper().replace("-", "_"), default)


def _list_env(name: str) -> list[str]:
    raw = _env(name, "")
    return [x for x in str(raw).split(",") if x]


def register(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--listen", default=_env("listen", "0.0.0.0:9000"), help="host:port of the MCP proxy")
    a("--upstream", default=_env("upstream"), help="upstream MCP server base URL on 127.0.0.1")
    a("--server-name", default=_env("server-name"), help="registry name of the upstream server")
    a("--mcp-path", default=_env("mcp-path", "/mcp"), help="Streamable HTTP path")
    a("--bundle", default=_env("bundle"), help="bundle file or directory to watch")
    a("--bundle-poll", type=float, default=float(_env("bundle-poll", 2.0)), help="seconds")
    a("--state-dir", default=_env("state-dir"), help="where the last good bundle is kept")
    a(
        "--trusted-key",
        action="append",
        default=_list_env("trusted-key"),
        help="PEM public key trusted to sign bundles (repeat)",
    )
    a(
        "--allow-unsigned-bundles",
        action="store_true",
        default=_env("allow-unsigned-bundles", "") == "1",
        help="development only",
    )
    a("--socket", default=_env("socket"), help="Unix socket for gRPC PolicyService/Check")
    a("--audit-dir", default=_env("audit-dir"), help="directory of the signed audit log")
    a("--audit-key", default=_env("audit-key"), help="Ed25519 key signing audit records (PEM)")
    a(
        "--upstream-credential-file",
        default=_env("upstream-credential-file"),
        help="file (e.g. a mounted Secret key) holding the credential sent upstream",
    )
    a("--upstream-credential-header", default=_env("upstream-credential-header", "Authorization"))
    a("--upstream-credential-scheme", default=_env("upstream-credential-scheme", "Bearer"))
    # Per-agent TokenRequest tokens of each agent's own ServiceAccount (docs/credentials.md).
    a(
        "--upstream-credential",
        choices=["", "kube-token-request"],
        default=_env("upstream-credential", ""),
        help="kube-token-request: send each agent's own short-lived ServiceAccount token",
    )
    # (minted at --kube-api-server with --kube-token-file, the pod's own token)
    a("--upstream-token-expiration", type=int, default=int(_env("upstream-token-expiration", 600)))
    a(
        "--upstream-token-audience",
        action="append",
        default=_list_env("upstream-token-audience"),
        help="audience of the minted tokens (repeat; default: the API server's)",
    )
    # The upstream credential from Vault KV v2 instead (docs/credentials.md).
    a("--vault-addr", default=_env("vault-addr"), help="Vault/OpenBao URL: credential from KV v2")
    a("--vault-kv-mount", default=_env("vault-kv-mount", "secret"), help="KV v2 mount")
    a("--vault-secret-path", default=_env("vault-secret-path"), help="secret path in the mount")
    a("--vault-secret-field", default=_env("vault-secret-field", "token"))
    a("--vault-token-file", default=_env("vault-token-file"), help="auth: a Vault token file")
    a("--vault-role", default=_env("vault-role"), help="auth: Kubernetes auth role")
    a("--vault-auth-mount", default=_env("vault-auth-mount", "kubernetes"))
    a("--vault-sa-token-file", default=_env("vault-sa-token-file", SA_TOKEN_FILE))
    a("--vault-ca-file", default=_env("vault-ca-file"), help="CA bundle for Vault's TLS")
    a("--vault-namespace", default=_env("vault-namespace"))
    a("--vault-refresh", type=float, default=float(_env("vault-refresh", 30.0)), help="seconds")
    a(
        "--vault-max-stale",
        type=float,
        default=float(_env("vault-max-stale", 300.0)),
        help="seconds a cached credential is used while Vault cannot be read",
    )
    a("--label", action="append", default=_list_env("label"), help="k=v label for rules")
    a("--resource", default=_env("resource"), help="this server's OAuth resource URI (audience)")
    a(
        "--audience",
        action="append",
        default=_list_env("audience"),
        help="token audience accepted instead of --resource (repeat); in a pod the injector "
        "sets palisade.dev/mcp/<namespace>/<server>",
    )
    a("--issuer", action="append", default=_list_env("issuer"), help="trusted token issuer URL")
    a(
        "--cluster-issuer",
        default=_env("cluster-issuer"),
        help="the cluster's ServiceAccount token issuer (its iss), or 'discover' to read it "
        "from the API server (--kube-api-server) at run time",
    )
    a("--cluster-jwks-uri", default=_env("cluster-jwks-uri", ""), help="its JWKS URI")
    a("--token-review-api", default=_env("token-review-api"), help="API server for TokenReview")
    a(
        "--kube-api-server",
        default=_env("kube-api-server", IN_CLUSTER_API),
        help="the API server for --cluster-issuer discover and its keys",
    )
    a(
        "--kube-token-file",
        default=_env("kube-token-file", SA_TOKEN_FILE),
        help="this pod's ServiceAccount token, sent to the API server (discovery, keys, "
        "TokenReview)",
    )
    a("--kube-ca-file", default=_env("kube-ca-file", SA_CA_FILE), help="the API server's CA")
    a(
        "--app-probes",
        default=_env("app-probes", ""),
        help="JSON: the MCP container's probes the sidecar answers for at "
        "/palisade/app-health/<container>/<probe> (set by the injector)",
    )
    a("--required-scope", action="append", default=_list_env("required-scope"))
    a(
        "--dev-auth",
        action="store_true",
        default=_env("dev-auth", "") == "1",
        help="DEVELOPMENT: trust --dev-token mappings without verification",
    )
    a(
        "--dev-token",
        action="append",
        default=_list_env("dev-token"),
        help="TOKEN=AGENT[:TENANT[:ON_BEHALF_OF]] (with --dev-auth)",
    )
    a(
        "--max-body-bytes",
        type=int,
        default=int(_env("max-body-bytes", _DEFAULT_LIMITS.max_body_bytes)),
    )
    a(
        "--max-json-depth",
        type=int,
        default=int(_env("max-json-depth", _DEFAULT_LIMITS.max_json_depth)),
    )
    a(
        "--max-header-bytes",
        type=int,
        default=int(_env("max-header-bytes", _DEFAULT_LIMITS.max_header_bytes)),
    )
    a(
        "--idle-stream-timeout",
        type=float,
        default=float(_env("idle-stream-timeout", _DEFAULT_LIMITS.idle_stream_timeout_s)),
    )
    a(
        "--upstream-timeout",
        type=float,
        default=float(_env("upstream-timeout", _DEFAULT_LIMITS.upstream_timeout_s)),
    )
    a(
        "--resume-grace",
        type=float,
        default=float(_env("resume-grace", _DEFAULT_LIMITS.resume_grace_s)),
        help="seconds upstream work survives a dropped resumable stream",
    )
    a("--shutdown-grace", type=float, default=float(_env("shutdown-grace", 20.0)))
    # The fleet (docs/sidecar-fleet.md): bundles pushed by the distributor, audit shipped to it.
    a(
        "--distributor",
        action="append",
        default=_list_env("distributor"),
        help="distributor gRPC host:port (repeat, or comma-separated in PALISADE_DISTRIBUTOR)",
    )
    a(
        "--distributor-ca",
        default=_env("distributor-ca"),
        help="CA (a PEM file, or PEM text as the injector sets it): TLS to the distributor",
    )
    a("--distributor-cert", default=_env("distributor-cert"), help="client certificate (mTLS)")
    a("--distributor-key", default=_env("distributor-key"), help="client key (mTLS)")
    a("--distributor-server-name", default=_env("distributor-server-name", ""))
    a(
        "--distributor-token-file",
        default=_env("distributor-token-file"),
        help="bearer token for the distributor (the projected ServiceAccount token the"
        " injector mounts), re-read on every connect",
    )
    a("--client-id", default=_env("client-id"), help="id in the fleet (default: the pod UID)")
    a("--pod-name", default=_env("pod-name", ""), help="this pod (downward API)")
    a("--pod-namespace", default=_env("pod-namespace", ""), help="its namespace")
    a("--pod-uid", default=_env("pod-uid", ""), help="its UID")
    a("--node-name", default=_env("node-name", ""), help="its node")
    a("--tenant", default=_env("tenant", ""), help="its tenant")
    a("--heartbeat-interval", type=float, default=float(_env("heartbeat-interval", 10.0)))
    a(
        "--approval-denial-window",
        type=float,
        default=float(_env("approval-denial-window", 300.0)),
        help="seconds a human's denial answers retries of the same call",
    )
    a("--log-level", default=_env("log-level", "info"))
    quarantine_config.register(parser, _env)
    parser.set_defaults(func=run)


def settings_from(ns: argparse.Namespace) -> SidecarSettings:
    if not ns.upstream or not ns.server_name:
        raise SystemExit("palisade sidecar: --upstream and --server-name are required")
    host, _, port = str(ns.listen).rpartition(":")
    labels = dict(x.split("=", 1) for x in ns.label if "=" in x)
    distributor = distributor_from(ns, int(port))
    return SidecarSettings(
        distributor=distributor,
        upstream=ns.upstream,
        server_name=ns.server_name,
        listen_host=host or "0.0.0.0",  # noqa: S104
        listen_port=int(port),
        mcp_path=ns.mcp_path,
        bundle_path=Path(ns.bundle) if ns.bundle else None,
        state_dir=Path(ns.state_dir) if ns.state_dir else None,
        bundle_poll_s=ns.bundle_poll,
        check_socket=Path(ns.socket) if ns.socket else None,
        audit_dir=Path(ns.audit_dir) if ns.audit_dir else None,
        shutdown_grace_s=ns.shutdown_grace,
        labels=labels,
        limits=Limits(
            max_body_bytes=ns.max_body_bytes,
            max_json_depth=ns.max_json_depth,
            max_header_bytes=ns.max_header_bytes,
            idle_stream_timeout_s=ns.idle_stream_timeout,
            upstream_timeout_s=ns.upstream_timeout,
            resume_grace_s=ns.resume_grace,
        ),
    )


def distributor_from(ns: argparse.Namespace, port: int) -> DistributorSettings | None:
    """The fleet settings, or None without ``--distributor``; contradictions stop here."""
    targets = tuple(t.strip() for spec in ns.distributor for t in spec.split(",") if t.strip())
    if not targets:
        return None
    if ns.bundle:
        raise SystemExit(
            "palisade sidecar: give --distributor or --bundle, not both "
            "(PALISADE_DISTRIBUTOR may come from the injector)"
        )
    if not ns.trusted_key:
        raise SystemExit("palisade sidecar: --distributor needs --trusted-key to verify bundles")
    if not ns.state_dir:
        raise SystemExit(
            "palisade sidecar: --distributor needs --state-dir (last good bundle, audit spool)"
        )
    from sidecar import fleet  # gRPC (about 9 MB resident) only in a fleet

    who = {"pod_uid": ns.pod_uid, "pod": ns.pod_name, "namespace": ns.pod_namespace}
    return DistributorSettings(
        targets=targets,
        trusted_keys=tuple(ns.trusted_key),
        state_dir=Path(ns.state_dir),
        client_id=ns.client_id or fleet.default_client_id(who, ns.server_name, port),
        pod=ns.pod_name,
        namespace=ns.pod_namespace,
        node=ns.node_name,
        tenant=ns.tenant,
        heartbeat_interval_s=ns.heartbeat_interval,
        denial_window_s=ns.approval_denial_window,
        tls_ca_file=_pem_file(ns.distributor_ca, Path(ns.state_dir), "distributor-ca.pem"),
        tls_cert_file=Path(ns.distributor_cert) if ns.distributor_cert else None,
        tls_key_file=Path(ns.distributor_key) if ns.distributor_key else None,
        tls_server_name=ns.distributor_server_name,
        token_file=Path(ns.distributor_token_file) if ns.distributor_token_file else None,
    )


def identity_from(ns: argparse.Namespace, s: SidecarSettings) -> IdentitySettings:
    resource = ns.resource or f"http://{s.listen_host}:{s.listen_port}{s.mcp_path}"
    dev: dict[str, DevAgent] = {}
    for spec in ns.dev_token:
        token, _, who = spec.partition("=")
        agent, _, rest = who.partition(":")
        tenant, _, obo = rest.partition(":")
        if not token or not agent:
            raise SystemExit(f"palisade sidecar: bad --dev-token {spec!r} (TOKEN=AGENT[:TENANT])")
        dev[token] = DevAgent(agent, tenant, obo)
    issuers = [IssuerConfig(issuer=i) for i in ns.issuer]
    api = str(ns.kube_api_server).rstrip("/")
    if ns.cluster_issuer == "discover":
        issuers.append(
            discovered_cluster_issuer(api, token_file=ns.kube_token_file, ca_file=ns.kube_ca_file)
        )
    elif ns.cluster_issuer:
        jwks_uri = ns.cluster_jwks_uri
        on_api = bool(jwks_uri) and (jwks_uri == api or jwks_uri.startswith(api + "/"))
        issuers.append(
            IssuerConfig(
                ns.cluster_issuer,
                jwks_uri=jwks_uri,
                cluster=True,
                # keys served by the API server: fetched with the pod's CA and token
                ca_file=ns.kube_ca_file if on_api else "",
                fetch_token_file=ns.kube_token_file if on_api else "",
            )
        )
    review = None
    if ns.token_review_api:
        review = TokenReviewSettings(
            ns.token_review_api, token_file=ns.kube_token_file, ca_file=ns.kube_ca_file
        )
    audiences = (*([ns.resource] if ns.resource else []), *ns.audience) if ns.audience else ()
    return IdentitySettings(
        resource=resource,
        audiences=audiences,
        issuers=tuple(issuers),
        token_review=review,
        required_scopes=tuple(ns.required_scope),
        dev_mode=bool(ns.dev_auth),
        dev_tokens=dev,
    )


def credentials_from(
    ns: argparse.Namespace, accounts: AccountLookup | None = None
) -> FileCredential | VaultCredential | KubeTokenCredential | None:
    """The upstream credential source the flags select (a file, Vault, per-agent
    ServiceAccount tokens, or none); ``accounts`` maps agents to their accounts."""
    chosen = [
        f
        for f, on in (
            ("--vault-addr", ns.vault_addr),
            ("--upstream-credential-file", ns.upstream_credential_file),
            ("--upstream-credential kube-token-request", ns.upstream_credential),
        )
        if on
    ]
    if len(chosen) > 1:
        raise SystemExit(f"palisade sidecar: give only one: {' or '.join(chosen)}")
    if ns.upstream_credential == "kube-token-request":
        try:
            settings = TokenRequestSettings(
                api_server=ns.kube_api_server or IN_CLUSTER_API,
                ca_file=ns.kube_ca_file or None,
                token_file=ns.kube_token_file,
                expiration_s=ns.upstream_token_expiration,
                audiences=tuple(ns.upstream_token_audience),
                header=ns.upstream_credential_header,
                scheme=ns.upstream_credential_scheme,
            )
        except ValueError as exc:
            raise SystemExit(f"palisade sidecar: bad --upstream-token-* settings: {exc}") from None
        return KubeTokenCredential(settings, accounts or (lambda _agent: None))
    if ns.upstream_credential_file:
        return FileCredential(
            ns.upstream_credential_file,
            header=ns.upstream_credential_header,
            scheme=ns.upstream_credential_scheme,
        )
    if not ns.vault_addr:
        return None
    # Imported only when Vault is configured: hvac and requests cost ~10 MB resident.
    from sidecar.credentials.vault import (
        KubernetesAuth,
        TokenFileAuth,
        VaultAuth,
        VaultCredential,
        VaultSettings,
    )

    if bool(ns.vault_role) == bool(ns.vault_token_file):
        raise SystemExit("palisade sidecar: --vault-addr needs --vault-role or --vault-token-file")
    auth: VaultAuth = (
        KubernetesAuth(ns.vault_role, mount=ns.vault_auth_mount, token_path=ns.vault_sa_token_file)
        if ns.vault_role
        else TokenFileAuth(ns.vault_token_file)
    )
    try:
        return VaultCredential(
            VaultSettings(
                addr=ns.vault_addr,
                secret_path=ns.vault_secret_path or "",
                field=ns.vault_secret_field,
                auth=auth,
                mount=ns.vault_kv_mount,
                header=ns.upstream_credential_header,
                scheme=ns.upstream_credential_scheme,
                ca_file=ns.vault_ca_file,
                namespace=ns.vault_namespace,
                refresh_interval_s=ns.vault_refresh,
                max_stale_s=ns.vault_max_stale,
            )
        )
    except ValueError as exc:
        raise SystemExit(f"palisade sidecar: bad Vault settings: {exc}") from None


def _sessions_store(s: SidecarSettings) -> Path | None:
    state = s.state_dir or (s.distributor.state_dir if s.distributor is not None else None)
    if state is None:
        return None
    state.mkdir(parents=True, exist_ok=True)
    return state / "sessions.json"


def _pem_file(spec: str | None, state_dir: Path, name: str) -> Path | None:
    """A PEM flag's file: ``spec`` itself, or, when it is inline PEM text (as the injector
    sets ``PALISADE_DISTRIBUTOR_CA``), that text written to ``state_dir/name``."""
    if not spec:
        return None
    if not spec.lstrip().startswith("-----BEGIN"):
        return Path(spec)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / name
    path.write_text(spec.strip() + "\n")
    return path


def _key_source(spec: str) -> str | bytes:
    """A --trusted-key value: inline PEM text (as the injector sets it) or a file."""
    return spec.strip().encode() + b"\n" if spec.lstrip().startswith("-----BEGIN") else spec


def _signer(ns: argparse.Namespace, audit_dir: Path) -> Signer:
    if ns.audit_key:
        return load_signer(Path(ns.audit_key))
    path = audit_dir / "audit-key.pem"
    if path.is_file():
        return load_signer(path)
    signer = Signer.generate()
    audit_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(signer.private_pem())
    path.chmod(0o600)
    (audit_dir / "audit-key.pub.pem").write_bytes(signer.public_pem())
    log.warning("generated a new audit signing key", extra={"path": str(path)})
    return signer


async def serve(ns: argparse.Namespace, stop: asyncio.Event) -> None:
    s = settings_from(ns)
    try:
        app_health = AppHealth(app_health_parse(ns.app_probes or ""))
    except ProbeConfigError as exc:
        raise SystemExit(f"palisade sidecar: {exc}") from None
    metrics = SidecarMetrics()
    policy = PolicyHolder()
    # gRPC (about 9 MB resident) is loaded only when it is used: a Check socket, a fleet
    engines: EngineHolder | None = None
    if s.check_socket is not None:
        from palisade.service import EngineHolder

        engines = EngineHolder()
    writer: AuditWriter | None = None
    sink: AuditSink = LogSink()
    d = s.distributor
    if d is not None:
        from sidecar import fleet
    trusted: TrustedKeys | None = None
    if d is not None:
        try:
            trusted = fleet.load_trusted(d.trusted_keys)
        except ValueError as exc:
            raise SystemExit(f"palisade sidecar: {exc}") from None
    if s.audit_dir is not None:
        writer_cls = AuditWriter if d is None else fleet.ShippingWriter
        writer = writer_cls(
            s.audit_dir / "audit.jsonl",
            _signer(ns, s.audit_dir),
            source=f"sidecar/{s.server_name}" if d is None else f"sidecar/{d.client_id}",
            # Group commit flushed at the next loop turn: a decided call waits for its
            # batch before it is forwarded, so a longer window (the check server's 64
            # turns) would hold the upstream idle while the batch fills.
            batch_turns=0,
            quiet_turns=1,
        )
        writer.open()
        await writer.start()
        sink = WriterSink(writer)
    else:
        log.warning("no --audit-dir: decisions are audited to the log only, unsigned")

    async with IdentityStack(identity_from(ns, s), IdentityMap()) as stack:

        def activate(snap: PolicySnapshot) -> None:
            engine: Any = snap.compiled
            stack.update_identities(
                IdentityMap.from_agents(to_document(engine.bundle)["spec"].get("agents", []))
            )
            policy.activate(snap)
            if engines is not None:
                engines.swap(
                    snap.engine, secret_names=lambda _srv, tool: snap.facts(tool).secret_arguments
                )
            metrics.bundle_revision.set(snap.revision)

        intake: BundleIntake | None = None
        link: fleet.SidecarFleet | None = None
        if d is not None and trusted is not None:
            intake = BundleIntake(
                None,
                server_name=s.server_name,
                activate=activate,
                trusted=trusted,
                state_dir=s.state_dir,
                on_error=lambda _e: metrics.bundle_errors.inc(),
            )
            link = fleet.SidecarFleet(
                d,
                server=s.server_name,
                trusted=trusted,
                intake=intake,
                writer=writer if isinstance(writer, fleet.ShippingWriter) else None,
                metrics=metrics,
            )
            if writer is None:
                log.warning("no --audit-dir: no audit records are shipped to the distributor")
            await link.start()
        elif s.bundle_path is not None:
            keys = (
                TrustedKeys([load_public_key(_key_source(k)) for k in ns.trusted_key])
                if ns.trusted_key
                else None
            )
            intake = BundleIntake(
                s.bundle_path,
                server_name=s.server_name,
                activate=activate,
                trusted=keys,
                allow_unsigned=ns.allow_unsigned_bundles,
                state_dir=s.state_dir,
                on_error=lambda _e: metrics.bundle_errors.inc(),
            )
            intake.start()
        else:
            log.error("no --bundle: every call is denied until one is given")
        assert stack.authenticator is not None
        outputs = quarantine_config.guard_from(ns)
        credentials = credentials_from(ns, BundleAccounts(policy))
        if credentials is not None and not isinstance(credentials, FileCredential):
            await credentials.start()  # never raises: calls fail closed until Vault answers
        authenticator: Authenticator = stack.authenticator
        if isinstance(credentials, KubeTokenCredential):
            # the per-agent source reads the caller each request binds (and the
            # audit names the identity the upstream acts as)
            authenticator = CallerBinding(authenticator, credentials.identity_of)
        core = ProxyCore(
            settings=s,
            policy=policy,
            authenticator=authenticator,
            audit=sink,
            upstream=Upstream(
                s.upstream,
                timeout_s=s.limits.upstream_timeout_s,
                credentials=credentials,
            ),
            metrics=metrics,
            outputs=outputs,
            approvals=link.approvals if link is not None else None,
            # session bindings outlive a restart (the sessions live on upstream)
            sessions=SessionBook(store=_sessions_store(s)),
        )
        runner = web.AppRunner(
            build_app(
                core,
                readiness=link.readiness if link is not None else None,
                app_health=app_health,
            ),
            handle_signals=False,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=s.shutdown_grace_s,
            max_line_size=s.limits.max_header_bytes,
            max_field_size=s.limits.max_header_bytes,
        )
        await runner.setup()
        site = web.TCPSite(runner, s.listen_host, s.listen_port, reuse_address=True)
        await site.start()
        grpc_server = None
        if engines is not None and writer is not None:
            from palisade.service import PolicyServicer, ServerSettings, start_server

            servicer = PolicyServicer(engines, writer, metrics.decisions)
            grpc_server = await start_server(
                servicer, ServerSettings(socket_path=str(s.check_socket))
            )
        elif s.check_socket is not None:
            log.error("--socket needs --audit-dir (every Check is audited); not serving gRPC")
        log.info(
            "sidecar ready",
            extra={
                "listen": f"{s.listen_host}:{s.listen_port}",
                "upstream": s.upstream,
                "server": s.server_name,
            },
        )
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), s.bundle_poll_s)
                if intake is not None and not stop.is_set():
                    intake.poll()
        finally:
            deadline = asyncio.get_running_loop().time() + s.shutdown_grace_s
            core.draining = True
            core.close_listening_streams()
            log.info(
                "shutting down: finishing in-flight calls", extra={"grace_s": s.shutdown_grace_s}
            )
            if grpc_server is not None:
                from palisade.service.server import stop_server

                await stop_server(grpc_server[0], grpc_server[1], min(5.0, s.shutdown_grace_s))
            await runner.cleanup()
            await core.outcomes_written()  # the last calls' outcomes reach the log
            if credentials is not None and not isinstance(credentials, FileCredential):
                await credentials.aclose()
            await outputs.close()
            if link is not None:
                left = deadline - asyncio.get_running_loop().time()
                await link.stop(drain_s=max(AUDIT_DRAIN_MIN_S, left))
            if writer is not None:
                await writer.aclose()


def run(ns: argparse.Namespace) -> int:
    setup_logging(ns.log_level)
    return run_daemon(
        lambda stop: serve(ns, stop), grace_s=ns.shutdown_grace + AUDIT_DRAIN_MIN_S + 2.0
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="palisade sidecar")
    register(parser)
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    raise SystemExit(main())
