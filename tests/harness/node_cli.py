"""``python -m tests.harness.node up|down|status``: the real node by hand (``make cluster``).

``up`` starts a detached node (its processes outlive the command), prints the
kubeconfig and how to use it, and exits. ``down`` tears it down from the state
file, also after a crash or reboot of the Python side. ``status`` tells what is
running. Exit codes: 0 done, 1 failed, 2 nothing to do (``down``/``status``
with no node up).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence

from tests.harness.binaries import BinariesMissing, find_binaries
from tests.harness.controlplane import HarnessError
from tests.harness.node_binaries import find_node_binaries
from tests.harness.node_cleanup import CleanupError, host_leftovers
from tests.harness.node_state import MachineLock, NodeState, pid_alive
from tests.harness.node_teardown import teardown


def _up() -> int:
    from tests.harness.node import NodeConfig, RealNode

    node = RealNode(NodeConfig(detached=True))
    node.start()
    tools = node.binaries.kubectl.parent
    print(f"real node up in {node.timings['total']:.0f}s ({node.timings})")
    print(f"  work dir / logs: {node.workdir}")
    print(f"  API server:      {node.server} (node {node.node_name}, IP {node.node_ip})")
    print(f"  images:          {', '.join(node.images.values())}")
    print("From the host:")
    print(f"  export KUBECONFIG={node.kubeconfig} PATH={tools}:$PATH")
    print("  kubectl get nodes,pods -A")
    print("Inside the node's network namespace (pod and Service IPs answer there):")
    print(f"  nsenter --net={node.netns.path} curl -sk https://10.96.0.1/healthz")
    print("Stop it with: python -m tests.harness.node down")
    return 0


def _down() -> int:
    with MachineLock() as lock:
        lock.acquire(timeout=60)
        state = NodeState.load()
        if state is None:
            print("no real node is up (no state file)")
            return 2
        kube, node = find_binaries(), find_node_binaries()
        teardown(state, kubectl=kube.kubectl, ctr=node.ctr)
        leftovers = host_leftovers(state)
    if leftovers:
        print("real node down, but left behind: " + ", ".join(leftovers), file=sys.stderr)
        return 1
    print(f"real node down; host clean (work dir {state.workdir} removed)")
    return 0


def _status() -> int:
    state = NodeState.load()
    if state is None:
        print("no real node is up")
        return 2
    print(f"real node of pid {state.owner_pid} (detached={state.detached}), netns {state.netns}")
    print(f"  KUBECONFIG={state.kubeconfig}  server {state.server}")
    for name, rec in state.processes.items():
        print(f"  {name:<24} pid {rec.pid:<8} {'running' if pid_alive(rec.pid) else 'gone'}")
    try:
        kubectl = find_binaries().kubectl
    except BinariesMissing:
        return 0
    r = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={state.kubeconfig}",
            "--request-timeout=5s",
            "get",
            "nodes",
            "-o",
            "wide",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    print(r.stdout or r.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.harness.node", description=__doc__)
    p.add_argument("command", choices=("up", "down", "status"))
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING)
    commands = {"up": _up, "down": _down, "status": _status}
    try:
        code = commands[a.command]()
    except (HarnessError, BinariesMissing, CleanupError, RuntimeError) as e:
        print(f"{a.command} failed: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)
