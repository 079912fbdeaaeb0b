"""Per-pod choices besides the ports: token audience, packet filter, trusted keys (pure).

Called by injector/model.py once a pod is to be injected. Each function either
returns its choice or raises :class:`Unacceptable` with a message a person can
act on (the pod is refused with it).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from injector.settings import SidecarSettings

ANNOTATION_AUDIENCE = "palisade.dev/audience"
ANNOTATION_FIREWALL = "palisade.dev/pod-firewall"
ANNOTATION_PROTECT_PORTS = "palisade.dev/protect-ports"
ANNOTATION_UPSTREAM_CREDENTIAL = "palisade.dev/upstream-credential"
#: What the annotation may ask for (docs/credentials.md); absent: the chart's sidecar args.
UPSTREAM_CREDENTIALS = ("kube-token-request",)
#: The Pod Security admission level a namespace enforces.
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"

OFF_VALUES = ("false", "no", "off", "0", "disabled")
MAX_AUDIENCE = 256
TEMPLATE_FIELDS = frozenset({"namespace", "server"})


class Unacceptable(ValueError):
    """The pod asks for something that cannot be given; the message says what to do."""


def check_template(template: str) -> str:
    """An audience template with only ``{namespace}`` and ``{server}``; else ValueError."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"bad audience template {template!r}: {exc}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown or not template.strip():
        raise ValueError(
            f"bad audience template {template!r}: only {{namespace}} and {{server}} may be used"
        )
    valid_audience(template.format(namespace="ns", server="server"), "the audience template")
    return template


def valid_audience(value: str, where: str) -> str:
    if (
        not value
        or len(value) > MAX_AUDIENCE
        or not value.isprintable()
        or any(c.isspace() or c == "," for c in value)
    ):
        raise Unacceptable(
            f"{where} gives {value!r}, which is not a token audience "
            f"(1 to {MAX_AUDIENCE} printable characters, no spaces or commas)"
        )
    return value


def audience(template: str, namespace: str, server: str, annotations: Mapping[str, Any]) -> str:
    """The per-server token audience: the pod's annotation, else the template filled in.

    Namespaces are DNS labels and label values have no ``/``, so the default
    ``palisade.dev/mcp/<namespace>/<server>`` names exactly one server.
    """
    raw = annotations.get(ANNOTATION_AUDIENCE)
    if raw is None:
        return valid_audience(template.format(namespace=namespace, server=server), "the template")
    return valid_audience(str(raw).strip(), f"annotation {ANNOTATION_AUDIENCE}")


def upstream_credential(annotations: Mapping[str, Any]) -> str:
    """The per-server upstream credential the pod asks for ("" when it asks for none):
    ``kube-token-request`` gives the MCP server, for each call, a short-lived token of
    the calling agent's own ServiceAccount."""
    raw = annotations.get(ANNOTATION_UPSTREAM_CREDENTIAL)
    if raw is None:
        return ""
    value = str(raw).strip()
    if value not in UPSTREAM_CREDENTIALS:
        raise Unacceptable(
            f"annotation {ANNOTATION_UPSTREAM_CREDENTIAL} is {value!r}; the sidecar knows "
            f"{', '.join(UPSTREAM_CREDENTIALS)}"
        )
    return value


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def firewall(
    annotations: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    label: str,
    upstream: int,
    sidecar_port: int,
    enabled: bool,
) -> tuple[tuple[int, ...], str]:
    """The ports the pod's packet filter protects (() when off) and the state to record.

    States: ``enabled``; ``disabled`` (``--pod-firewall disabled``); ``opted-out`` (the
    pod's annotation, refused in a ``required`` namespace); ``pod-security-<level>``:
    the namespace enforces the baseline or restricted Pod Security Standard, which
    forbids the filter's NET_ADMIN and root, so the API server would refuse the pod;
    the namespace's owners chose that, so the pod gets the sidecar without the filter
    (the chart's NetworkPolicy is then the only layer around it).
    """
    required = namespace_labels.get("palisade.dev/inject") == "required"
    raw = annotations.get(ANNOTATION_FIREWALL)
    if str(raw or "").strip().lower() in OFF_VALUES:
        if required:
            raise Unacceptable(
                f"pod {label} opts out of the Palisade packet filter "
                f'({ANNOTATION_FIREWALL}: "{raw}") in a namespace labelled '
                "palisade.dev/inject=required, where nothing may reach the MCP server around "
                "the sidecar. Remove the annotation, or ask the platform team to set "
                "palisade.dev/inject=enabled."
            )
        return (), "opted-out"
    if not enabled:
        return (), "disabled"
    level = str(namespace_labels.get(POD_SECURITY_ENFORCE) or "").strip().lower()
    if level in ("baseline", "restricted"):
        return (), f"pod-security-{level}"
    ports = {upstream}
    extra = str(annotations.get(ANNOTATION_PROTECT_PORTS) or "")
    for item in (i.strip() for i in extra.split(",")):
        if not item:
            continue
        number = _port(item)
        if number is None:
            raise Unacceptable(
                f"pod {label}: annotation {ANNOTATION_PROTECT_PORTS}={extra!r} is not a "
                "comma-separated list of port numbers"
            )
        ports.add(number)
    if sidecar_port in ports:
        raise Unacceptable(
            f"pod {label}: annotation {ANNOTATION_PROTECT_PORTS} names the sidecar's own port "
            f"{sidecar_port}"
        )
    return tuple(sorted(ports)), "enabled"


def needs_trusted_keys(sidecar: SidecarSettings) -> bool:
    """Sidecars verify bundles (from a distributor or a ConfigMap), so they need keys."""
    return bool(sidecar.distributor or sidecar.bundle_configmap)


def missing_keys_message(label: str, sidecar: SidecarSettings, problem: str) -> str:
    """Why an MCP server pod is refused while no trusted bundle key is known."""
    if sidecar.distributor:
        head = (
            "the Palisade distributor has not published its signing key yet; retry in a few seconds"
        )
    else:
        head = "the Palisade injector knows no bundle signing key yet; retry in a few seconds"
    detail = f" ({problem})" if problem else ""
    return (
        f"{head}{detail}. Pod {label} is refused rather than given a sidecar that cannot "
        "verify policy bundles; its controller retries."
    )
