"""Pod shapes the injection must handle deliberately (pure).

- :func:`unfit` names what makes the patch invalid or changes how the pod runs:
  Windows pods (the sidecar is a Linux image, and its Linux security context is
  refused on ``spec.os.name: windows``), pod-level ``spec.resources`` (the
  sidecar would be carved out of the MCP server's own budget), and pods that
  must finish (``restartPolicy: Never|OnFailure``) when the sidecar can only be a
  regular container, which would keep them running forever. The model skips
  such pods with the reason in ``enabled`` namespaces and refuses them in
  ``required`` ones.
- :func:`guaranteed` tells whether the pod is in the Guaranteed QoS class, which
  the injected containers must keep (requests == limits for cpu and memory).
- :func:`pick` chooses the MCP container: the ``palisade.dev/mcp-container``
  annotation, else the container with the port named ``mcp``, else the
  ``kubectl.kubernetes.io/default-container`` annotation, else the one container
  that is not a known proxy (istio-proxy, linkerd-proxy, envoy, vault-agent...).
  A known proxy is never the MCP container.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from injector import quantity
from injector.plan import ANNOTATION_CONTAINER, PortRef

ANNOTATION_DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
OS_LABELS = ("kubernetes.io/os", "beta.kubernetes.io/os")

#: Containers other injectors add in front of or beside the workload; never the MCP server.
KNOWN_PROXIES = frozenset(
    {
        "istio-proxy",
        "istio-init",
        "istio-validation",
        "linkerd-proxy",
        "linkerd-init",
        "envoy",
        "envoy-sidecar",
        "envoy-proxy",
        "vault-agent",
        "vault-agent-init",
        "consul-dataplane",
        "consul-connect-envoy-sidecar",
        "consul-connect-inject-init",
        "kuma-sidecar",
        "kuma-init",
        "daprd",
        "cloud-sql-proxy",
        "cloudsql-proxy",
        "oauth2-proxy",
        "aws-appmesh-envoy",
        "nginx-mesh-sidecar",
    }
)


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def is_known_proxy(name: object) -> bool:
    return isinstance(name, str) and name in KNOWN_PROXIES


def _os_terms_all_windows(spec: Mapping[str, Any]) -> bool:
    """Required node affinity that only admits Windows nodes."""
    affinity = _as_dict(_as_dict(spec.get("affinity")).get("nodeAffinity"))
    required = _as_dict(affinity.get("requiredDuringSchedulingIgnoredDuringExecution"))
    terms = [_as_dict(t) for t in _as_list(required.get("nodeSelectorTerms"))]
    if not terms:
        return False
    for term in terms:
        windows_only = False
        for expr in (_as_dict(e) for e in _as_list(term.get("matchExpressions"))):
            values = {str(v).lower() for v in _as_list(expr.get("values"))}
            if expr.get("key") in OS_LABELS and expr.get("operator") == "In" and values:
                windows_only = windows_only or values == {"windows"}
        if not windows_only:
            return False
    return True


def is_windows(spec: Mapping[str, Any]) -> bool:
    """The pod runs only on Windows nodes (``spec.os``, node selector, node affinity)."""
    if str(_as_dict(spec.get("os")).get("name") or "").lower() == "windows":
        return True
    selector = _as_dict(spec.get("nodeSelector"))
    if any(str(selector.get(k) or "").lower() == "windows" for k in OS_LABELS):
        return True
    return _os_terms_all_windows(spec)


def unfit(spec: Mapping[str, Any], native: bool) -> str | None:
    """Why this pod cannot take the sidecar as it is; None when it can."""
    if is_windows(spec):
        return (
            "it runs on Windows nodes (spec.os or a kubernetes.io/os node selector); the "
            "Palisade sidecar and packet filter are Linux containers"
        )
    if _as_dict(spec.get("resources")):
        return (
            "it sets pod-level resources (spec.resources), which the sidecar would share with "
            "the MCP server; set resources on its containers instead"
        )
    policy = str(spec.get("restartPolicy") or "Always")
    if not native and policy != "Always":
        return (
            f"it has restartPolicy {policy} and native sidecars are off, so the sidecar would "
            "be a regular container that keeps the pod from ever completing"
        )
    return None


def _container_guaranteed(container: Mapping[str, Any]) -> bool:
    resources = _as_dict(container.get("resources"))
    limits, requests = _as_dict(resources.get("limits")), _as_dict(resources.get("requests"))
    for name in ("cpu", "memory"):
        limit = quantity.parse(limits.get(name))
        if limit is None or limit <= 0:
            return False
        # An unset request is defaulted to the limit by the API server.
        if name in requests and quantity.parse(requests.get(name)) != limit:
            return False
    return True


def guaranteed(containers: Sequence[Any], init_containers: Sequence[Any] = ()) -> bool:
    """Every container has cpu and memory limits equal to its requests (QoS Guaranteed)."""
    every = [_as_dict(c) for c in [*containers, *init_containers]]
    return bool(every) and all(_container_guaranteed(c) for c in every)


@dataclass(frozen=True)
class Pick:
    """The MCP container, or why there is none."""

    index: int = -1
    takeover: PortRef | None = None
    """The port named like the taken-over name, when the MCP container has it."""
    error: str = ""
    """Set: the pod is misconfigured (refused, whatever the namespace)."""
    ambiguous: str = ""
    """Set: a guess among several containers (refused in ``required`` namespaces)."""


def _named_port(containers: Sequence[Mapping[str, Any]], name: str) -> PortRef | None:
    for ci, container in enumerate(containers):
        for pi, port in enumerate(_as_list(container.get("ports"))):
            if _as_dict(port).get("name") == name:
                return PortRef(ci, pi)
    return None


def pick(
    containers: Sequence[Mapping[str, Any]], annotations: Mapping[str, Any], port_name: str
) -> Pick:
    names = [c.get("name") for c in containers]
    listed = ", ".join(map(str, names))
    takeover = _named_port(containers, port_name)
    wanted = annotations.get(ANNOTATION_CONTAINER)
    if wanted is not None:
        if wanted not in names:
            return Pick(
                error=f"annotation {ANNOTATION_CONTAINER} names container {wanted!r}, which the "
                f"pod does not have (containers: {listed})"
            )
        index = names.index(wanted)
        if takeover is not None and takeover.container != index:
            return Pick(
                error=f"port {port_name!r} belongs to container {names[takeover.container]!r}, "
                f"not to {wanted!r} named by {ANNOTATION_CONTAINER}"
            )
    elif takeover is not None:
        index = takeover.container
    else:
        default = annotations.get(ANNOTATION_DEFAULT_CONTAINER)
        candidates = [i for i, n in enumerate(names) if not is_known_proxy(n)]
        if default in names and not is_known_proxy(default):
            index = names.index(default)
        elif len(candidates) == 1:
            index = candidates[0]
        elif not candidates:
            return Pick(
                error=f"all its containers ({listed}) are known proxies, none is an MCP server; "
                f"name the MCP container with the annotation {ANNOTATION_CONTAINER}"
            )
        else:
            return Pick(
                index=candidates[0],
                ambiguous=f"none of its containers ({listed}) has a port named {port_name!r}, so "
                f"which one is the MCP server is a guess ({names[candidates[0]]!r}); name it "
                f"with the annotation {ANNOTATION_CONTAINER}, or name its port {port_name!r}",
            )
    if is_known_proxy(names[index]):
        return Pick(
            error=f"container {names[index]!r} is a known proxy, not an MCP server; name the "
            f"MCP container with the annotation {ANNOTATION_CONTAINER}"
        )
    own = takeover if takeover is not None and takeover.container == index else None
    return Pick(index=index, takeover=own)
