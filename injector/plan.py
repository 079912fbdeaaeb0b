"""The injector's vocabulary, as data: names it adds, decisions, the injection plan.

Pure and import-free of the rest of the injector, so that ``model.py`` (decides),
``patch.py`` (emits JSON Patch) and ``provenance.py`` (recognizes what was
injected) all build on it without importing each other in a circle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from injector.overrides import Overrides
from injector.probes import ProbeRewrite

LABEL_INJECT = "palisade.dev/inject"
LABEL_TENANT = "palisade.dev/tenant"
LABEL_MCP_SERVER = "palisade.dev/mcp-server"
ANNOTATION_INJECT = "palisade.dev/inject"
ANNOTATION_STATUS = "palisade.dev/status"
ANNOTATION_PORT = "palisade.dev/port"
ANNOTATION_CONTAINER = "palisade.dev/mcp-container"
ANNOTATION_UPSTREAM_PORT = "palisade.dev/upstream-port"
ANNOTATION_SIDECAR_PORT = "palisade.dev/sidecar-port"

INJECT_VALUES = ("enabled", "required")
STATUS_VERSION = 1

VOLUME_SOCKET = "palisade-socket"
VOLUME_BUNDLES = "palisade-bundle-cache"
VOLUME_AUDIT = "palisade-audit"
#: The sidecar's own view of the API server (token + CA): a projected volume.
VOLUME_KUBE_API = "palisade-kube-api"
#: iptables-legacy's lock directory for the packet filter (an emptyDir at /run).
VOLUME_INIT_RUN = "palisade-init-run"
#: Without a distributor, the bundle ConfigMap (``--sidecar-bundle-configmap``).
VOLUME_BUNDLE_SOURCE = "palisade-bundle"
#: The Secret key of ``palisade.dev/upstream-credential-secret``, for the sidecar only.
VOLUME_UPSTREAM_CREDENTIAL = "palisade-upstream-credential"
SOCKET_DIR = "/var/run/palisade"
BUNDLE_DIR = "/var/lib/palisade/bundles"
AUDIT_DIR = "/var/lib/palisade/audit"
SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path


@dataclass(frozen=True)
class Skip:
    """Leave the pod alone. ``status`` set: record it in the status annotation."""

    reason: str
    warnings: tuple[str, ...] = ()
    status: str | None = None


@dataclass(frozen=True)
class Refuse:
    """Refuse the pod with a message a person can act on."""

    message: str


@dataclass(frozen=True)
class PortRef:
    """Index of a container and of one of its ports."""

    container: int
    port: int


@dataclass(frozen=True)
class Plan:
    """Everything the patch builder needs; indices refer to the pod as received."""

    pod_label: str
    namespace: str
    server_name: str
    tenant: str
    native: bool
    sidecar_port: int
    upstream_port: int
    port_name: str
    app_index: int
    takeover: PortRef | None
    port_rewrites: tuple[tuple[str, int], ...]
    app_has_volume_mounts: bool
    app_needs_socket_mount: bool
    token_mount: Mapping[str, Any] | None
    has_annotations: bool
    has_volumes: bool
    has_init_containers: bool
    status: str
    warnings: tuple[str, ...] = field(default=())
    audience: str = ""
    """The token audience the sidecar accepts (per server; see docs/identity.md)."""
    firewall_ports: tuple[int, ...] = ()
    """Ports the ``palisade-init`` packet filter protects; empty: no init container."""
    probe_rewrites: tuple[ProbeRewrite, ...] = ()
    """MCP container probes and hooks rerouted through the sidecar."""
    guaranteed: bool = False
    """The pod is in the Guaranteed QoS class: what is injected gets requests ==
    limits, so that it stays there."""
    termination_grace_s: int | None = None
    """The pod's ``terminationGracePeriodSeconds`` as received (None: not set)."""
    upstream_credential: str = ""
    """``palisade.dev/upstream-credential`` (``kube-token-request``), or "" for none."""
    overrides: Overrides = field(default_factory=Overrides)
    """What the pod's other annotations change in its sidecar (injector/overrides.py)."""


Decision = Plan | Skip | Refuse


def status_value(state: str, **fields: object) -> str:
    """The ``palisade.dev/status`` annotation: compact JSON, stable key order."""
    doc: dict[str, object] = {"state": state, "version": STATUS_VERSION, **fields}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def status_fields(annotations: Mapping[str, Any]) -> dict[str, Any] | None:
    """The status annotation as a dict; None when absent or not a JSON object."""
    raw = annotations.get(ANNOTATION_STATUS)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def injected_status(
    *,
    container: str,
    native: bool,
    port: int,
    port_name: str,
    upstream: int,
    audience: str,
    firewall_state: str,
    app: str,
) -> str:
    """The status annotation of an injected pod (also what a recheck expects to find)."""
    return status_value(
        "injected",
        app=app,
        container=container,
        mode="native" if native else "container",
        port=port,
        portName=port_name,
        upstream=upstream,
        audience=audience,
        podFirewall=firewall_state,
    )
