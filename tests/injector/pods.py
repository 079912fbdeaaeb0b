"""Pod and AdmissionReview builders shared by the injector tests (plain dicts)."""

from __future__ import annotations

import copy
from typing import Any

ENABLED = {"palisade.dev/inject": "enabled"}
REQUIRED = {"palisade.dev/inject": "required"}


def container(name: str = "app", *ports: tuple[str | None, int], **extra: Any) -> dict[str, Any]:
    """A container with the given (name, containerPort) ports."""
    body: dict[str, Any] = {"name": name, "image": f"example/{name}:1"}
    if ports:
        body["ports"] = [
            {"containerPort": number, **({"name": pname} if pname else {})}
            for pname, number in ports
        ]
    body.update(extra)
    return body


def pod(
    *containers: dict[str, Any],
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    name: str = "mcp-0",
    **spec: Any,
) -> dict[str, Any]:
    """An MCP server pod (labelled) unless ``labels`` says otherwise."""
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"palisade.dev/mcp-server": "kubernetes-mcp"} if labels is None else labels,
    }
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": list(containers) or [container("app", ("mcp", 8080))], **spec},
    }


def review(
    obj: dict[str, Any] | None,
    namespace: str = "payments",
    operation: str = "CREATE",
    uid: str = "0d1e2f3a-uid",
    kind: str = "Pod",
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
        "operation": operation,
        "namespace": namespace,
        "userInfo": {"username": "alice"},
    }
    if obj is not None:
        request["object"] = copy.deepcopy(obj)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(doc: dict[str, Any], ops: list[Any]) -> dict[str, Any]:
    """A small RFC 6902 applier (add, remove, replace) used to check patched pods."""
    out = copy.deepcopy(doc)
    for op in ops:
        tokens = [_unescape(t) for t in op["path"].split("/")[1:]]
        parent: Any = out
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        if op["op"] == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        elif isinstance(parent, list):
            if op["op"] == "add":
                if last == "-":
                    parent.append(op["value"])
                else:
                    parent.insert(int(last), op["value"])
            else:
                parent[int(last)] = op["value"]
        else:
            if op["op"] == "replace" and last not in parent:
                raise KeyError(op["path"])
            parent[last] = op["value"]
    return out
