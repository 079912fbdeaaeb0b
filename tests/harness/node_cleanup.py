"""Leave the host as it was: the forced half of the real node's teardown.

:func:`sweep` works from a :class:`~tests.harness.node_state.NodeState` alone,
so it serves three callers the same way: the end of a normal teardown (after
pods were deleted and processes stopped gracefully), the start of the next
node after a run that was killed outright, and ``python -m tests.harness.node
down``. Steps, in order (each one is a no-op when there is nothing to do):

1. stop the recorded processes by pid (SIGTERM to the group, SIGKILL after a
   grace period), checking first that the pid still runs the recorded binary;
2. SIGKILL whatever is left in the node's network namespace (containerd shims)
   and in the node's cgroups (container processes);
3. unmount everything under the work directory and new mounts under the fixed
   paths, innermost (latest) first;
4. delete the network namespace (the veth pair goes with it);
5. remove the ``kubepods`` / ``k8s.io`` cgroup trees depth-first, in every
   v1 hierarchy and the unified one, when they are new since the start;
6. remove the entries of the fixed paths that are new since the start;
7. remove the work directory (refused while anything is still mounted in it)
   and the state file.

What could not be cleaned is raised as one :class:`CleanupError` listing it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from tests.harness.netns import NETNS_DIR, ip
from tests.harness.node_state import (
    NODE_CGROUPS,
    STATE_PATH,
    NodeState,
    ProcessRecord,
    cgroup_hierarchies,
    pid_alive,
)

log = logging.getLogger(__name__)


class CleanupError(RuntimeError):
    """Teardown left something behind; the message lists what."""


def _runs(record: ProcessRecord) -> bool:
    """The pid still runs the recorded binary (or the nsenter that execs it)."""
    if not pid_alive(record.pid):
        return False
    try:
        exe = os.readlink(f"/proc/{record.pid}/exe")
    except OSError:
        return False
    return exe == record.binary or os.path.basename(exe) == "nsenter"


def stop_pid(record: ProcessRecord, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``record``, SIGKILL it after ``grace`` seconds."""
    if not _runs(record):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pid_alive(record.pid):
            time.sleep(0.1)
        if not pid_alive(record.pid):
            return


def _kill_all(pids: Iterable[int], what: str) -> int:
    n = 0
    for pid in pids:
        if pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            n += 1
    if n:
        log.info("killed %d leftover process(es) %s", n, what)
    return n


def netns_pids(name: str) -> list[int]:
    if not (NETNS_DIR / name).exists():
        return []
    out = ip("netns", "pids", name, check=False)
    return [int(p) for p in out.split()]


def _cgroup_trees(state: NodeState) -> list[Path]:
    pre = set(state.preexisting_cgroups)
    return [
        h / name
        for h in cgroup_hierarchies()
        for name in NODE_CGROUPS
        if (h / name).is_dir() and str(h / name) not in pre
    ]


