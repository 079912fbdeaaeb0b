"""When is a Kubernetes object "ready"? Pure predicates for ``RealNode.wait_ready``.

| kind | ready when |
|---|---|
| node | condition ``Ready`` is ``True`` |
| pod | phase ``Running`` and every container ready, or phase ``Succeeded`` |
| deployment, statefulset | latest spec observed; all replicas updated and ready |
| daemonset | at least one pod is scheduled and every scheduled pod is updated and ready |
| job | at least one completion |
| persistentvolumeclaim | phase ``Bound`` |

A Service is reachable (``RealNode.wait_service``) once every ready endpoint its
EndpointSlices list is in kube-proxy's rules: ready pods alone are not enough.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

_PATHS = {
    "node": ("/api/v1", "nodes", False),
    "pod": ("/api/v1", "pods", True),
    "service": ("/api/v1", "services", True),
    "persistentvolumeclaim": ("/api/v1", "persistentvolumeclaims", True),
    "deployment": ("/apis/apps/v1", "deployments", True),
    "daemonset": ("/apis/apps/v1", "daemonsets", True),
    "statefulset": ("/apis/apps/v1", "statefulsets", True),
    "job": ("/apis/batch/v1", "jobs", True),
}


def api_path(kind: str, namespace: str, name: str) -> str:
    """The REST path of one object of a kind listed above."""
    try:
        prefix, plural, namespaced = _PATHS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(_PATHS)})") from None
    if namespaced:
        return f"{prefix}/namespaces/{namespace}/{plural}/{name}"
    return f"{prefix}/{plural}/{name}"


def _condition(obj: Obj, kind: str) -> bool:
    conds = obj.get("status", {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conds)


def node_ready(obj: Obj) -> bool:
    return _condition(obj, "Ready")


def pod_ready(obj: Obj) -> bool:
    status = obj.get("status", {})
    if status.get("phase") == "Succeeded":
        return True
    containers = status.get("containerStatuses") or []
    return (
        status.get("phase") == "Running"
        and bool(containers)
        and all(c.get("ready") for c in containers)
    )


def _observed(obj: Obj) -> bool:
    gen = obj.get("metadata", {}).get("generation", 0)
    return int(obj.get("status", {}).get("observedGeneration", 0)) >= int(gen)


def replicas_ready(obj: Obj) -> bool:
    want = int(obj.get("spec", {}).get("replicas", 1))
    s = obj.get("status", {})
    return (
        _observed(obj)
        and int(s.get("updatedReplicas", 0)) == want
        and int(s.get("readyReplicas", 0)) == want
        and int(s.get("replicas", 0)) == want
    )


def daemonset_ready(obj: Obj) -> bool:
    s = obj.get("status", {})
    want = int(s.get("desiredNumberScheduled", 0))
    return (
        _observed(obj)
        and want > 0
        and int(s.get("updatedNumberScheduled", 0)) == want
        and int(s.get("numberReady", 0)) == want
    )


def job_complete(obj: Obj) -> bool:
    return int(obj.get("status", {}).get("succeeded", 0)) >= 1


def pvc_bound(obj: Obj) -> bool:
    return bool(obj.get("status", {}).get("phase") == "Bound")


_CHECKS: dict[str, Callable[[Obj], bool]] = {
    "node": node_ready,
    "pod": pod_ready,
    "deployment": replicas_ready,
    "statefulset": replicas_ready,
    "daemonset": daemonset_ready,
    "job": job_complete,
    "persistentvolumeclaim": pvc_bound,
}


def ready_check(kind: str) -> Callable[[Obj], bool]:
    """The readiness predicate of ``kind`` (see the table in the module docstring)."""
    try:
        return _CHECKS[kind.lower()]
    except KeyError:
        raise ValueError(f"no readiness rule for {kind!r} (known: {', '.join(_CHECKS)})") from None


# --- Services: endpoints the API lists, and the ones kube-proxy has programmed ---

_SEP_COMMENT = re.compile(r'--comment "?(?P<svc>[^ "]+) -> (?P<ep>[^ "]+)"? ')


def ready_endpoints(slices: Obj, port: int) -> set[str]:
    """``ip:port`` of every ready endpoint in an EndpointSliceList, for one target port."""
    found: set[str] = set()
    for item in slices.get("items") or []:
        ports = [p.get("port") for p in item.get("ports") or []]
        if port not in ports:
            continue
        for ep in item.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                found.update(f"{addr}:{port}" for addr in ep.get("addresses") or [])
    return found


def programmed_endpoints(nat_rules: str, namespace: str, service: str) -> set[str]:
    """``ip:port`` that kube-proxy's iptables rules (``iptables-save -t nat``) send
    the Service's traffic to; its comments read ``ns/name[:port] -> ip:port``."""
    found: set[str] = set()
    for match in _SEP_COMMENT.finditer(nat_rules):
        svc = match["svc"].split(":", 1)[0]
        if svc == f"{namespace}/{service}":
            found.add(match["ep"])
    return found
