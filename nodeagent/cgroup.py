"""Host PID -> pod UID and container id, from the text of ``/proc/<pid>/cgroup``.

A pure parser (text in, identity out) plus a small reader for the real file.
Formats understood (each one tested on real-world samples, tests/nodeagent/test_cgroup.py):

* cgroup v2, one line ``0::<path>``; cgroup v1, ``<id>:<controllers>:<path>`` per
  hierarchy (the ``memory``/``pids``/``cpu`` lines are preferred, all are tried);
  hybrid hosts (v1 hierarchies plus a cgroup2 at ``/sys/fs/cgroup/unified``),
  whose ``0::`` line may be ``/`` or name the same pod as the v1 lines.
* kubelet's ``cgroupfs`` driver: ``/kubepods[/<qos>]/pod<uid>/<container>``, where
  ``<container>`` is a bare 64-hex id (containerd, docker) or ``crio-<id>`` (CRI-O).
* kubelet's ``systemd`` driver:
  ``/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/``
  then ``cri-containerd-<id>.scope``, ``crio-<id>.scope`` or ``docker-<id>.scope``;
  also containerd's ``<pod slice>:cri-containerd:<id>`` form and kubelets nested
  under another root (``/kubelet.slice/kubelet-kubepods.slice/...``, kind, k3s).
* the reader's own cgroup namespace. Under cgroup v2 containerd gives every
  unprivileged container a private cgroup namespace, so an agent in a pod reads
  paths relative to its own container's cgroup: another pod's process as
  ``/../../<qos>/pod<uid>/<id>`` (the pod is still named), a host process as
  ``/../../../..`` or ``/../../../../system.slice/x.service``, a sibling container
  of its own pod as ``/../<id>``, and its own processes as ``/``. The last two name
  no pod; :class:`Namespace` tells whether paths are relative and, when the
  downward API gave it, the reader's own pod UID, so they are placed in the
  reader's own pod rather than called host processes.
* a cgroup removed while a process is still in it (`` (deleted)`` suffix).

A container id is whatever containerd/CRI-O named the cgroup: a workload
container's id (as in the pod's ``status.containerStatuses``) or the sandbox's
(the pause container), which no pod status lists; the pod is known either way.

Anything else (a host process, the ``kubepods`` slice itself, CRI-O's
``crio-conmon-*`` monitor) yields no container; nothing is guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
#: Static (mirror) pods carry a 32-hex config hash as their UID.
_POD = re.compile(rf"(?:^|[-/])pod({_UUID}|[0-9a-f]{{32}})(?:\.slice)?$")
_HEX64 = r"[0-9a-f]{64}"
_CONTAINER = [
    (re.compile(rf"^cri-containerd-({_HEX64})\.scope$"), "containerd"),
    (re.compile(rf"^crio-({_HEX64})(?:\.scope)?$"), "cri-o"),
    (re.compile(rf"^docker-({_HEX64})\.scope$"), "docker"),
    (re.compile(rf"^({_HEX64})$"), ""),
]
#: ``kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`` (containerd, systemd driver).
_COLON_FORM = re.compile(rf"^(.*\.slice):(cri-containerd|crio|docker):({_HEX64})$")
_PREFERRED_V1 = ("memory", "pids", "cpu", "cpuacct", "devices")
_DELETED = " (deleted)"
#: A ``/proc/<pid>/cgroup`` file is a line per hierarchy; anything longer is not one.
MAX_CGROUP_FILE_BYTES = 64 * 1024

#: ``pod``: the path names a pod; ``own-pod``: the reader's own pod, seen through
#: its cgroup namespace; ``host``: no pod at all.
Kind = Literal["pod", "own-pod", "host"]


@dataclass(frozen=True, slots=True)
class CgroupIdentity:
    """Who a process belongs to, as its cgroup says."""

    pod_uid: str
    #: Bare container id (no ``containerd://`` prefix); "" for a pod-level process.
    container_id: str
    #: ``containerd``, ``cri-o``, ``docker`` or "" when the format does not say.
    runtime: str
    cgroup_version: int
    #: kubelet cgroup driver: ``systemd`` or ``cgroupfs``.
    driver: str


@dataclass(frozen=True, slots=True)
class Namespace:
    """The cgroup namespace of the process reading ``/proc``: it shapes every path read."""

    #: True when paths are relative to the reader's own container cgroup (a private
    #: cgroup namespace, the default for containers on cgroup v2).
    private: bool = False
    #: The reader's own pod UID (downward API ``metadata.uid``), "" when not given.
    pod_uid: str = ""

    @classmethod
    def detect(cls, proc_root: str | Path = "/proc", pod_uid: str = "") -> Namespace:
        """Private when host PID 1's cgroup lies above the reader's namespace root.

        With ``hostPID`` PID 1 is the host's init, whose path then starts with
        ``/..``; in the host namespace it is absolute (``/init.scope`` or ``/``).
        """
        try:
            text = (Path(proc_root) / "1" / "cgroup").read_text()[:MAX_CGROUP_FILE_BYTES]
        except OSError:
            text = ""
        paths = [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]
        return cls(private=any(_is_relative_up(p) for p in paths), pod_uid=pod_uid)


HOST = Namespace()


@dataclass(frozen=True, slots=True)
class Location:
    """Where a process's cgroup file puts it."""

    kind: Kind
    #: Pods named by the path, outermost first (more than one only for a kubelet
    #: nested inside another cluster's pod); empty for ``host`` and for ``own-pod``
    #: when the reader does not know its own pod UID.
    pods: tuple[CgroupIdentity, ...] = ()
    #: The cgroup path the verdict was read from ("" when the file had none).
    path: str = ""

    @property
    def identity(self) -> CgroupIdentity | None:
        return self.pods[0] if self.pods else None


