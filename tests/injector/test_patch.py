"""The patch builder, table-driven: for each pod shape, the operations (op, path) it emits.

Every case also applies the patch to the pod and checks the result is a pod
that the API server would accept: port names unique, the sidecar present once,
the status annotation set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from injector import admission
from injector.patch import escape
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from tests.injector.pods import ENABLED, apply_patch, container, pod, review

NATIVE = InjectionSettings(native_sidecar="always")
REGULAR = InjectionSettings(native_sidecar="never")
NO_FIREWALL = InjectionSettings(native_sidecar="never", sidecar=SidecarSettings(pod_firewall=False))

STATUS = "/metadata/annotations/palisade.dev~1status"
ANNOTATIONS = "/metadata/annotations"
SIDECAR_REGULAR = ("add", "/spec/containers/-")
SIDECAR_NATIVE_NEW = ("add", "/spec/initContainers")  # [palisade-init, palisade-sidecar]
INIT_NEW = ("add", "/spec/initContainers")  # [palisade-init]
INIT_FIRST = ("add", "/spec/initContainers/0")
VOLUMES_NEW = [("add", "/spec/volumes")]
#: socket, bundle cache, audit, the sidecar's API token, the packet filter's /run
VOLUMES_APPEND = [("add", "/spec/volumes/-")] * 5
#: without the packet filter: no /run volume
VOLUMES_APPEND_NO_FIREWALL = [("add", "/spec/volumes/-")] * 4


def mounts(index: int = 0, present: bool = False) -> tuple[str, str]:
    return ("add", f"/spec/containers/{index}/volumeMounts" + ("/-" if present else ""))


def unname(c: int = 0, p: int = 0) -> tuple[str, str]:
    return ("remove", f"/spec/containers/{c}/ports/{p}/name")


def via_sidecar(probe: str, c: int = 0) -> tuple[str, str]:
    """An httpGet probe of the protected port, now aimed at the sidecar."""
    return ("replace", f"/spec/containers/{c}/{probe}/httpGet")


def regular(*head: tuple[str, str], status: str = ANNOTATIONS) -> list[tuple[str, str]]:
    """The usual tail: volumes added whole, the filter, the sidecar, the status."""
    return [*head, *VOLUMES_NEW, INIT_NEW, SIDECAR_REGULAR, ("add", status)]


@dataclass
class Case:
    id: str
    pod: dict[str, Any]
    ops: list[tuple[str, str]]
    settings: InjectionSettings = field(default_factory=lambda: REGULAR)
    namespace: str = "payments"
    labels: dict[str, str] = field(default_factory=lambda: dict(ENABLED))


existing_volume = {"name": "data", "emptyDir": {}}
native_peer = {"name": "mesh-proxy", "image": "mesh:1", "restartPolicy": "Always"}
init_step = {"name": "migrate", "image": "migrate:1"}
probe_by_name = {"httpGet": {"path": "/health", "port": "mcp"}}
probe_by_number = {"httpGet": {"path": "/health", "port": 8080}}
probe_of_metrics = {"httpGet": {"path": "/metrics", "port": 9090}}
guaranteed_resources = {"limits": {"cpu": "2", "memory": "1Gi"}}

CASES = [
    Case("minimal pod, regular container", pod(), regular(unname(), mounts())),
    Case(
        "minimal pod, native sidecar after the filter",
        pod(),
        [unname(), mounts(), *VOLUMES_NEW, SIDECAR_NATIVE_NEW, ("add", ANNOTATIONS)],
        NATIVE,
    ),
    Case(
        "volumes and annotations present: appended, not replaced",
        pod(
            container("app", ("mcp", 8080), volumeMounts=[{"name": "data", "mountPath": "/d"}]),
            annotations={"team": "sre"},
            volumes=[existing_volume],
        ),
        [
            unname(),
            mounts(present=True),
            *VOLUMES_APPEND,
            INIT_NEW,
            SIDECAR_REGULAR,
            ("add", STATUS),
        ],
    ),
    Case(
        "empty annotation map gets a key, not a new map",
        pod(annotations={}),
        regular(unname(), mounts(), status=STATUS),
    ),
    Case(
        "init containers present, filter then native sidecar go first",
        pod(initContainers=[init_step]),
        [unname(), mounts(), *VOLUMES_NEW, INIT_FIRST, INIT_FIRST, ("add", ANNOTATIONS)],
        NATIVE,
    ),
    Case(
        "init containers present, regular sidecar stays among containers",
        pod(initContainers=[init_step]),
        [unname(), mounts(), *VOLUMES_NEW, INIT_FIRST, SIDECAR_REGULAR, ("add", ANNOTATIONS)],
    ),
    Case(
        "another injector's native sidecar present",
        pod(initContainers=[native_peer]),
        [unname(), mounts(), *VOLUMES_NEW, INIT_FIRST, INIT_FIRST, ("add", ANNOTATIONS)],
        NATIVE,
    ),
    Case(
        "MCP port on the second container",
        pod(container("log-shipper"), container("server", ("mcp", 3000))),
        regular(unname(1, 0), mounts(1)),
    ),
    Case(
        "several ports, the MCP one second",
        pod(container("app", ("metrics", 9090), ("mcp", 8080))),
        regular(unname(0, 1), mounts()),
    ),
    Case("no ports at all: nothing to take over", pod(container("app")), regular(mounts())),
    Case(
        "an unnamed port only: nothing to take over",
        pod(container("app", (None, 8080))),
        regular(mounts()),
    ),
    Case(
        "probes of the protected port go through the sidecar",
        pod(
            container(
                "app",
                ("mcp", 8080),
                livenessProbe=probe_by_name,
                readinessProbe=probe_by_number,
                startupProbe={"tcpSocket": {"port": "mcp"}},
            )
        ),
        regular(
            unname(),
            via_sidecar("livenessProbe"),
            via_sidecar("readinessProbe"),
            ("remove", "/spec/containers/0/startupProbe/tcpSocket"),
            ("add", "/spec/containers/0/startupProbe/httpGet"),
            mounts(),
        ),
    ),
    Case(
        "without the filter, probes on the named port are rewritten to the number",
        pod(
            container(
                "app",
                ("mcp", 8080),
                livenessProbe=probe_by_name,
                readinessProbe=probe_by_name,
                startupProbe={"tcpSocket": {"port": "mcp"}},
            )
        ),
        [
            unname(),
            ("replace", "/spec/containers/0/livenessProbe/httpGet/port"),
            ("replace", "/spec/containers/0/readinessProbe/httpGet/port"),
            ("replace", "/spec/containers/0/startupProbe/tcpSocket/port"),
            mounts(),
            *VOLUMES_NEW,
            SIDECAR_REGULAR,
            ("add", ANNOTATIONS),
        ],
        NO_FIREWALL,
    ),
    Case(
        "lifecycle hook on the protected port goes through the sidecar",
        pod(container("app", ("mcp", 8080), lifecycle={"preStop": {"httpGet": {"port": "mcp"}}})),
        regular(unname(), via_sidecar("lifecycle/preStop"), mounts()),
    ),
    Case(
        "without the filter, probes by number are left alone",
        pod(container("app", ("mcp", 8080), livenessProbe=probe_by_number)),
        [unname(), mounts(), *VOLUMES_NEW, SIDECAR_REGULAR, ("add", ANNOTATIONS)],
        NO_FIREWALL,
    ),
    Case(
        "a probe of another port (metrics) is left alone",
        pod(container("app", ("mcp", 8080), ("metrics", 9090), livenessProbe=probe_of_metrics)),
        regular(unname(), mounts()),
    ),
    Case(
        "a probe with an explicit host is left alone",
        pod(
            container(
                "app",
                ("mcp", 8080),
                livenessProbe={"httpGet": {"port": 8080, "host": "example.com"}},
            )
        ),
        regular(unname(), mounts()),
    ),
    Case(
        "an exec probe is left alone",
        pod(container("app", ("mcp", 8080), livenessProbe={"exec": {"command": ["true"]}})),
        regular(unname(), mounts()),
    ),
    Case(
        "a probe of a port named by palisade.dev/protect-ports goes through the sidecar",
        pod(
            container(
                "app",
                ("mcp", 8080),
                ("admin", 8081),
                livenessProbe={"httpGet": {"port": "admin", "path": "/live"}},
            ),
            annotations={"palisade.dev/protect-ports": "8081"},
        ),
        regular(unname(), via_sidecar("livenessProbe"), mounts(), status=STATUS),
    ),
    Case(
        "port name chosen by annotation",
        pod(
            container("app", ("http", 8000), ("mcp", 8080)),
            annotations={"palisade.dev/port": "http"},
        ),
        regular(unname(0, 0), mounts(), status=STATUS),
    ),
    Case(
        "MCP container chosen by annotation, without ports",
        pod(
            container("sidekick"),
            container("server"),
            annotations={
                "palisade.dev/mcp-container": "server",
                "palisade.dev/upstream-port": "3000",
            },
        ),
        regular(mounts(1), status=STATUS),
    ),
    Case(
        "the MCP container already mounts something at the socket path",
        pod(
            container(
                "app",
                ("mcp", 8080),
                volumeMounts=[{"name": "run", "mountPath": "/var/run/palisade"}],
            )
        ),
        regular(unname()),
    ),
    Case(
        "packet filter opted out in an enabled namespace",
        pod(annotations={"palisade.dev/pod-firewall": "false"}, volumes=[existing_volume]),
        [unname(), mounts(), *VOLUMES_APPEND_NO_FIREWALL, SIDECAR_REGULAR, ("add", STATUS)],
    ),
    Case(
        "packet filter disabled by the injector",
        pod(),
        [unname(), mounts(), *VOLUMES_NEW, SIDECAR_REGULAR, ("add", ANNOTATIONS)],
        NO_FIREWALL,
    ),
    Case(
        "hostNetwork pod: only the skip reason is recorded",
        pod(hostNetwork=True),
        [("add", ANNOTATIONS)],
    ),
    Case(
        "hostNetwork pod with annotations: the reason key is added",
        pod(annotations={"a": "b"}, hostNetwork=True),
        [("add", STATUS)],
    ),
    Case(
        "opted out in an enabled namespace", pod(annotations={"palisade.dev/inject": "false"}), []
    ),
    Case(
        "a status annotation without the sidecar is not trusted",
        pod(annotations={"palisade.dev/status": '{"state":"injected","version":1}'}),
        regular(unname(), mounts(), status=STATUS),
    ),
    Case(
        "Istio's classic layout: istio-proxy first, the MCP container without a named port",
        pod(container("istio-proxy", (None, 15090)), container("app", (None, 3000))),
        regular(mounts(1)),
    ),
    Case(
        "kubectl.kubernetes.io/default-container names the MCP container",
        pod(
            container("helper"),
            container("server", (None, 3000)),
            annotations={"kubectl.kubernetes.io/default-container": "server"},
        ),
        regular(mounts(1), status=STATUS),
    ),
    Case(
        "a Guaranteed pod: injected, and stays Guaranteed",
        pod(container("app", ("mcp", 8080), resources=guaranteed_resources)),
        regular(unname(), mounts()),
    ),
    Case(
        "a Windows pod: only the skip reason is recorded",
        pod(os={"name": "windows"}),
        [("add", ANNOTATIONS)],
    ),
    Case(
        "a pod for Windows nodes by node selector: only the skip reason",
        pod(nodeSelector={"kubernetes.io/os": "windows"}),
        [("add", ANNOTATIONS)],
    ),
    Case(
        "pod-level resources: only the skip reason is recorded",
        pod(resources={"limits": {"cpu": "1", "memory": "1Gi"}}),
        [("add", ANNOTATIONS)],
    ),
    Case(
        "a pod that must complete, without native sidecars: only the skip reason",
        pod(restartPolicy="Never"),
        [("add", ANNOTATIONS)],
    ),
    Case(
        "a pod that must complete, with native sidecars: injected",
        pod(restartPolicy="OnFailure"),
        [unname(), mounts(), *VOLUMES_NEW, SIDECAR_NATIVE_NEW, ("add", ANNOTATIONS)],
        NATIVE,
    ),
    Case("namespace not labelled", pod(), [], labels={}),
    Case(
        "namespace labelled with another value",
        pod(),
        [],
        labels={"palisade.dev/inject": "disabled"},
    ),
    Case("kube-system is never injected", pod(), [], namespace="kube-system"),
    Case("kube-node-lease is never injected", pod(), [], namespace="kube-node-lease"),
    Case("the injector's own namespace is never injected", pod(), [], namespace="palisade"),
    Case("a pod that is not an MCP server", pod(labels={"app": "web"}), []),
    Case("a pod without labels", pod(labels={}), []),
    Case(
        "a grace period too short for the audit drain is raised",
        pod(terminationGracePeriodSeconds=5),
        [
            unname(),
            mounts(),
            *VOLUMES_NEW,
            INIT_NEW,
            SIDECAR_REGULAR,
            ("replace", "/spec/terminationGracePeriodSeconds"),
            ("add", ANNOTATIONS),
        ],
    ),
    Case(
        "a long enough grace period is left alone",
        pod(terminationGracePeriodSeconds=30),
        regular(unname(), mounts()),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_patch_operations_for_each_pod_shape(case: Case) -> None:
    answer = admission.serve(review(case.pod, namespace=case.namespace), case.labels, case.settings)
    assert answer["response"]["allowed"] is True
    ops = decode_patch(answer)
    assert [(op["op"], op["path"]) for op in ops] == case.ops
    patched = apply_patch(case.pod, ops)
    spec = patched["spec"]
    everything = spec["containers"] + spec.get("initContainers", [])
    names = [p["name"] for c in everything for p in c.get("ports", []) if "name" in p]
    assert len(names) == len(set(names)), "port names must stay unique in the pod"
    sidecars = [c for c in everything if c["name"] == "palisade-sidecar"]
    assert len(sidecars) <= 1
    container_names = [c["name"] for c in everything]
    assert len(container_names) == len(set(container_names)), "container names stay unique"
    volume_names = [v["name"] for v in spec.get("volumes", [])]
    assert len(volume_names) == len(set(volume_names)), "volume names stay unique"
    if ops:
        assert "palisade.dev/status" in patched["metadata"]["annotations"]
    inits = [c["name"] for c in spec.get("initContainers", [])]
    if "palisade-init" in inits:
        assert inits[0] == "palisade-init", "the packet filter runs before anything else"
        if "palisade-sidecar" in inits:
            assert inits[1] == "palisade-sidecar", "then the native sidecar, then the pod's own"


@pytest.mark.parametrize("case", [c for c in CASES if c.ops], ids=lambda c: c.id)
def test_patching_twice_changes_nothing_more(case: Case) -> None:
    first = admission.serve(review(case.pod, namespace=case.namespace), case.labels, case.settings)
    patched = apply_patch(case.pod, decode_patch(first))
    again = admission.serve(review(patched, namespace=case.namespace), case.labels, case.settings)
    assert decode_patch(again) == []


def test_there_are_at_least_twenty_pod_shapes() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    ("key", "escaped"),
    [
        ("palisade.dev/status", "palisade.dev~1status"),
        ("a~b", "a~0b"),
        ("x/~y", "x~1~0y"),
        ("~1", "~01"),
        ("plain", "plain"),
    ],
)
def test_annotation_keys_are_escaped_as_json_pointer_tokens(key: str, escaped: str) -> None:
    assert escape(key) == escaped
