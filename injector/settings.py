"""The injector's settings: grouped frozen dataclasses, one docstring per field.

``main.py`` is the only place that reads flags and the environment into these;
everything else receives them. Defaults here are the documented defaults of
docs/injector.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NativeMode = Literal["auto", "always", "never"]
TLSMode = Literal["self-signed", "mounted"]
#: How injected sidecars verify callers' tokens: the cluster's OIDC keys (issuer
#: discovered from the API server), Kubernetes TokenReview, or only what
#: ``--sidecar-extra-arg`` says.
IdentityMode = Literal["cluster-oidc", "token-review", "none"]

#: The default per-server token audience (``{namespace}``, ``{server}`` filled in).
DEFAULT_AUDIENCE_TEMPLATE = "palisade.dev/mcp/{namespace}/{server}"

#: Namespaces never injected, whatever their labels say.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class SidecarSettings:
    """What the injected sidecar container looks like."""

    image: str = "palisade:0.1.0"
    """Image of the sidecar; its entrypoint is the ``palisade`` console script."""

    pull_policy: str = "IfNotPresent"
    """imagePullPolicy of the injected container."""

    container_name: str = "palisade-sidecar"
    """Name of the injected container (also the idempotency name check)."""

    port: int = 9400
    """Port the sidecar listens on; moved up when the pod already declares it."""

    port_name: str = "mcp"
    """The MCP container's named port the sidecar takes over (pods may override it
    with the annotation ``palisade.dev/port``)."""

    default_upstream_port: int = 8080
    """Upstream port assumed when the pod declares no port and no annotation."""

    distributor: str | None = None
    """Distributor address given to the sidecar (env PALISADE_DISTRIBUTOR); None:
    the sidecar runs on its bundle cache and embedded defaults."""

    trusted_keys: tuple[str, ...] = ()
    """Canonical PEM Ed25519 public keys that sign bundles (injector/trust.py); given
    to the sidecar as ``PALISADE_TRUSTED_KEY`` when a distributor is set, which
    then requires at least one (``palisade sidecar --distributor`` needs them)."""

    distributor_ca: str = ""
    """PEM CA certificate(s) the sidecar verifies the distributor's TLS certificate
    with, given as ``PALISADE_DISTRIBUTOR_CA`` (inline) when a distributor is set;
    empty: the sidecar connects without TLS."""

    bundle_configmap: str | None = None
    """Without a distributor: a ConfigMap, in each injected pod's own namespace,
    holding the signed bundle (``*.signed``/``*.pb``/``*.bundle``); mounted read-only
    at ``/etc/palisade/bundle`` and watched (``--bundle``), verified with
    ``trusted_keys``. None: the sidecar has no bundle and denies every call."""

    cpu_request: str = "50m"
    """Sidecar CPU request."""

    memory_request: str = "64Mi"
    """Sidecar memory request."""

    cpu_limit: str = "1"
    """Sidecar CPU limit."""

    memory_limit: str = "256Mi"
    """Sidecar memory limit."""

    run_as_user: int = 65532
    """UID (and GID) the sidecar runs as (non-root)."""

    extra_args: tuple[str, ...] = ()
    """More arguments appended to ``palisade sidecar ...``."""

    identity: IdentityMode = "cluster-oidc"
    """cluster-oidc: ServiceAccount tokens verified with the cluster's OIDC keys, the
    issuer discovered from the API server (no RBAC beyond the default); token-review:
    the TokenReview API (the pod's ServiceAccount then needs system:auth-delegator);
    none: identity only from ``extra_args``."""

    audience_template: str = DEFAULT_AUDIENCE_TEMPLATE
    """The audience tokens must carry, per server: ``{namespace}`` and ``{server}``
    (the ``palisade.dev/mcp-server`` label) are filled in; a pod may override it
    with the annotation ``palisade.dev/audience``."""

    pod_firewall: bool = True
    """Add the ``palisade-init`` init container whose packet filter refuses
    connections to the MCP container's port from outside the pod."""

    init_container_name: str = "palisade-init"
    """Name of the injected packet-filter init container."""


@dataclass(frozen=True)
class InjectionSettings:
    """Which pods get the sidecar, and how."""

    own_namespace: str = "palisade"
    """The injector's own namespace, never injected."""

    native_sidecar: NativeMode = "auto"
    """auto: a native sidecar when the API server supports it; always; never."""

    cluster_supports_native: bool = False
    """Filled at start-up from the API server version (>= 1.29); used in auto mode."""

    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    """The injected container."""

    trusted_keys_problem: str = ""
    """Why the trusted bundle keys are missing (the keys ConfigMap is absent or holds
    no usable key), filled per review from the key source; "" when nothing is wrong."""

    @property
    def native(self) -> bool:
        """Whether the sidecar goes in as an init container with restartPolicy Always."""
        if self.native_sidecar == "always":
            return True
        if self.native_sidecar == "never":
            return False
        return self.cluster_supports_native


@dataclass(frozen=True)
class TLSSettings:
    """Where the serving certificate comes from and who is told about its CA."""

    mode: TLSMode = "self-signed"
    """self-signed: own CA, shared through a Secret, caBundle kept; mounted: files."""

    directory: str = "/var/run/palisade-injector/tls"
    """tls.crt / tls.key (and ca.crt) are read from (mounted) or written to here."""

    secret_name: str = "palisade-injector-tls"  # noqa: S105 - a name, not a secret
    """Secret in the own namespace holding the shared CA and certificate."""

    service_name: str = "palisade-injector"
    """The webhook's Service; its DNS names go into the certificate."""

    webhook_config: str = "palisade-injector"
    """MutatingWebhookConfiguration whose caBundle the injector keeps."""

    extra_sans: tuple[str, ...] = ()
    """More DNS names or IP addresses for the serving certificate."""

    cert_validity_days: int = 90
    """Lifetime of the serving certificate."""

    ca_validity_days: int = 3650
    """Lifetime of the CA."""

    rotate_before_days: int = 30
    """A certificate with less than this left is replaced."""

    resync_seconds: float = 60.0
    """How often caBundle and certificate expiry are rechecked besides the watch."""


@dataclass(frozen=True)
class KeySourceSettings:
    """Where the sidecars' trusted bundle keys come from, besides the flags."""

    configmap: str | None = None
    """A ConfigMap in the injector's own namespace holding the PEM public key(s)
    (the distributor publishes its key there at first start); watched, so pods
    created after the key appears get it. None: only ``--sidecar-trusted-key``."""

    key: str = "keys.pem"
    """The ConfigMap's data key holding the PEM text."""

    min_refresh_seconds: float = 1.0
    """While no key is known, a review may read the ConfigMap directly (the watch
    may lag), at most this often."""


@dataclass(frozen=True)
class ServerSettings:
    """The HTTPS listener."""

    host: str = "0.0.0.0"  # noqa: S104 - a webhook must be reachable from the API server
    """Listen address."""

    port: int = 8443
    """Listen port."""

    max_body_bytes: int = 8 * 2**20
    """Largest AdmissionReview accepted (objects are at most ~1.5 MiB in etcd)."""

    namespace_cache_seconds: float = 5.0
    """How long namespace labels are cached."""

    shutdown_seconds: float = 10.0
    """Grace period for in-flight reviews on SIGTERM."""


@dataclass(frozen=True)
class Settings:
    """Everything the injector needs, in one object."""

    server: ServerSettings = field(default_factory=ServerSettings)
    injection: InjectionSettings = field(default_factory=InjectionSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    keys: KeySourceSettings = field(default_factory=KeySourceSettings)
    kubeconfig: str | None = None
    """Out-of-cluster kubeconfig; None: in-cluster configuration."""
