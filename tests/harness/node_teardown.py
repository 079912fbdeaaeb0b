"""The graceful half of the real node's teardown, driven by the state file alone.

Order (shared/REAL-NODE.md, "Teardown in order"): stop the controllers and the
scheduler (nothing recreates pods), delete every pod and wait for the kubelet
to finish them (containers stopped, CNI DEL run, IPs released), stop the
kubelet, remove what containerd still holds (``ctr``), stop kube-proxy, the API
server, etcd and containerd by pid; then :func:`~tests.harness.node_cleanup.sweep`
removes the rest. Both ``RealNode.stop()`` and ``python -m tests.harness.node down``
call :func:`teardown`; a step that fails is logged and the next one runs, since
the sweep at the end is what guarantees a clean host (and raises if it is not).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.harness.node_cleanup import stop_pid, sweep
from tests.harness.node_config import NodePaths
from tests.harness.node_state import NodeState

log = logging.getLogger(__name__)

#: Stopped first, so that nothing recreates the pods being deleted.
CONTROLLERS = ("kube-controller-manager", "kube-scheduler")
#: Stopped after the kubelet, in this order.
SERVICES = ("kube-proxy", "kube-apiserver", "etcd", "containerd")


def _run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def delete_pods(kubectl: Path, kubeconfig: str, timeout: float = 60) -> bool:
    """Delete every pod and wait until the kubelet has finished them all."""
    base = [str(kubectl), f"--kubeconfig={kubeconfig}", "--request-timeout=10s"]
    r = _run([*base, "delete", "pods", "--all", "-A", "--grace-period=2", "--wait=false"])
    if r.returncode != 0:
        log.warning("deleting pods failed: %s", r.stderr.strip())
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = _run([*base, "get", "pods", "-A", "-o", "name"])
        if r.returncode == 0 and not r.stdout.strip():
            return True
        time.sleep(0.5)
    log.warning("pods still present after %.0fs: %s", timeout, r.stdout.strip())
    return False


def remove_containers(ctr: Path, socket: Path) -> None:
    """Kill and delete every task and container containerd still has (namespace k8s.io)."""
    base = [str(ctr), f"--address={socket}", "--namespace=k8s.io"]
    if not socket.exists():
        return
    tasks = _run([*base, "tasks", "ls", "-q"], timeout=20)
    for task in tasks.stdout.split():
        _run([*base, "tasks", "kill", "-s", "SIGKILL", task], timeout=20)
        _run([*base, "tasks", "delete", "-f", task], timeout=20)
    containers = _run([*base, "containers", "ls", "-q"], timeout=20)
    ids = containers.stdout.split()
    if ids:
        r = _run([*base, "containers", "delete", *ids], timeout=60)
        if r.returncode != 0:
            log.warning("ctr containers delete: %s", r.stderr.strip())


def _stop(state: NodeState, name: str) -> None:
    record = state.processes.get(name)
    if record is not None:
        stop_pid(record)


def teardown(state: NodeState, *, kubectl: Path, ctr: Path) -> None:
    """Stop the node recorded in ``state`` in order, then sweep the host clean."""
    for name in CONTROLLERS:
        _stop(state, name)
    if "kubelet" in state.processes and state.kubeconfig and Path(state.kubeconfig).exists():
        delete_pods(kubectl, state.kubeconfig)
    _stop(state, "kubelet")
    remove_containers(ctr, NodePaths(Path(state.workdir)).containerd_socket)
    for name in SERVICES:
        _stop(state, name)
    sweep(state)