def cgroup_pids(trees: Iterable[Path]) -> list[int]:
    pids: set[int] = set()
    for tree in trees:
        for procs in tree.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def _wait_gone(pids: Iterable[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if pid_alive(p)]
        time.sleep(0.05)


def mounts_under(prefixes: Iterable[str]) -> list[str]:
    """Mount points at or below any prefix, in mount order (so unmount reversed)."""
    roots = [os.path.realpath(p).rstrip("/") for p in prefixes]
    found: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if any(point == r or point.startswith(r + "/") for r in roots):
                found.append(point)
    return found


def unmount_all(prefixes: Iterable[str]) -> list[str]:
    """Unmount innermost first; returns the mount points that stayed."""
    failed: list[str] = []
    for point in reversed(mounts_under(prefixes)):
        r = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            # A busy mount (a process still in it) is detached; the error is logged.
            log.warning("umount %s: %s; detaching it", point, r.stderr.strip())
            r = subprocess.run(["umount", "-l", point], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                failed.append(f"mount {point}: {r.stderr.strip()}")
    return failed


def _new_mount_prefixes(state: NodeState) -> list[str]:
    """Fixed dirs that did not exist before the node: everything mounted there is ours."""
    return [d for d, entries in state.preexisting.items() if entries is None]


def remove_cgroup_tree(tree: Path) -> list[str]:
    """``rmdir`` depth-first (cgroupfs dirs cannot be removed with their files)."""
    failed: list[str] = []
    dirs = sorted((p for p in tree.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for d in [*dirs, tree]:
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError as e:
            failed.append(f"cgroup {d}: {e.strerror}")
    return failed


def _remove_path(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p)


def remove_new_entries(preexisting: dict[str, list[str] | None]) -> list[str]:
    """Remove fixed-dir entries new since the start; a dir new since then goes if empty."""
    failed: list[str] = []
    for d, before in preexisting.items():
        p = Path(d)
        if not p.is_dir():
            continue
        if p.resolve() == NETNS_DIR.resolve():
            continue  # namespaces are deleted with `ip netns`, never by rm
        keep = set(before or ())
        for name in sorted(os.listdir(p)):
            if name not in keep:
                try:
                    _remove_path(p / name)
                except OSError as e:
                    failed.append(f"{p / name}: {e}")
        if before is None:
            with contextlib.suppress(OSError):
                p.rmdir()
    return failed


def _remove_netns_dir_if_ours(state: NodeState) -> None:
    """``ip netns add`` made /run/netns a mount point; undo that when it was ours and is empty."""
    if state.preexisting.get("/run/netns", []) is not None or not NETNS_DIR.is_dir():
        return
    if os.listdir(NETNS_DIR):
        return
    real = os.path.realpath(NETNS_DIR)
    while real in mounts_under([real]):
        if subprocess.run(["umount", real], capture_output=True, check=False).returncode != 0:
            break
    with contextlib.suppress(OSError):
        NETNS_DIR.rmdir()


def sweep(state: NodeState, *, state_path: Path = STATE_PATH) -> None:
    """Stop, unmount, delete and remove everything ``state`` says the node made."""
    failed: list[str] = []
    for record in state.processes.values():
        stop_pid(record, grace=5.0)
    leftovers = netns_pids(state.netns)
    _kill_all(leftovers, f"in netns {state.netns}")
    trees = _cgroup_trees(state)
    in_cgroups = cgroup_pids(trees)
    _kill_all(in_cgroups, "in the node's cgroups")
    _wait_gone([*leftovers, *in_cgroups])
    failed += unmount_all([state.workdir, *_new_mount_prefixes(state)])
    if (NETNS_DIR / state.netns).exists():
        r = subprocess.run(
            ["ip", "netns", "delete", state.netns], capture_output=True, text=True, check=False
        )
        if r.returncode != 0:
            failed.append(f"netns {state.netns}: {r.stderr.strip()}")
    ip("link", "delete", state.host_if, check=False)
    for tree in trees:
        failed += remove_cgroup_tree(tree)
    failed += remove_new_entries(state.preexisting)
    _remove_netns_dir_if_ours(state)
    workdir = Path(state.workdir)
    if mounts_under([state.workdir]):
        failed.append(f"{workdir} still has mounts; not removed")
    elif workdir.exists() and not state.keep_dir:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        raise CleanupError("real-node teardown left behind:\n  " + "\n  ".join(failed))
    state_path.unlink(missing_ok=True)


def host_leftovers(state: NodeState, *, state_path: Path = STATE_PATH) -> list[str]:
    """What of the node in ``state`` is still on the host (empty: clean).

    Checks the recorded processes and anything in the namespace, mounts under
    the work directory and the new fixed paths, the namespace and veth, new
    cgroup trees, new entries of the fixed paths, the work directory and the
    state file.
    """
    found = [f"process {n} (pid {r.pid})" for n, r in state.processes.items() if _runs(r)]
    found += [f"process {pid} in netns {state.netns}" for pid in netns_pids(state.netns)]
    found += [f"mount {m}" for m in mounts_under([state.workdir, *_new_mount_prefixes(state)])]
    if (NETNS_DIR / state.netns).exists():
        found.append(f"netns {state.netns}")
    if Path(f"/sys/class/net/{state.host_if}").exists():
        found.append(f"interface {state.host_if}")
    found += [f"cgroup {t}" for t in _cgroup_trees(state)]
    for d, before in state.preexisting.items():
        p = Path(d)
        if p.is_dir():
            new = sorted(set(os.listdir(p)) - set(before or ()))
            found += [f"{p / n}" for n in new]
            if before is None and p.resolve() != NETNS_DIR.resolve():
                found.append(f"{p} (did not exist before)")
    if not state.keep_dir and Path(state.workdir).exists():
        found.append(f"work dir {state.workdir}")
    if state_path.exists():
        found.append(f"state file {state_path}")
    return found
