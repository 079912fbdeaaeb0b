"""Recognize what the injector itself added (pure).

A pod that arrives with a container named like the sidecar is either one this
injector already patched (the API server reinvokes webhooks after a later one
changed the pod, and a manifest copied from an injected pod looks the same) or a
look-alike: Palisade's image with another command, a writable volume as the
audit spool, no packet filter. Name and image prove nothing, so :func:`recheck`
rebuilds what this injector adds to such a pod, from the facts its status
annotation records (ports, port name, MCP container) and everything else from
the settings, the namespace and the pod as they are now, and admits the pod only
when the sidecar, the packet filter, their volumes and the status annotation are
exactly that. Facts a pod author could choose are the ones the injector lets a
pod choose anyway (ports and the MCP container, by annotation); the sidecar's
command, image, environment, mounts, security context and the packet filter's
presence are not.

Both sides are compared after :func:`normalized_container` /
:func:`normalized_volume` fill in what the API server defaults (probe
thresholds, ``protocol: TCP``, ``defaultMode``...) and write quantities as
numbers, so the stored form of what was injected equals its patch form.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from injector import choices, overrides, patch, quantity, shapes
from injector.choices import Unacceptable
from injector.plan import (
    LABEL_TENANT,
    SA_TOKEN_PATH,
    Plan,
    Refuse,
    Skip,
    injected_status,
    status_fields,
)
from injector.probes import PROBES, ProbeRewrite
from injector.settings import InjectionSettings

_PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1}
_MODE_DEFAULT = 0o644
#: The env var in which the sidecar receives the MCP container's rerouted probes.
PROBES_ENV = "PALISADE_APP_PROBES"


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _probe(probe: Mapping[str, Any]) -> dict[str, Any]:
    out = {**_PROBE_DEFAULTS, "failureThreshold": 3, **probe}
    if out.get("initialDelaySeconds") == 0:
        del out["initialDelaySeconds"]
    if isinstance(out.get("httpGet"), dict):
        out["httpGet"] = {"scheme": "HTTP", **out["httpGet"]}
    return out


def _resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("requests", "limits"):
        values = _as_dict(resources.get(key))
        if values:
            out[key] = {name: quantity.canonical(v) for name, v in values.items()}
    return out


def normalized_container(container: Mapping[str, Any]) -> dict[str, Any]:
    """The container with the API server's defaults filled in and quantities as numbers."""
    out = copy.deepcopy(dict(container))
    out.setdefault("terminationMessagePath", "/dev/termination-log")
    out.setdefault("terminationMessagePolicy", "File")
    out["ports"] = [{"protocol": "TCP", **_as_dict(p)} for p in _as_list(out.get("ports"))]
    env = []
    for item in (_as_dict(e) for e in _as_list(out.get("env"))):
        ref = _as_dict(_as_dict(item.get("valueFrom")).get("fieldRef"))
        if ref:
            item = {**item, "valueFrom": {"fieldRef": {"apiVersion": "v1", **ref}}}
        env.append(item)
    out["env"] = env
    for name in PROBES:
        if isinstance(out.get(name), dict):
            out[name] = _probe(out[name])
    out["resources"] = _resources(_as_dict(out.get("resources")))
    for key in ("ports", "env", "volumeMounts", "resources"):
        if not out.get(key):
            out.pop(key, None)
    return out


def normalized_volume(volume: Mapping[str, Any]) -> dict[str, Any]:
    """The volume with the API server's defaults filled in and quantities as numbers."""
    out = copy.deepcopy(dict(volume))
    for kind in ("configMap", "secret", "projected", "downwardAPI"):
        if isinstance(out.get(kind), dict):
            out[kind].setdefault("defaultMode", _MODE_DEFAULT)
    projected = _as_dict(out.get("projected"))
    for source in _as_list(projected.get("sources")):
        token = _as_dict(source).get("serviceAccountToken")
        if isinstance(token, dict):
            token.setdefault("expirationSeconds", 3600)
    empty = out.get("emptyDir")
    if isinstance(empty, dict) and "sizeLimit" in empty:
        empty["sizeLimit"] = quantity.canonical(empty["sizeLimit"])
    return out


