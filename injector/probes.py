"""Kubelet probes of the MCP container, rerouted through the sidecar (pure).

With the pod's packet filter on, the MCP container's protected port(s) refuse
connections that do not come from loopback, and the kubelet probes from the
node. So, as istio does, every ``httpGet`` / ``tcpSocket`` probe and every
``httpGet`` lifecycle hook of the MCP container whose port (a number, or a name
of one of its ports) is protected becomes an ``httpGet`` on the sidecar's port,
path ``/palisade/app-health/<container>/<probe>``; the original check is handed
to the sidecar (env ``PALISADE_APP_PROBES``, JSON; read by sidecar/app_health.py),
which runs exactly that on 127.0.0.1 and nothing else.

Left alone: probes of other ports (metrics, ...), ``exec`` probes (they run inside
the container), handlers with an explicit ``host`` (they do not target the pod).
A ``grpc`` probe of a protected port cannot be rerouted: a warning says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The sidecar's route (sidecar/app_health.py PREFIX).
ROUTE = "/palisade/app-health"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")


@dataclass(frozen=True)
class ProbeRewrite:
    """One probe (or hook) handler to point at the sidecar."""

    parent: str
    """JSON Pointer of the probe, e.g. ``/spec/containers/0/livenessProbe``."""

    kind: str
    """The original handler key: ``httpGet`` or ``tcpSocket``."""

    key: str
    """``<container>/<probe>``: the sidecar's route suffix and table key."""

    check: Mapping[str, Any] = field(default_factory=dict)
    """What the sidecar runs: ``{"httpGet": {...}}`` or ``{"tcpSocket": {...}}`` with
    ``timeoutSeconds``."""

    def handler(self, sidecar_port: int) -> dict[str, Any]:
        """The new ``httpGet`` handler, on the sidecar."""
        return {"path": f"{ROUTE}/{self.key}", "port": sidecar_port, "scheme": "HTTP"}


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def resolve_port(value: object, named: Mapping[str, int]) -> int | None:
    """A probe's port as a number: itself, or the container port of that name."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value) if value.isdigit() else named.get(value)
    return None


def named_ports(container: Mapping[str, Any]) -> dict[str, int]:
    """The container's named ports, name -> number."""
    out: dict[str, int] = {}
    for port in container.get("ports") or []:
        port = _as_dict(port)
        name, number = port.get("name"), port.get("containerPort")
        if isinstance(name, str) and isinstance(number, int) and not isinstance(number, bool):
            out[name] = number
    return out


def _http_check(handler: Mapping[str, Any], port: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "path": str(handler.get("path") or "/"),
        "port": port,
        "scheme": str(handler.get("scheme") or "HTTP"),
    }
    headers = [
        {"name": str(h.get("name")), "value": str(h.get("value", ""))}
        for h in handler.get("httpHeaders") or []
        if isinstance(h, dict) and h.get("name")
    ]
    if headers:
        spec["httpHeaders"] = headers
    return spec


def plan(
    container: Mapping[str, Any],
    index: int,
    protected: Sequence[int],
) -> tuple[tuple[ProbeRewrite, ...], tuple[str, ...]]:
    """The rewrites for the MCP container at ``index``, and warnings."""
    name = str(container.get("name") or f"container-{index}")
    named = named_ports(container)
    base = f"/spec/containers/{index}"
    rewrites: list[ProbeRewrite] = []
    warnings: list[str] = []
    handlers: list[tuple[str, str, Mapping[str, Any], bool]] = [
        (f"{base}/{p}", p, _as_dict(container.get(p)), True) for p in PROBES
    ]
    lifecycle = _as_dict(container.get("lifecycle"))
    handlers += [(f"{base}/lifecycle/{h}", h, _as_dict(lifecycle.get(h)), False) for h in HOOKS]
    for parent, what, probe, is_probe in handlers:
        timeout = probe.get("timeoutSeconds", 1) if is_probe else 10
        kinds = ("httpGet", "tcpSocket") if is_probe else ("httpGet",)
        for kind in kinds:
            handler = _as_dict(probe.get(kind))
            if not handler or handler.get("host"):
                continue
            port = resolve_port(handler.get("port"), named)
            if port is None or port not in protected:
                continue
            check: dict[str, Any] = (
                {"httpGet": _http_check(handler, port)}
                if kind == "httpGet"
                else {"tcpSocket": {"port": port}}
            )
            check["timeoutSeconds"] = timeout
            rewrites.append(ProbeRewrite(parent, kind, f"{name}/{what}", check))
        grpc = _as_dict(probe.get("grpc"))
        if grpc and resolve_port(grpc.get("port"), named) in protected:
            warnings.append(
                f"palisade: the {what} of container {name!r} is a grpc probe of a port that "
                "only the sidecar may reach; it will fail. Use an exec, httpGet or tcpSocket "
                'probe, or opt out with palisade.dev/pod-firewall: "false".'
            )
    return tuple(rewrites), tuple(warnings)


def sidecar_table(rewrites: Sequence[ProbeRewrite]) -> str:
    """The sidecar's ``PALISADE_APP_PROBES``: compact JSON, stable key order."""
    return json.dumps(
        {r.key: dict(r.check) for r in rewrites}, separators=(",", ":"), sort_keys=True
    )
