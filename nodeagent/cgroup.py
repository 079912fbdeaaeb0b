"""Host PID -> pod UID and container id, from the text of ``/proc/<pid>/cgroup``.

A pure parser (text in, identity out) plus a small reader for the real file.
Formats understood (each one tested on real-world samples):

* cgroup v2, one line ``0::<path>``; cgroup v1, ``<id>:<controllers>:<path>`` per
  hierarchy (the ``memory``/``pids``/``cpu`` lines are preferred, all are tried).
* kubelet's ``cgroupfs`` driver: ``/kubepods[/<qos>]/pod<uid>/<container>``, where
  ``<container>`` is a bare 64-hex id (containerd, docker) or ``crio-<id>`` (CRI-O).
* kubelet's ``systemd`` driver:
  ``/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/``
  then ``cri-containerd-<id>.scope``, ``crio-<id>.scope`` or ``docker-<id>.scope``;
  also containerd's ``<pod slice>:cri-containerd:<id>`` form and kubelets nested
  under another root (``/kubelet.slice/kubelet-kubepods.slice/...``, kind, k3s).

Anything else (a host process, the ``kubepods`` slice itself, CRI-O's
``crio-conmon-*`` monitor) yields no container; nothing is guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


def _normalize_uid(raw: str) -> str:
    return raw.replace("_", "-")


def parse_path(path: str, version: int) -> CgroupIdentity | None:
    """Pod and container from one cgroup path, or ``None`` if it is not a pod's."""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        colon = _COLON_FORM.match(part)
        if colon:
            pod = _POD.search(colon.group(1))
            if pod is None:
                return None
            runtime = {"cri-containerd": "containerd", "crio": "cri-o"}.get(
                colon.group(2), colon.group(2)
            )
            return CgroupIdentity(
                _normalize_uid(pod.group(1)), colon.group(3), runtime, version, "systemd"
            )
        pod = _POD.search(part)
        if pod is None:
            continue
        driver = "systemd" if part.endswith(".slice") else "cgroupfs"
        uid = _normalize_uid(pod.group(1))
        if i + 1 >= len(parts):
            return CgroupIdentity(uid, "", "", version, driver)
        child = parts[i + 1]
        for pattern, runtime in _CONTAINER:
            m = pattern.match(child)
            if m:
                return CgroupIdentity(uid, m.group(1), runtime, version, driver)
        # crio-conmon-*, a sandbox-level helper, or an unknown runtime: the pod is
        # known but the container is not; say so instead of guessing.
        return CgroupIdentity(uid, "", "", version, driver)
    return None


def parse(text: str) -> CgroupIdentity | None:
    """The identity in a whole ``/proc/<pid>/cgroup`` file, or ``None``."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        fields = line.strip().split(":", 2)
        if len(fields) != 3:
            continue
        hid, controllers, path = fields
        if hid == "0" and controllers == "":
            v2 = path
        else:
            for c in controllers.split(","):
                v1.setdefault(c.removeprefix("name="), path)
    if v2 is not None and v2 not in ("", "/"):
        found = parse_path(v2, 2)
        if found is not None or not v1:
            return found
    ordered = [v1[c] for c in _PREFERRED_V1 if c in v1] + list(v1.values())
    for path in ordered:
        found = parse_path(path, 1)
        if found is not None:
            return found
    return None


class CgroupReader(Protocol):
    """Reads the cgroup file of a host PID; ``None`` when the process is gone."""

    def read(self, pid: int) -> str | None: ...


class ProcCgroupReader:
    """The real ``/proc`` (or the host's, mounted elsewhere, e.g. ``/host/proc``)."""

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self._root = Path(proc_root)

    def read(self, pid: int) -> str | None:
        try:
            return (self._root / str(pid) / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            return None
        except OSError:
            return None
