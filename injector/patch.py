"""The patch builder: an injection ``Plan`` -> RFC 6902 JSON Patch operations.

Pure. Only emits operations; every fact about the pod it needs is already in
the plan (indices, which lists exist). Conventions, as in vault-k8s:
- a list that is absent is added whole (``add /spec/volumes [...]``); a list
  that is present is appended to with ``/-`` (or, for the native sidecar,
  inserted at index 0 so it starts before the other init containers);
- map keys in paths are escaped per RFC 6901 (``~`` -> ``~0``, ``/`` -> ``~1``),
  which matters for annotation keys such as ``palisade.dev/status``;
- operations refer to the pod exactly as received; nothing is removed except
  the name of the port the sidecar takes over, and the ``tcpSocket`` of a probe
  rerouted through the sidecar (it becomes an ``httpGet``);
- every volume the sidecar mounts is one it adds: the model refuses a pod whose
  own volume has one of these names, so none is ever reused.

Init containers, in the order they run: ``palisade-init`` (the packet filter)
first, then the native sidecar, then the pod's own; so the filter is in place
before anything listens, and the sidecar is up before the MCP server starts.
"""

from __future__ import annotations

from typing import Any

from injector import probes
from injector.overrides import Overrides
from injector.plan import (
    ANNOTATION_STATUS,
    AUDIT_DIR,
    BUNDLE_DIR,
    SOCKET_DIR,
    VOLUME_AUDIT,
    VOLUME_BUNDLE_SOURCE,
    VOLUME_BUNDLES,
    VOLUME_INIT_RUN,
    VOLUME_KUBE_API,
    VOLUME_SOCKET,
    VOLUME_UPSTREAM_CREDENTIAL,
    Plan,
)
from injector.review import PatchOp
from injector.settings import SidecarSettings
from injector.trust import sidecar_env_value

SOCKET_FILE = f"{SOCKET_DIR}/check.sock"
KUBE_API_DIR = "/var/run/secrets/palisade.dev/kube-api"
IN_CLUSTER_API = "https://kubernetes.default.svc"
BUNDLE_SOURCE_DIR = "/etc/palisade/bundle"
UPSTREAM_CREDENTIAL_DIR = "/var/run/secrets/palisade.dev/upstream"
#: The packet filter's resources (requests, limits).
INIT_REQUESTS = {"cpu": "10m", "memory": "32Mi"}
INIT_LIMITS = {"cpu": "500m", "memory": "64Mi"}