def differences(present: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The fields (top level) in which ``present`` is not ``expected``."""
    keys = sorted(set(present) | set(expected))
    return [k for k in keys if present.get(k) != expected.get(k)]


def is_token_volume(volume: Mapping[str, Any]) -> bool:
    """The kubelet's ServiceAccount token volume: projected token (+ CA, namespace) only.

    Only such a volume is shared with the sidecar at the token path: any other
    (an emptyDir or hostPath the MCP container can write) would let the MCP server
    hand the sidecar its CA and token.
    """
    projected = _as_dict(volume.get("projected"))
    sources = [_as_dict(s) for s in _as_list(projected.get("sources"))]
    if not any("serviceAccountToken" in s for s in sources):
        return False
    for source in sources:
        if "serviceAccountToken" in source or "downwardAPI" in source:
            continue
        if _as_dict(source.get("configMap")).get("name") != "kube-root-ca.crt":
            return False
    return True


def token_mount(
    container: Mapping[str, Any], volumes: Sequence[Any]
) -> tuple[dict[str, Any] | None, str]:
    """The MCP container's ServiceAccount token mount for the sidecar, and a warning."""
    by_name = {_as_dict(v).get("name"): _as_dict(v) for v in volumes}
    for mount in (_as_dict(m) for m in _as_list(container.get("volumeMounts"))):
        if mount.get("mountPath") != SA_TOKEN_PATH:
            continue
        if is_token_volume(by_name.get(mount.get("name"), {})):
            return {"name": mount["name"], "mountPath": SA_TOKEN_PATH, "readOnly": True}, ""
        return None, (
            f"the MCP container mounts volume {mount.get('name')!r} at {SA_TOKEN_PATH}, which is "
            "not a ServiceAccount token volume; the sidecar does not share it"
        )
    return None, ""


def _locate(spec: Mapping[str, Any], name: str) -> tuple[str, int, dict[str, Any]] | None:
    for key in ("initContainers", "containers"):
        for i, c in enumerate(_as_list(spec.get(key))):
            if _as_dict(c).get("name") == name:
                return key, i, _as_dict(c)
    return None


def _probe_rewrites(container: Mapping[str, Any]) -> tuple[ProbeRewrite, ...]:
    for item in (_as_dict(e) for e in _as_list(container.get("env"))):
        if item.get("name") == PROBES_ENV and isinstance(item.get("value"), str):
            try:
                table = json.loads(item["value"])
            except ValueError:
                return ()
            if isinstance(table, dict):
                return tuple(ProbeRewrite("", "", str(k), _as_dict(v)) for k, v in table.items())
    return ()


def _without_token_mount(container: dict[str, Any], volumes: Sequence[Any]) -> dict[str, Any]:
    """The ServiceAccount admission plugin, run again with the webhooks, mounts the
    pod's token into our containers too: that mount is the pod's own and harmless."""
    by_name = {_as_dict(v).get("name"): _as_dict(v) for v in volumes}
    mounts = [
        m
        for m in _as_list(container.get("volumeMounts"))
        if not (
            _as_dict(m).get("mountPath") == SA_TOKEN_PATH
            and is_token_volume(by_name.get(_as_dict(m).get("name"), {}))
        )
    ]
    return {**container, "volumeMounts": mounts}


def recheck(
    spec: Mapping[str, Any],
    annotations: Mapping[str, Any],
    ns_labels: Mapping[str, str],
    namespace: str,
    label: str,
    server_name: str,
    settings: InjectionSettings,
) -> Skip | Refuse:
    """Admit a pod that already has the sidecar only when it is exactly what we add."""
    sidecar = settings.sidecar
    name = sidecar.container_name
    problems = _problems(spec, annotations, ns_labels, namespace, label, server_name, settings)
    if problems:
        return Refuse(
            f"pod {label} has a container named {name!r} that is not the Palisade sidecar as "
            f"the Palisade injector adds it ({'; '.join(problems)}). Remove it, its volumes and "
            "the palisade.dev/status annotation, and let the injector add the sidecar."
        )
    return Skip(f"pod {label} already has the Palisade sidecar")


def _problems(
    spec: Mapping[str, Any],
    annotations: Mapping[str, Any],
    ns_labels: Mapping[str, str],
    namespace: str,
    label: str,
    server_name: str,
    settings: InjectionSettings,
) -> list[str]:
    sidecar = settings.sidecar
    facts = status_fields(annotations) or {}
    port, upstream = facts.get("port"), facts.get("upstream")
    port_name, app_name = facts.get("portName"), facts.get("app")
    if (
        facts.get("state") != "injected"
        or not isinstance(port, int)
        or not isinstance(upstream, int)
        or not isinstance(port_name, str)
        or not isinstance(app_name, str)
    ):
        return ["no palisade.dev/status annotation written by the injector"]
    containers = [_as_dict(c) for c in _as_list(spec.get("containers"))]
    names = [c.get("name") for c in containers]
    if app_name not in names or shapes.is_known_proxy(app_name):
        return [f"the MCP container {app_name!r} of its status annotation is not in the pod"]
    app_index = names.index(app_name)
    app = containers[app_index]
    volumes = _as_list(spec.get("volumes"))
    try:
        audience = choices.audience(sidecar.audience_template, namespace, server_name, annotations)
        firewall, firewall_state = choices.firewall(
            annotations, ns_labels, label, upstream, port, sidecar.pod_firewall
        )
        upstream_credential = choices.upstream_credential(annotations)
        required = ns_labels.get("palisade.dev/inject") == "required"
        pod_overrides, _ = overrides.overrides(annotations, sidecar, required=required)
    except Unacceptable as exc:
        return [str(exc)]
    ours = {sidecar.container_name, sidecar.init_container_name}
    present = _locate(spec, sidecar.container_name)
    if present is None:
        return ["no sidecar"]
    mount, _ = token_mount(app, volumes)
    inits = _as_list(spec.get("initContainers"))
    plan = Plan(
        pod_label=label,
        namespace=namespace,
        server_name=server_name,
        tenant=str(ns_labels.get(LABEL_TENANT) or namespace),
        native=settings.native,
        sidecar_port=port,
        upstream_port=upstream,
        port_name=port_name,
        app_index=app_index,
        takeover=None,
        port_rewrites=(),
        app_has_volume_mounts=True,
        app_needs_socket_mount=False,
        token_mount=mount,
        has_annotations=True,
        has_volumes=True,
        has_init_containers=True,
        status=injected_status(
            container=sidecar.container_name,
            native=settings.native,
            port=port,
            port_name=port_name,
            upstream=upstream,
            audience=audience,
            firewall_state=firewall_state,
            app=app_name,
        ),
        audience=audience,
        firewall_ports=firewall,
        probe_rewrites=_probe_rewrites(present[2]),
        guaranteed=shapes.guaranteed(
            [c for c in containers if c.get("name") not in ours],
            [c for c in inits if _as_dict(c).get("name") not in ours],
        ),
        upstream_credential=upstream_credential,
        overrides=pod_overrides,
    )
    problems: list[str] = []
    if status_fields(annotations) != json.loads(plan.status):
        problems.append("its palisade.dev/status annotation")
    where = "initContainers" if plan.native else "containers"
    if present[0] != where:
        problems.append(f"it is in {present[0]}, not {where}")
    expected = normalized_container(patch.sidecar_container(plan, sidecar))
    # Expected without a token mount: one the ServiceAccount plugin added is not ours.
    found = normalized_container(
        present[2] if mount is not None else _without_token_mount(present[2], volumes)
    )
    diff = differences(found, expected)
    if diff:
        problems.append("its " + ", ".join(diff))
    init = _locate(spec, sidecar.init_container_name)
    if firewall:
        wanted = normalized_container(patch.init_container(plan, sidecar))
        if init is None or init[0] != "initContainers":
            problems.append(f"no packet filter {sidecar.init_container_name!r}")
        else:
            got = normalized_container(_without_token_mount(init[2], volumes))
            diff = differences(got, wanted)
            if diff:
                what = ", ".join(diff)
                problems.append(f"{sidecar.init_container_name!r} differs in its {what}")
            if plan.native and present[0] == where and init[1] > present[1]:
                problems.append("the packet filter does not start before the sidecar")
    elif init is not None:
        problems.append(f"a container named {sidecar.init_container_name!r} but no packet filter")
    by_name = {_as_dict(v).get("name"): _as_dict(v) for v in volumes}
    for volume in patch.volumes(sidecar, bool(firewall), pod_overrides):
        got_volume = by_name.get(volume["name"])
        if got_volume is None or normalized_volume(got_volume) != normalized_volume(volume):
            problems.append(f"volume {volume['name']!r}")
    for c in [*containers, *(_as_dict(i) for i in inits)]:
        if c.get("name") == sidecar.container_name:
            continue
        if any(_as_dict(p).get("name") == port_name for p in _as_list(c.get("ports"))):
            problems.append(f"container {c.get('name')!r} still declares the port {port_name!r}")
    return problems
