"""Pod updates: what was injected stays as it was injected (pure).

A pod's spec is mostly fixed once created, but container images can be changed
in place, ephemeral containers added (``kubectl debug``) and labels and
annotations edited. The webhook sees UPDATE of ``pods`` and of
``pods/ephemeralcontainers`` (the chart's rules) and answers without a patch:

- a pod that has the Palisade sidecar: the sidecar and the packet filter (whole
  containers), their volumes, the ``palisade.dev/status`` annotation and the
  ``palisade.dev/mcp-server`` label (the sidecar was configured for that server)
  may not change: refused in every labelled namespace;
- its MCP container's image may not change in a ``required`` namespace: its
  port, probes and packet filter were decided for the old image (a warning in an
  ``enabled`` one);
- an ephemeral container added to it shares its network and reaches the MCP
  server around the sidecar: refused in a ``required`` namespace, warned in an
  ``enabled`` one;
- a pod without the sidecar that gains the ``palisade.dev/mcp-server`` label
  becomes an ungoverned MCP server: refused in a ``required`` namespace (the
  sidecar is added only at creation: recreate the pod), warned in an ``enabled``
  one.
Everything else (other labels, finalizers, owner references) passes untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from injector import patch
from injector.plan import (
    ANNOTATION_STATUS,
    INJECT_VALUES,
    LABEL_INJECT,
    LABEL_MCP_SERVER,
    VOLUME_UPSTREAM_CREDENTIAL,
    Refuse,
    Skip,
    status_fields,
)
from injector.provenance import normalized_container, normalized_volume
from injector.settings import SYSTEM_NAMESPACES, InjectionSettings, SidecarSettings


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _container(spec: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    for key in ("initContainers", "containers"):
        for c in _as_list(spec.get(key)):
            if _as_dict(c).get("name") == name:
                return _as_dict(c)
    return None


def _volumes(spec: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {
        str(v.get("name")): normalized_volume(v)
        for v in (_as_dict(x) for x in _as_list(spec.get("volumes")))
        if v.get("name") in names
    }


def _our_volume_names(sidecar: SidecarSettings) -> frozenset[str]:
    every = patch.volumes(sidecar, firewall=True)
    return frozenset({*(v["name"] for v in every), VOLUME_UPSTREAM_CREDENTIAL})


def tampering(
    old: Mapping[str, Any], new: Mapping[str, Any], sidecar: SidecarSettings
) -> list[str]:
    """What an update changes in what was injected (empty: nothing)."""
    old_spec, new_spec = _as_dict(old.get("spec")), _as_dict(new.get("spec"))
    changed: list[str] = []
    for name in (sidecar.container_name, sidecar.init_container_name):
        before, after = _container(old_spec, name), _container(new_spec, name)
        if (before is None) != (after is None) or (
            before is not None
            and after is not None
            and normalized_container(before) != normalized_container(after)
        ):
            changed.append(f"container {name!r}")
    names = _our_volume_names(sidecar)
    if _volumes(old_spec, names) != _volumes(new_spec, names):
        changed.append("the Palisade volumes")
    old_meta, new_meta = _as_dict(old.get("metadata")), _as_dict(new.get("metadata"))
    old_ann, new_ann = _as_dict(old_meta.get("annotations")), _as_dict(new_meta.get("annotations"))
    if old_ann.get(ANNOTATION_STATUS) != new_ann.get(ANNOTATION_STATUS):
        changed.append(f"the annotation {ANNOTATION_STATUS}")
    old_labels, new_labels = _as_dict(old_meta.get("labels")), _as_dict(new_meta.get("labels"))
    if old_labels.get(LABEL_MCP_SERVER) != new_labels.get(LABEL_MCP_SERVER):
        changed.append(f"the label {LABEL_MCP_SERVER}")
    return changed


def _mcp_images(pod: Mapping[str, Any], sidecar: SidecarSettings) -> dict[str, object]:
    """Images of the MCP container (the one the status names; else every non-Palisade one)."""
    spec = _as_dict(pod.get("spec"))
    status = status_fields(_as_dict(_as_dict(pod.get("metadata")).get("annotations"))) or {}
    app = status.get("app")
    ours = {sidecar.container_name, sidecar.init_container_name}
    return {
        str(c.get("name")): c.get("image")
        for c in (_as_dict(x) for x in _as_list(spec.get("containers")))
        if (c.get("name") == app if isinstance(app, str) else c.get("name") not in ours)
    }


def decide(
    request: Mapping[str, Any],
    namespace_labels: Mapping[str, str] | None,
    settings: InjectionSettings,
) -> Skip | Refuse:
    """Decide one UPDATE of a Pod (or of its ephemeral containers)."""
    sub = str(request.get("subResource") or "")
    if sub not in ("", "ephemeralcontainers"):
        return Skip(f"pods/{sub} is not checked")
    new, old = request.get("object"), request.get("oldObject")
    if not isinstance(new, dict) or not isinstance(old, dict):
        raise ValueError("the update has no pod object or no old pod object")
    meta = _as_dict(new.get("metadata"))
    namespace = str(request.get("namespace") or meta.get("namespace") or "")
    if namespace in SYSTEM_NAMESPACES or namespace == settings.own_namespace:
        return Skip(f"namespace {namespace} is never injected")
    mode = (namespace_labels or {}).get(LABEL_INJECT)
    if mode not in INJECT_VALUES:
        return Skip(f"namespace {namespace} is not labelled {LABEL_INJECT}=enabled|required")
    required = mode == "required"
    label = f"{namespace}/{meta.get('name')}"
    sidecar = settings.sidecar
    injected = _container(_as_dict(old.get("spec")), sidecar.container_name) is not None
    if sub == "ephemeralcontainers":
        return _ephemeral(old, new, injected, required, namespace, label)
    if not injected:
        return _labelled_later(old, new, required, namespace, label)
    changed = tampering(old, new, sidecar)
    if changed:
        return Refuse(
            f"pod {label}: {', '.join(changed)} cannot change after the Palisade sidecar was "
            "injected; recreate the pod instead"
        )
    before, after = _mcp_images(old, sidecar), _mcp_images(new, sidecar)
    swapped = sorted(n for n in before if before[n] != after.get(n))
    if not swapped:
        return Skip(f"pod {label}: nothing injected changes")
    what = (
        f"the image of MCP container {', '.join(map(repr, swapped))} of pod {label} changes; "
        "its port, probes and packet filter were set for the old image at creation"
    )
    if required:
        return Refuse(
            f"namespace {namespace} requires the Palisade sidecar on MCP servers "
            f"({LABEL_INJECT}=required): {what}. Recreate the pod (roll the Deployment) instead."
        )
    return Skip(what, warnings=(f"palisade: {what}; recreate the pod to re-inject",))


def _ephemeral(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    injected: bool,
    required: bool,
    namespace: str,
    label: str,
) -> Skip | Refuse:
    def names(pod: Mapping[str, Any]) -> set[str]:
        spec = _as_dict(pod.get("spec"))
        return {str(_as_dict(c).get("name")) for c in _as_list(spec.get("ephemeralContainers"))}

    added = sorted(names(new) - names(old))
    if not injected or not added:
        return Skip(f"pod {label}: no ephemeral container added to a governed pod")
    what = (
        f"ephemeral container {', '.join(map(repr, added))} would share the network of MCP "
        f"server pod {label} and reach the MCP server without passing the sidecar"
    )
    if required:
        return Refuse(
            f"namespace {namespace} requires the Palisade sidecar on MCP servers "
            f"({LABEL_INJECT}=required): {what}. Debug a copy of the pod instead "
            "(kubectl debug --copy-to), in a namespace that is not required."
        )
    return Skip(what, warnings=(f"palisade: {what}",))


def _labelled_later(
    old: Mapping[str, Any], new: Mapping[str, Any], required: bool, namespace: str, label: str
) -> Skip | Refuse:
    def server(pod: Mapping[str, Any]) -> object:
        return _as_dict(_as_dict(pod.get("metadata")).get("labels")).get(LABEL_MCP_SERVER)

    if server(new) is None or server(old) is not None:
        return Skip(f"pod {label}: not injected, and its {LABEL_MCP_SERVER} label is unchanged")
    what = (
        f"pod {label} gains the label {LABEL_MCP_SERVER} after creation, without the Palisade "
        "sidecar, which is added only when a pod is created"
    )
    if required:
        return Refuse(
            f"namespace {namespace} requires the Palisade sidecar on MCP servers "
            f"({LABEL_INJECT}=required): {what}. Create the pod with the label instead."
        )
    return Skip(what, warnings=(f"palisade: {what}; it is not governed",))