_DOWNWARD_ENV = (
    ("PALISADE_POD_NAME", "metadata.name"),
    ("PALISADE_POD_NAMESPACE", "metadata.namespace"),
    ("PALISADE_POD_UID", "metadata.uid"),
    ("PALISADE_NODE_NAME", "spec.nodeName"),
    ("PALISADE_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ("PALISADE_POD_IP", "status.podIP"),
)


def escape(key: str) -> str:
    """Escape one JSON Pointer reference token (RFC 6901 section 3)."""
    return key.replace("~", "~0").replace("/", "~1")


def bundle_configmap(sidecar: SidecarSettings) -> str | None:
    """The bundle ConfigMap the sidecar reads, or None (a distributor pushes bundles)."""
    return None if sidecar.distributor else sidecar.bundle_configmap


#: The distributor authenticates each sidecar by a token of its pod's ServiceAccount
#: for this audience (docs/distributor.md), projected into the kube-api volume.
DISTRIBUTOR_AUDIENCE = "palisade-distributor"
DISTRIBUTOR_TOKEN_FILE = f"{KUBE_API_DIR}/distributor-token"


def uses_kube_api(sidecar: SidecarSettings) -> bool:
    """Whether the sidecar needs the token volume: identity through the API server, or
    a token that proves to the distributor which pod it is."""
    return sidecar.identity != "none" or bool(sidecar.distributor)


def volumes(
    sidecar: SidecarSettings | None = None,
    firewall: bool = False,
    pod: Overrides | None = None,
) -> list[dict[str, Any]]:
    """The volumes the sidecar (and the packet filter) need, in the order they are added;
    ``pod``: the pod's own overrides (a credential Secret)."""
    found: list[dict[str, Any]] = [
        {"name": VOLUME_SOCKET, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": VOLUME_BUNDLES, "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": VOLUME_AUDIT, "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    name = bundle_configmap(sidecar) if sidecar is not None else None
    if name:
        # Not optional: a pod whose namespace lacks the ConfigMap stays Pending
        # (the kubelet says why) rather than running with no policy.
        found.append({"name": VOLUME_BUNDLE_SOURCE, "configMap": {"name": name}})
    if sidecar is not None and uses_kube_api(sidecar):
        # What the kubelet mounts as kube-api-access-*: a bound token of the pod's
        # ServiceAccount (API server audience, rotated by the kubelet) and the
        # cluster CA from the kube-root-ca.crt ConfigMap every namespace has.
        found.append(
            {
                "name": VOLUME_KUBE_API,
                "projected": {
                    "defaultMode": 0o444,
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                    ],
                },
            }
        )
        if sidecar.distributor:
            found[-1]["projected"]["sources"].append(
                {
                    "serviceAccountToken": {
                        "path": "distributor-token",
                        "audience": DISTRIBUTOR_AUDIENCE,
                        "expirationSeconds": 3600,
                    }
                }
            )
    if firewall:
        found.append(
            {"name": VOLUME_INIT_RUN, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
        )
    if pod is not None and pod.credential_secret is not None:
        name, key = pod.credential_secret
        found.append(
            {
                "name": VOLUME_UPSTREAM_CREDENTIAL,
                "secret": {
                    "secretName": name,
                    "items": [{"key": key, "path": "credential"}],
                    "defaultMode": 0o440,
                },
            }
        )
    return found


def identity_args(plan: Plan, sidecar: SidecarSettings) -> list[str]:
    """How the sidecar verifies callers: bound to this server's audience, never --dev-auth."""
    args = ["--audience", plan.audience]
    api = ["--kube-token-file", f"{KUBE_API_DIR}/token", "--kube-ca-file", f"{KUBE_API_DIR}/ca.crt"]
    if sidecar.identity == "cluster-oidc":
        args += ["--cluster-issuer", "discover", "--kube-api-server", IN_CLUSTER_API, *api]
    elif sidecar.identity == "token-review":
        args += ["--token-review-api", IN_CLUSTER_API, *api]
    return args


def sidecar_args(plan: Plan, sidecar: SidecarSettings) -> list[str]:
    """``palisade sidecar ...``: listen on the taken-over port, forward to 127.0.0.1.

    The last good bundle is kept in the bundle-cache volume (``--state-dir``);
    bundles arrive from the distributor (``PALISADE_DISTRIBUTOR``, verified with
    ``PALISADE_TRUSTED_KEY``) or, without one, from the bundle ConfigMap mounted
    at ``BUNDLE_SOURCE_DIR`` (``--bundle``).
    """
    args = [
        "sidecar",
        "--listen",
        f"0.0.0.0:{plan.sidecar_port}",
        "--upstream",
        f"http://127.0.0.1:{plan.upstream_port}",
        "--server-name",
        plan.server_name,
        "--socket",
        SOCKET_FILE,
        "--state-dir",
        BUNDLE_DIR,
        "--audit-dir",
        AUDIT_DIR,
    ]
    if bundle_configmap(sidecar):
        args += ["--bundle", BUNDLE_SOURCE_DIR]
    args += identity_args(plan, sidecar)
    if plan.upstream_credential:
        # minted with the pod's own token (its Role names the agents' accounts)
        args += ["--upstream-credential", plan.upstream_credential]
        args += ["--kube-api-server", IN_CLUSTER_API, "--kube-token-file", f"{KUBE_API_DIR}/token"]
        args += ["--kube-ca-file", f"{KUBE_API_DIR}/ca.crt"]
    args += override_args(plan.overrides)
    # Extra arguments last: a later flag wins, so the chart can override any of these.
    return args + list(sidecar.extra_args)


def override_args(pod: Overrides) -> list[str]:
    """The sidecar flags of a pod's annotations (injector/overrides.py)."""
    args: list[str] = []
    if pod.quarantine:
        args += ["--quarantine", pod.quarantine]
    if pod.credential_secret is not None:
        args += ["--upstream-credential-file", f"{UPSTREAM_CREDENTIAL_DIR}/credential"]
    if pod.vault is not None:
        v = pod.vault
        args += ["--vault-addr", v.addr, "--vault-kv-mount", v.mount]
        args += ["--vault-secret-path", v.path, "--vault-secret-field", v.field]
        args += ["--vault-role", v.role, "--vault-sa-token-file", f"{KUBE_API_DIR}/token"]
    if pod.credential_header:
        args += ["--upstream-credential-header", pod.credential_header]
        if pod.credential_header.lower() != "authorization":
            args += ["--upstream-credential-scheme", ""]  # another header: the value as it is
    return args


def resources(
    requests: dict[str, str], limits: dict[str, str], guaranteed: bool
) -> dict[str, dict[str, str]]:
    """Requests and limits; in a Guaranteed pod requests == limits, so that it stays so."""
    if guaranteed:
        return {"requests": dict(limits), "limits": dict(limits)}
    return {"requests": dict(requests), "limits": dict(limits)}


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def sidecar_container(plan: Plan, sidecar: SidecarSettings) -> dict[str, Any]:
    """The injected container, ready to be added as it is."""
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
        for name, path in _DOWNWARD_ENV
    ]
    env += [
        {"name": "PALISADE_TENANT", "value": plan.tenant},
        {"name": "PALISADE_MCP_SERVER", "value": plan.server_name},
    ]
    if sidecar.distributor:
        # An environment variable, not a flag: the sidecar reads PALISADE_<FLAG>
        # defaults, and an unknown variable cannot break its command line.
        env.append({"name": "PALISADE_DISTRIBUTOR", "value": sidecar.distributor})
        # Re-read by the sidecar on every connect (the kubelet rotates it).
        env.append({"name": "PALISADE_DISTRIBUTOR_TOKEN_FILE", "value": DISTRIBUTOR_TOKEN_FILE})
        # The public keys that sign bundles, inline (a pod in another namespace
        # cannot mount the release's ConfigMap); the last good bundle and the
        # audit spool live in --state-dir on the bundle-cache volume.
        env.append(
            {"name": "PALISADE_TRUSTED_KEY", "value": sidecar_env_value(sidecar.trusted_keys)}
        )
        if sidecar.distributor_ca:
            # TLS to the distributor, verified with this CA (inline for the same reason)
            env.append({"name": "PALISADE_DISTRIBUTOR_CA", "value": sidecar.distributor_ca})
    elif bundle_configmap(sidecar) and sidecar.trusted_keys:
        # The bundle from the pod's namespace is verified with keys from the injector,
        # never with anything the namespace itself provides.
        env.append(
            {"name": "PALISADE_TRUSTED_KEY", "value": sidecar_env_value(sidecar.trusted_keys)}
        )
    mounts: list[dict[str, Any]] = [
        {"name": VOLUME_SOCKET, "mountPath": SOCKET_DIR},
        {"name": VOLUME_BUNDLES, "mountPath": BUNDLE_DIR},
        {"name": VOLUME_AUDIT, "mountPath": AUDIT_DIR},
    ]
    if bundle_configmap(sidecar):
        mounts.append(
            {"name": VOLUME_BUNDLE_SOURCE, "mountPath": BUNDLE_SOURCE_DIR, "readOnly": True}
        )
    if uses_kube_api(sidecar):
        mounts.append({"name": VOLUME_KUBE_API, "mountPath": KUBE_API_DIR, "readOnly": True})
    if plan.overrides.credential_secret is not None:
        mounts.append(
            {
                "name": VOLUME_UPSTREAM_CREDENTIAL,
                "mountPath": UPSTREAM_CREDENTIAL_DIR,
                "readOnly": True,
            }
        )
    if plan.probe_rewrites:
        env.append(
            {"name": "PALISADE_APP_PROBES", "value": probes.sidecar_table(plan.probe_rewrites)}
        )
    if plan.token_mount is not None:
        # Containers added by a webhook miss the ServiceAccount token mount (the
        # ServiceAccount admission plugin ran before us): reuse the app's.
        mounts.append({**plan.token_mount, "readOnly": True})
    container: dict[str, Any] = {
        "name": sidecar.container_name,
        "image": sidecar.image,
        "imagePullPolicy": sidecar.pull_policy,
        "command": ["palisade"],
        "args": sidecar_args(plan, sidecar),
        "ports": [{"name": plan.port_name, "containerPort": plan.sidecar_port, "protocol": "TCP"}],
        "env": env,
        "volumeMounts": mounts,
        "startupProbe": _probe("/healthz", plan.sidecar_port, 1, 30),
        "livenessProbe": _probe("/healthz", plan.sidecar_port, 10, 3),
        "readinessProbe": _probe("/readyz", plan.sidecar_port, 5, 3),
        "resources": resources(
            {
                "cpu": plan.overrides.cpu_request or sidecar.cpu_request,
                "memory": plan.overrides.memory_request or sidecar.memory_request,
            },
            {
                "cpu": plan.overrides.cpu_limit or sidecar.cpu_limit,
                "memory": plan.overrides.memory_limit or sidecar.memory_limit,
            },
            plan.guaranteed,
        ),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": sidecar.run_as_user,
            "runAsGroup": sidecar.run_as_user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if plan.native:
        container["restartPolicy"] = "Always"
    return container


def init_container(plan: Plan, sidecar: SidecarSettings) -> dict[str, Any]:
    """``palisade-init``: installs the pod's packet filter (injector/firewall.py), then exits.

    Root only for iptables (in the pod's own network namespace), with NET_ADMIN and
    no other capability: the nft backend needs nothing more (the legacy one would
    need NET_RAW too, which is not granted).
    """
    args = ["pod-firewall"]
    for port in plan.firewall_ports:
        args += ["--protect-port", str(port)]
    return {
        "name": sidecar.init_container_name,
        "image": sidecar.image,
        "imagePullPolicy": sidecar.pull_policy,
        "command": ["palisade"],
        "args": args,
        "volumeMounts": [{"name": VOLUME_INIT_RUN, "mountPath": "/run"}],
        "resources": resources(INIT_REQUESTS, INIT_LIMITS, plan.guaranteed),
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def probe_ops(plan: Plan) -> list[PatchOp]:
    """Point each rerouted probe at the sidecar's ``/palisade/app-health/...`` route."""
    ops: list[PatchOp] = []
    for rewrite in plan.probe_rewrites:
        handler = rewrite.handler(plan.sidecar_port)
        if rewrite.kind == "httpGet":
            ops.append({"op": "replace", "path": f"{rewrite.parent}/httpGet", "value": handler})
        else:
            ops.append({"op": "remove", "path": f"{rewrite.parent}/{rewrite.kind}"})
            ops.append({"op": "add", "path": f"{rewrite.parent}/httpGet", "value": handler})
    return ops


#: What the sidecar needs between SIGTERM and SIGKILL: its default ``--shutdown-grace``
#: (20 s) for the calls in flight, then at least 5 s to deliver the audit spool to the
#: distributor (the pod's volumes go with it), and its own margin. The API server's
#: default period (30 s) covers it; a shorter one the pod asks for is raised to this.
TERMINATION_GRACE_S = 30


def build(plan: Plan, sidecar: SidecarSettings) -> list[PatchOp]:
    """All operations for one injection, in an order valid against the received pod."""
    ops: list[PatchOp] = []
    app = f"/spec/containers/{plan.app_index}"
    if plan.takeover is not None:
        ref = plan.takeover
        ops.append(
            {"op": "remove", "path": f"/spec/containers/{ref.container}/ports/{ref.port}/name"}
        )
    for path, number in plan.port_rewrites:
        ops.append({"op": "replace", "path": path, "value": number})
    ops += probe_ops(plan)
    socket_mount = {"name": VOLUME_SOCKET, "mountPath": SOCKET_DIR, "readOnly": True}
    if not plan.app_needs_socket_mount:
        pass  # the MCP container mounts its own volume there: leave it be (warned)
    elif plan.app_has_volume_mounts:
        ops.append({"op": "add", "path": f"{app}/volumeMounts/-", "value": socket_mount})
    else:
        ops.append({"op": "add", "path": f"{app}/volumeMounts", "value": [socket_mount]})
    # The model refused any pod that already has a volume of one of these names:
    # a pod's own volume is never reused (a writable hostPath as the audit spool).
    firewall = bool(plan.firewall_ports)
    added = volumes(sidecar, firewall, plan.overrides)
    if not plan.has_volumes:
        ops.append({"op": "add", "path": "/spec/volumes", "value": added})
    else:
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in added]
    container = sidecar_container(plan, sidecar)
    # Init containers run in list order: the filter, then the native sidecar, then the pod's.
    first = [init_container(plan, sidecar)] if firewall else []
    if plan.native:
        first.append(container)
    if plan.has_init_containers:
        ops += [
            {"op": "add", "path": "/spec/initContainers/0", "value": c} for c in reversed(first)
        ]
    elif first:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": first})
    if not plan.native:
        ops.append({"op": "add", "path": "/spec/containers/-", "value": container})
    if plan.termination_grace_s is not None and plan.termination_grace_s < TERMINATION_GRACE_S:
        path = "/spec/terminationGracePeriodSeconds"
        ops.append({"op": "replace", "path": path, "value": TERMINATION_GRACE_S})
    ops.append(annotation_op(plan.has_annotations, ANNOTATION_STATUS, plan.status))
    return ops


def annotation_op(has_annotations: bool, key: str, value: str) -> PatchOp:
    """Set one annotation: into the map when present, else the map added whole."""
    if has_annotations:
        return {"op": "add", "path": f"/metadata/annotations/{escape(key)}", "value": value}
    return {"op": "add", "path": "/metadata/annotations", "value": {key: value}}