def _normalize_uid(raw: str) -> str:
    return raw.replace("_", "-")


def _is_relative_up(path: str) -> bool:
    return path == "/.." or path.startswith("/../")


def _container(child: str) -> tuple[str, str] | None:
    for pattern, runtime in _CONTAINER:
        m = pattern.match(child)
        if m:
            return m.group(1), runtime
    return None


def parse_path_all(path: str, version: int) -> tuple[CgroupIdentity, ...]:
    """Every pod (with its container) named on one cgroup path, outermost first."""
    path = path.removesuffix(_DELETED)
    parts = [p for p in path.split("/") if p and p != ".."]
    found: list[CgroupIdentity] = []
    for i, part in enumerate(parts):
        colon = _COLON_FORM.match(part)
        if colon:
            pod = _POD.search(colon.group(1))
            if pod is not None:
                runtime = {"cri-containerd": "containerd", "crio": "cri-o"}.get(
                    colon.group(2), colon.group(2)
                )
                uid = _normalize_uid(pod.group(1))
                found.append(CgroupIdentity(uid, colon.group(3), runtime, version, "systemd"))
            continue
        pod = _POD.search(part)
        if pod is None:
            continue
        driver = "systemd" if part.endswith(".slice") else "cgroupfs"
        uid = _normalize_uid(pod.group(1))
        # crio-conmon-*, a sandbox-level helper, or an unknown runtime: the pod is
        # known but the container is not; say so instead of guessing.
        child = _container(parts[i + 1]) if i + 1 < len(parts) else None
        cid, runtime = child or ("", "")
        found.append(CgroupIdentity(uid, cid, runtime, version, driver))
    return tuple(found)


def parse_path(path: str, version: int) -> CgroupIdentity | None:
    """Pod and container from one cgroup path, or ``None`` if it is not a pod's."""
    found = parse_path_all(path, version)
    return found[0] if found else None


def _lines(text: str) -> tuple[str | None, dict[str, str]]:
    """The v2 path (``None`` without a ``0::`` line) and the v1 path per controller."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text[:MAX_CGROUP_FILE_BYTES].splitlines():
        fields = line.strip().split(":", 2)
        if len(fields) != 3:
            continue
        hid, controllers, path = fields
        if hid == "0" and controllers == "":
            v2 = path
        else:
            for c in controllers.split(","):
                v1.setdefault(c.removeprefix("name="), path)
    return v2, v1


def _own_pod(path: str, version: int, ns: Namespace) -> Location | None:
    """A path inside the reader's own namespace (``/``) or a sibling of it (``/../<id>``)."""
    if not ns.private:
        return None
    parts = [p for p in path.removesuffix(_DELETED).split("/") if p]
    ups = len(parts) - len([p for p in parts if p != ".."])
    if parts[:ups] != [".."] * ups:
        return None  # ".." only ever leads a path the kernel writes
    if ups == 0:
        # The reader's own container (its namespace root), or a cgroup below it.
        pods = (CgroupIdentity(ns.pod_uid, "", "", version, ""),) if ns.pod_uid else ()
        return Location("own-pod", pods, path)
    if ups == 1 and len(parts) >= 2:
        # One level up from the reader's container is its pod: a sibling container
        # (or the sandbox) of the same pod.
        child = _container(parts[1])
        if child is None:
            return None
        driver = "systemd" if parts[1].endswith(".scope") else "cgroupfs"
        cid, runtime = child
        pods = (CgroupIdentity(ns.pod_uid, cid, runtime, version, driver),) if ns.pod_uid else ()
        return Location("own-pod", pods, path)
    return None


def locate(text: str, ns: Namespace = HOST) -> Location:
    """Where a whole ``/proc/<pid>/cgroup`` file puts its process."""
    v2, v1 = _lines(text)
    candidates: list[tuple[str, int]] = []
    if v2 is not None and v2 not in ("", "/"):
        candidates.append((v2, 2))
    ordered = [v1[c] for c in _PREFERRED_V1 if c in v1] + list(v1.values())
    candidates += [(p, 1) for p in dict.fromkeys(ordered)]
    for path, version in candidates:
        pods = parse_path_all(path, version)
        if pods:
            return Location("pod", pods, path)
    # No path names a pod. Which one speaks for the process: the unified one, else
    # the preferred v1 controller's (the v2 line of a hybrid host is often "/").
    if v2 is not None and (v2 not in ("", "/") or not v1):
        primary, version = v2, 2
    elif ordered:
        primary, version = ordered[0], 1
    else:
        return Location("host")
    own = _own_pod(primary, version, ns)
    return own if own is not None else Location("host", (), primary)


def parse(text: str, ns: Namespace = HOST) -> CgroupIdentity | None:
    """The (outermost) pod identity in a whole ``/proc/<pid>/cgroup`` file, or ``None``."""
    return locate(text, ns).identity


class CgroupReader(Protocol):
    """Reads the cgroup file of a host PID; ``None`` when the process is gone."""

    def read(self, pid: int) -> str | None: ...


class ProcCgroupReader:
    """The real ``/proc`` (or the host's, mounted elsewhere, e.g. ``/host/proc``)."""

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self._root = Path(proc_root)

    @property
    def root(self) -> Path:
        return self._root

    def exists(self, pid: int) -> bool:
        return (self._root / str(pid)).is_dir()

    def read(self, pid: int) -> str | None:
        try:
            with (self._root / str(pid) / "cgroup").open("rb") as f:
                return f.read(MAX_CGROUP_FILE_BYTES).decode("utf-8", "replace")
        except OSError:  # gone (ENOENT, ESRCH), not a directory, no access
            return None
