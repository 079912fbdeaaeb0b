"""The sidecar's settings: grouped frozen dataclasses, one field one docstring.

Only :mod:`sidecar.main` fills these from flags and the environment; everything
else receives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a client (or the upstream) may make the proxy hold or wait for."""

    #: Largest request body accepted, in bytes (HTTP 413 beyond).
    max_body_bytes: int = 1 * 2**20
    #: Deepest JSON nesting accepted in a request body.
    max_json_depth: int = 64
    #: Largest single request header line (name + value), in bytes (HTTP 431/400 beyond).
    max_header_bytes: int = 16 * 2**10
    #: A stream (SSE) with no bytes for this long is closed, in seconds.
    idle_stream_timeout_s: float = 300.0
    #: After a client drops a resumable stream, how long the upstream keeps working
    #: for it (a ``Last-Event-ID`` resumption in time keeps it), in seconds.
    resume_grace_s: float = 30.0
    #: Longest wait for the upstream's response headers or a JSON body, in seconds.
    upstream_timeout_s: float = 60.0
    #: Largest single SSE event or JSON response the proxy inspects, in bytes.
    max_inspect_bytes: int = 16 * 2**20


@dataclass(frozen=True, slots=True)
class DistributorSettings:
    """How this sidecar joins the fleet (``--distributor``); see docs/sidecar-fleet.md."""

    #: Distributor gRPC addresses (``host:port``), tried in turn.
    targets: tuple[str, ...]
    #: Public keys trusted to sign pushed bundles: PEM files, directories of ``*.pem``,
    #: or inline PEM text.
    trusted_keys: tuple[str, ...]
    #: Where the last-known-good bundle and the audit spool live (``<state_dir>/distribution``).
    state_dir: Path
    #: Stable id of this client in the fleet (pod UID by default).
    client_id: str
    #: Pod, namespace, node and tenant this sidecar runs as (downward API in a pod).
    pod: str = ""
    namespace: str = ""
    node: str = ""
    tenant: str = ""
    #: Seconds between heartbeats.
    heartbeat_interval_s: float = 10.0
    #: How long a human's denial answers retries of the same call, in seconds.
    denial_window_s: float = 300.0
    #: At most this many bytes of audit records wait in the spool; the rest wait in
    #: the audit log itself until the spool drains (nothing is dropped).
    spool_max_bytes: int = 8 * 2**20
    #: TLS to the distributor: CA (PEM); None means plaintext (inside a mesh, tests).
    tls_ca_file: Path | None = None
    #: Client certificate and key for mTLS.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Expected name in the distributor's certificate when it differs from the host.
    tls_server_name: str = ""
    #: Bearer token for the distributor (the pod's projected ServiceAccount token with
    #: the distributor's audience), read again on every connect; None: none sent.
    token_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """Everything one sidecar process needs."""

    #: Base URL of the upstream MCP server, on 127.0.0.1 (e.g. ``http://127.0.0.1:8080``).
    upstream: str
    #: Registry name of the upstream server in the bundle (``spec.servers[].name``).
    server_name: str
    #: Host and port the proxy listens on.
    listen_host: str = "0.0.0.0"  # noqa: S104 - the pod's named port must be reachable
    listen_port: int = 9000
    #: Path of the Streamable HTTP endpoint (same path upstream and here).
    mcp_path: str = "/mcp"
    #: Legacy HTTP+SSE (2024-11-05) endpoints, proxied to the same paths upstream.
    sse_path: str = "/sse"
    #: Legacy message endpoints (Python SDK: ``/messages/``, TypeScript SDK: ``/message``).
    messages_paths: tuple[str, ...] = ("/messages/", "/messages", "/message")
    #: Bundle file or directory to watch (``None``: no bundle, every call denied).
    bundle_path: Path | None = None
    #: Where the last good bundle is kept.
    state_dir: Path | None = None
    #: How often the bundle path is polled, in seconds.
    bundle_poll_s: float = 2.0
    #: Unix socket for the local gRPC PolicyService/Check (``None``: not served).
    check_socket: Path | None = None
    #: Directory for the signed audit log (``None``: audit to the log only; refused in prod).
    audit_dir: Path | None = None
    #: Grace period for in-flight calls on SIGTERM, in seconds.
    shutdown_grace_s: float = 20.0
    #: Labels rules can match on (``--label env=prod``).
    labels: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    #: The distributor this sidecar subscribes to (``None``: bundles from ``bundle_path``).
    distributor: DistributorSettings | None = None
