"""The machine-wide lock and the state file of the real node.

One node per machine: kubelet, containerd and CNI write fixed paths whatever
their flags say (``/var/lib/kubelet/device-plugins``, ``/var/log/pods``,
``/run/containerd/s``, ``/var/lib/cni``, the ``kubepods`` cgroups). So:

- :class:`MachineLock` is an ``flock`` on ``/run/lock/palisade-node.lock``,
  held while a node starts, runs in-process, and is torn down; the holder's
  pid is written into the file so a waiter's error names it.
- :class:`NodeState` (``/run/palisade-node.json``) is written, under the lock,
  before anything is created: the namespace, the work directory, the pids as
  they start, and which of the fixed paths and cgroups existed beforehand.
  Teardown removes what is new since then, so it works after a crash (the next
  start, or ``python -m tests.harness.node down``, reads the file) and leaves
  alone what was there before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

LOCK_PATH = Path("/run/lock/palisade-node.lock")
STATE_PATH = Path("/run/palisade-node.json")
#: Paths every node writes regardless of its own directories.
FIXED_DIRS = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/run/netns",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Top-level cgroups the kubelet (cgroupfs driver) and containerd create.
NODE_CGROUPS = ("kubepods", "k8s.io")


class LockTimeout(RuntimeError):
    """Another node holds the machine-wide lock; the message names its pid."""


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "(not running)"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class MachineLock:
    """An exclusive ``flock``; waiting is bounded and the error names the holder."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, timeout: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held until release()
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "?"
                    f.close()
                    detail = _cmdline(int(holder)) if holder.isdigit() else ""
                    raise LockTimeout(
                        f"another real node holds {self.path} (pid {holder}: {detail}); "
                        f"waited {timeout:.0f}s. Only one node runs per machine; if it is a "
                        "detached one, stop it with `python -m tests.harness.node down`."
                    ) from None
                time.sleep(0.5)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> MachineLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class ProcessRecord:
    """A started child: its pid and the binary it runs (checked before a kill)."""

    pid: int
    binary: str


@dataclass
class NodeState:
    """Everything a teardown in another process needs."""

    owner_pid: int
    detached: bool
    netns: str
    host_if: str
    subnet: str
    workdir: str
    preexisting: dict[str, list[str] | None]
    """Each fixed dir's entries before start; ``None``: the dir did not exist."""
    preexisting_cgroups: list[str]
    """``<hierarchy>/<name>`` of the node cgroups that existed before start."""
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    kubeconfig: str = ""
    keep_dir: bool = False
    """Keep the work directory (logs) after teardown (``PALISADE_KUBE_KEEP=1``)."""
    server: str = ""
    started_at: float = field(default_factory=time.time)

    def save(self, path: Path = STATE_PATH) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path = STATE_PATH) -> NodeState | None:
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        procs = {k: ProcessRecord(**v) for k, v in doc.pop("processes", {}).items()}
        return cls(processes=procs, **doc)

    def owner_alive(self) -> bool:
        """The in-process owner still runs, or (detached) any recorded process does."""
        if not self.detached:
            return pid_alive(self.owner_pid)
        return any(pid_alive(p.pid) for p in self.processes.values())


def cgroup_hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """Every mounted cgroup hierarchy: the v1 controllers and the unified one."""
    if (root / "cgroup.controllers").exists():  # pure cgroup v2
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())


def snapshot_fixed_dirs(dirs: tuple[str, ...] = FIXED_DIRS) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for d in dirs:
        p = Path(d)
        out[d] = sorted(os.listdir(p)) if p.is_dir() else None
    return out


def snapshot_cgroups() -> list[str]:
    return [
        str(h / name) for h in cgroup_hierarchies() for name in NODE_CGROUPS if (h / name).is_dir()
    ]
