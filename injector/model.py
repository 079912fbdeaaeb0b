"""The pod model: pod + namespace labels + settings -> Inject | Skip | Refuse.

Pure: plain dicts in, frozen dataclasses out (injector/plan.py). Pod internals
are read here and in the modules it asks (``shapes.py``: pod shapes and the MCP
container; ``provenance.py``: what was injected; ``updates.py``: pod updates);
``patch.py`` turns a ``Plan`` into JSON Patch operations and ``webhook.py``
never looks inside the pod at all.

Selection, in order:
1. Not a Pod -> Skip (quietly). An UPDATE of a Pod goes to injector/updates.py
   (what was injected may not change); other operations -> Skip.
2. System namespaces and the injector's own namespace -> Skip.
3. Namespace not labelled ``palisade.dev/inject=enabled|required`` -> Skip.
4. Pod without the ``palisade.dev/mcp-server`` label -> Skip.
5. A container named like the sidecar is present -> Skip only when it, the packet
   filter, their volumes and the status annotation are exactly what this injector
   adds (injector/provenance.py: a reinvocation, or a copied manifest), else Refuse:
   a look-alike. A container named like the packet filter without the sidecar ->
   Refuse. The status annotation alone is never trusted.
6. Opt-out annotation ``palisade.dev/inject: "false"`` -> Skip with a warning,
   or Refuse in a ``required`` namespace.
7. Shapes the sidecar cannot join (``hostNetwork``; injector/shapes.py: Windows,
   pod-level resources, a pod that must complete without native sidecars) -> Skip
   with the reason recorded in the status annotation and a warning, or Refuse in a
   ``required`` namespace (it cannot be governed there).
8. Sidecars need trusted bundle keys (a distributor or a bundle ConfigMap is
   configured) and none is known yet (the distributor publishes its key at first
   start) -> Refuse with "retry in a few seconds": a sidecar that cannot verify
   bundles must not be injected, and the ReplicaSet controller retries.
9. Otherwise Inject (a pod whose volumes use a name the injector adds is refused:
   a pod's own volume is never reused; the MCP container is chosen by
   injector/shapes.py and never a known proxy; a Guaranteed pod stays Guaranteed):
   the sidecar, and (unless ``--pod-firewall disabled`` or the
   pod opts out with ``palisade.dev/pod-firewall: "false"``, refused in a
   ``required`` namespace) the ``palisade-init`` packet filter, with the MCP
   container's probes of the protected port rerouted through the sidecar
   (injector/probes.py).

Port takeover (see docs/injector.md, "Ports"): the MCP container's port named
``mcp`` (or the ``palisade.dev/port`` annotation) loses its name, the sidecar
declares that name on its own port, and the sidecar forwards to the original
port number on 127.0.0.1. Probes and lifecycle hooks of the MCP container that
referred to the port by name are rewritten to the number, because a named
probe port resolves only inside its own container.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from injector import choices, overrides, patch, probes, provenance, shapes, updates
from injector.choices import OFF_VALUES, Unacceptable
from injector.plan import (
    ANNOTATION_INJECT,
    ANNOTATION_PORT,
    ANNOTATION_SIDECAR_PORT,
    ANNOTATION_STATUS,
    ANNOTATION_UPSTREAM_PORT,
    INJECT_VALUES,
    LABEL_INJECT,
    LABEL_MCP_SERVER,
    LABEL_TENANT,
    SOCKET_DIR,
    Decision,
    Plan,
    Refuse,
    Skip,
    injected_status,
    status_fields,
    status_value,
)
from injector.probes import ProbeRewrite
from injector.settings import SYSTEM_NAMESPACES, InjectionSettings

_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS = ("postStart", "preStop")


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _pod_label(meta: Mapping[str, Any], namespace: str) -> str:
    name = meta.get("name") or (str(meta.get("generateName") or "") + "<generated>")
    return f"{namespace}/{name}"


def _port_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 65536 else None
    if isinstance(value, str) and value.isdigit():
        number = int(value)
        return number if 0 < number < 65536 else None
    return None


def _status_state(annotations: Mapping[str, Any]) -> str | None:
    fields = status_fields(annotations)
    if fields is None:
        raw = annotations.get(ANNOTATION_STATUS)
        return raw if isinstance(raw, str) and raw else None
    state = fields.get("state")
    return state if isinstance(state, str) else None


def existing_sidecar(spec: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """Our container, when the pod already has one (containers or init containers)."""
    for key in ("containers", "initContainers"):
        for container in _as_list(spec.get(key)):
            if isinstance(container, dict) and container.get("name") == name:
                return container
    return None


def _used_ports(spec: Mapping[str, Any]) -> set[int]:
    used: set[int] = set()
    for key in ("containers", "initContainers"):
        for container in _as_list(spec.get(key)):
            for port in _as_list(_as_dict(container).get("ports")):
                number = _port_number(_as_dict(port).get("containerPort"))
                if number:
                    used.add(number)
    return used


def _rewrites(
    container: Mapping[str, Any], index: int, name: str, number: int
) -> list[tuple[str, int]]:
    """Paths in the app container whose port refers to ``name``: rewrite to ``number``."""
    out: list[tuple[str, int]] = []
    base = f"/spec/containers/{index}"
    for probe in _PROBES:
        handler = _as_dict(container.get(probe))
        for kind in ("httpGet", "tcpSocket"):
            if _as_dict(handler.get(kind)).get("port") == name:
                out.append((f"{base}/{probe}/{kind}/port", number))
    lifecycle = _as_dict(container.get("lifecycle"))
    for hook in _HOOKS:
        handler = _as_dict(lifecycle.get(hook))
        for kind in ("httpGet", "tcpSocket"):
            if _as_dict(handler.get(kind)).get("port") == name:
                out.append((f"{base}/lifecycle/{hook}/{kind}/port", number))
    return out


def cannot_join(required: bool, namespace: str, label: str, reason: str) -> Skip | Refuse:
    """A pod the sidecar cannot join: skipped with the reason, or refused where required."""
    if required:
        return Refuse(
            f"namespace {namespace} requires the Palisade sidecar on MCP servers "
            f"({LABEL_INJECT}=required) but pod {label} cannot take it: {reason}."
        )
    return Skip(
        reason,
        warnings=(f"palisade: pod {label} not injected: {reason}",),
        status=status_value("skipped", reason=reason),
    )


def _unfit(spec: Mapping[str, Any], settings: InjectionSettings) -> str | None:
    if spec.get("hostNetwork") is True:
        return "hostNetwork pods share the node network; the sidecar cannot take over a port"
    return shapes.unfit(spec, settings.native)


def decide(
    request: Mapping[str, Any],
    namespace_labels: Mapping[str, str] | None,
    settings: InjectionSettings,
) -> Decision:
    """Decide what to do with one admission request (already envelope-checked)."""
    kind = _as_dict(request.get("kind"))
    if kind.get("kind") != "Pod" or kind.get("group", "") != "":
        return Skip(f"not a Pod: {kind.get('group') or 'core'}/{kind.get('kind')}")
    if request.get("operation") == "UPDATE":
        return updates.decide(request, namespace_labels, settings)
    if request.get("operation") != "CREATE" or request.get("subResource"):
        return Skip("only pod creation is mutated")
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise ValueError("the request has no pod object")
    meta = _as_dict(pod.get("metadata"))
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("the pod has no spec")
    namespace = str(request.get("namespace") or meta.get("namespace") or "")
    label = _pod_label(meta, namespace)
    if namespace in SYSTEM_NAMESPACES or namespace == settings.own_namespace:
        return Skip(f"namespace {namespace} is never injected")
    ns_labels = namespace_labels or {}
    mode = ns_labels.get(LABEL_INJECT)
    if mode not in INJECT_VALUES:
        return Skip(f"namespace {namespace} is not labelled {LABEL_INJECT}=enabled|required")
    labels = _as_dict(meta.get("labels"))
    server_name = labels.get(LABEL_MCP_SERVER)
    if not isinstance(server_name, str) or LABEL_MCP_SERVER not in labels:
        return Skip(f"pod {label} has no {LABEL_MCP_SERVER} label")
    annotations = _as_dict(meta.get("annotations"))
    sidecar = settings.sidecar
    # Idempotency rests on what is in the pod, compared whole with what we add:
    # a container's name and image, or a status annotation, can be copied or forged.
    if existing_sidecar(spec, sidecar.container_name) is not None:
        unfit = _unfit(spec, settings)
        if unfit is not None:
            # Never produced by us: we skip such pods. A copy posing as governed.
            return Refuse(f"pod {label} carries a Palisade sidecar but cannot take it: {unfit}")
        return provenance.recheck(
            spec, annotations, ns_labels, namespace, label, server_name, settings
        )
    if existing_sidecar(spec, sidecar.init_container_name) is not None:
        return Refuse(
            f"pod {label} has a container named {sidecar.init_container_name!r}, the name of "
            "the Palisade packet filter, which only the Palisade injector adds; rename that "
            "container"
        )
    warnings: list[str] = []
    if _status_state(annotations) == "injected":
        warnings.append(
            f"palisade: pod {label} says {ANNOTATION_STATUS}=injected but has no sidecar; injecting"
        )
    required = mode == "required"
    opt_out = str(annotations.get(ANNOTATION_INJECT, "")).strip().lower()
    if opt_out in OFF_VALUES:
        if required:
            return Refuse(
                f"namespace {namespace} requires the Palisade sidecar on MCP servers "
                f"({LABEL_INJECT}=required); pod {label} opts out with the annotation "
                f'{ANNOTATION_INJECT}: "{annotations.get(ANNOTATION_INJECT)}". Remove the '
                f"annotation, or ask the platform team to set {LABEL_INJECT}=enabled."
            )
        return Skip(
            f"pod {label} opts out ({ANNOTATION_INJECT}: false)",
            warnings=(
                f"palisade: MCP server pod {label} opted out of injection and is not governed",
            ),
        )
    unfit = _unfit(spec, settings)
    if unfit is not None:
        return cannot_join(required, namespace, label, unfit)
    if choices.needs_trusted_keys(sidecar) and not sidecar.trusted_keys:
        return Refuse(choices.missing_keys_message(label, sidecar, settings.trusted_keys_problem))
    return _plan(
        pod, meta, spec, annotations, namespace, label, server_name, ns_labels, settings, warnings
    )


def _plan(
    pod: Mapping[str, Any],
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    annotations: Mapping[str, Any],
    namespace: str,
    label: str,
    server_name: str,
    ns_labels: Mapping[str, str],
    settings: InjectionSettings,
    warnings: list[str],
) -> Decision:
    sidecar = settings.sidecar
    containers = _as_list(spec.get("containers"))
    if not containers or not all(isinstance(c, dict) for c in containers):
        return Refuse(f"pod {label} has no containers")
    if not server_name.strip():
        return Refuse(
            f"pod {label}: the label {LABEL_MCP_SERVER} must name the MCP server "
            "(its registry name in the policy bundle), not be empty"
        )
    required = ns_labels.get(LABEL_INJECT) == "required"
    port_name = str(annotations.get(ANNOTATION_PORT) or sidecar.port_name)
    pick = shapes.pick(containers, annotations, port_name)
    if pick.error:
        return Refuse(f"pod {label}: {pick.error}")
    if pick.ambiguous:
        if required:
            return Refuse(
                f"namespace {namespace} requires the Palisade sidecar on MCP servers "
                f"({LABEL_INJECT}=required) and pod {label} does not say which container is "
                f"the MCP server: {pick.ambiguous}."
            )
        warnings.append(f"palisade: pod {label}: {pick.ambiguous}")
    app_index, takeover = pick.index, pick.takeover
    app = containers[app_index]
    explicit_upstream = annotations.get(ANNOTATION_UPSTREAM_PORT)
    hostport = False
    if takeover is not None:
        port = containers[takeover.container]["ports"][takeover.port]
        upstream = _port_number(port.get("containerPort"))
        if upstream is None:
            return Refuse(f"pod {label}: port {port_name!r} has no valid containerPort")
        if str(port.get("protocol") or "TCP") != "TCP":
            return Refuse(f"pod {label}: port {port_name!r} is not TCP; MCP runs over HTTP")
        hostport = bool(port.get("hostPort"))
    elif explicit_upstream is not None:
        number = _port_number(explicit_upstream)
        if number is None:
            return Refuse(
                f"pod {label}: annotation {ANNOTATION_UPSTREAM_PORT}={explicit_upstream!r} "
                "is not a port number"
            )
        upstream = number
    else:
        declared = [_as_dict(p) for p in _as_list(app.get("ports"))]
        tcp = [p for p in declared if str(p.get("protocol") or "TCP") == "TCP"]
        single = _port_number(tcp[0].get("containerPort")) if len(tcp) == 1 else None
        upstream = single or sidecar.default_upstream_port
        warnings.append(
            f"palisade: pod {label} has no port named {port_name!r}; the sidecar forwards to "
            f"127.0.0.1:{upstream}. Point Services at the port named {port_name!r} (the sidecar)."
        )
    used = _used_ports(spec)
    requested = annotations.get(ANNOTATION_SIDECAR_PORT)
    if requested is not None:
        sidecar_port = _port_number(requested)
        if sidecar_port is None or sidecar_port in used or sidecar_port == upstream:
            return Refuse(
                f"pod {label}: annotation {ANNOTATION_SIDECAR_PORT}={requested!r} is not a free "
                "port number in this pod"
            )
    else:
        sidecar_port = sidecar.port
        while sidecar_port in used or sidecar_port == upstream:
            sidecar_port += 1
    rewrites = _rewrites(app, app_index, port_name, upstream) if takeover else []
    try:
        audience = choices.audience(sidecar.audience_template, namespace, server_name, annotations)
        firewall, firewall_state = choices.firewall(
            annotations, ns_labels, label, upstream, sidecar_port, sidecar.pod_firewall
        )
        upstream_credential = choices.upstream_credential(annotations)
        pod_overrides, override_warnings = overrides.overrides(
            annotations, sidecar, required=ns_labels.get(LABEL_INJECT) == "required"
        )
    except Unacceptable as exc:
        return Refuse(str(exc))
    warnings += [f"palisade: pod {label}: {w}" for w in override_warnings]
    if pod_overrides.vault is not None and not patch.uses_kube_api(sidecar):
        return Refuse(
            f"pod {label}: {overrides.ANNOTATION_VAULT_SECRET} needs the sidecar's"
            " ServiceAccount token to log in to Vault, which this injector's identity mode"
            " 'none' does not mount"
        )
    if upstream_credential and not patch.uses_kube_api(sidecar):
        return Refuse(
            f"pod {label}: {choices.ANNOTATION_UPSTREAM_CREDENTIAL}: {upstream_credential} needs "
            "the sidecar's ServiceAccount token, which this injector's identity mode 'none' "
            "does not mount"
        )
    if upstream_credential and spec.get("automountServiceAccountToken") is not False:
        warnings.append(
            f"palisade: pod {label} asks for per-agent cluster credentials but mounts its "
            "ServiceAccount token into every container: the MCP server could read the token "
            "that mints them; set automountServiceAccountToken: false (the sidecar gets its "
            "own projected token)"
        )
    probe_rewrites: tuple[ProbeRewrite, ...] = ()
    if firewall:
        probe_rewrites, probe_warnings = probes.plan(app, app_index, firewall)
        warnings += probe_warnings
        # A probe rerouted through the sidecar is replaced whole: no port rewrite in it.
        moved = tuple(f"{r.parent}/{r.kind}/" for r in probe_rewrites)
        rewrites = [(path, n) for path, n in rewrites if not path.startswith(moved)]
    elif hostport:
        warnings.append(
            f"palisade: port {port_name!r} of pod {label} has a hostPort, which still "
            "reaches the MCP server directly (the packet filter is off)"
        )
    if firewall_state == "opted-out":
        warnings.append(
            f"palisade: pod {label} opts out of the packet filter "
            f"({choices.ANNOTATION_FIREWALL}: false); other pods can reach the MCP server's "
            "own port around the sidecar"
        )
    elif firewall_state.startswith("pod-security-"):
        warnings.append(
            f"palisade: namespace {namespace} enforces the {firewall_state[13:]} Pod Security "
            "Standard, which forbids the packet filter's NET_ADMIN: pod "
            f"{label} gets the sidecar without it; only a NetworkPolicy keeps other pods from "
            "the MCP server's own port"
        )
    volumes = _as_list(spec.get("volumes"))
    taken = sorted(
        {str(_as_dict(v).get("name")) for v in volumes}
        & {v["name"] for v in patch.volumes(sidecar, bool(firewall), pod_overrides)}
    )
    if taken:
        return Refuse(
            f"pod {label} has a volume named {', '.join(map(repr, taken))}, a name the Palisade "
            "injector uses for the sidecar's own volumes; a pod's volume is never given to the "
            "sidecar. Rename that volume."
        )
    app_mounts = [_as_dict(m) for m in _as_list(app.get("volumeMounts"))]
    needs_socket = not any(m.get("mountPath") == SOCKET_DIR for m in app_mounts)
    if not needs_socket:
        warnings.append(
            f"palisade: the MCP container of pod {label} mounts its own volume at {SOCKET_DIR}; "
            "it does not see the sidecar's check socket there"
        )
    token_mount, token_warning = provenance.token_mount(app, volumes)
    if token_warning:
        warnings.append(f"palisade: pod {label}: {token_warning}")
    inits = _as_list(spec.get("initContainers"))
    native = settings.native
    app_name = str(app.get("name") or "")
    status = injected_status(
        container=sidecar.container_name,
        native=native,
        port=sidecar_port,
        port_name=port_name,
        upstream=upstream,
        audience=audience,
        firewall_state=firewall_state,
        app=app_name,
    )
    return Plan(
        pod_label=label,
        namespace=namespace,
        server_name=server_name,
        tenant=str(ns_labels.get(LABEL_TENANT) or namespace),
        native=native,
        sidecar_port=sidecar_port,
        upstream_port=upstream,
        port_name=port_name,
        app_index=app_index,
        takeover=takeover,
        port_rewrites=tuple(rewrites),
        app_has_volume_mounts=isinstance(app.get("volumeMounts"), list),
        app_needs_socket_mount=needs_socket,
        token_mount=token_mount,
        has_annotations=isinstance(meta.get("annotations"), dict),
        has_volumes=isinstance(spec.get("volumes"), list),
        has_init_containers=isinstance(spec.get("initContainers"), list),
        status=status,
        warnings=tuple(warnings),
        audience=audience,
        firewall_ports=firewall,
        probe_rewrites=probe_rewrites,
        guaranteed=shapes.guaranteed(containers, inits),
        termination_grace_s=_grace(spec.get("terminationGracePeriodSeconds")),
        upstream_credential=upstream_credential,
        overrides=pod_overrides,
    )


def _grace(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
