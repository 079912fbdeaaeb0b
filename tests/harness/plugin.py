"""pytest plugin: session-scoped fixtures backed by real Kubernetes processes.

``kube``                  etcd + kube-apiserver + a kube-controller-manager running
                          the basic controllers (ServiceAccounts, root CA, namespaces).
``kube_with_controllers`` the same control plane with every default controller
                          running (Deployments -> ReplicaSets -> Pods, garbage collection).
``real_node``             a real single-node cluster (:class:`tests.harness.node.RealNode`):
                          its own control plane, containerd, kubelet, kube-proxy and
                          CoreDNS in a private network namespace. Needs Linux and root.
``node_machine``          for the few tests that bring up a node of their own (the CLI,
                          the crash sweep): they are moved to the front of the run,
                          before ``real_node`` takes the machine-wide lock.

All fail (not skip) with "run make setup" when the binaries are missing. Mark
tests that use ``kube`` ``@pytest.mark.e2e``, and those that use ``real_node``
``@pytest.mark.node`` and ``@pytest.mark.e2e`` (``node`` implies ``e2e`` here too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.binaries import BinariesMissing, find_binaries
from tests.harness.controlplane import ControlPlane
from tests.harness.node import NodeUnavailable, RealNode
from tests.harness.node_binaries import find_node_binaries
from tests.harness.node_cleanup import host_leftovers
from tests.harness.node_state import NodeState


@pytest.fixture(scope="session")
def kube() -> Iterator[ControlPlane]:
    """A running control plane shared by the whole test session."""
    try:
        plane = ControlPlane()
    except BinariesMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube_with_controllers(kube: ControlPlane) -> ControlPlane:
    """The session control plane with kube-controller-manager running all controllers."""
    kube.start_controllers(("*",))
    return kube


def _require_node_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "the real-node tests need root (network namespaces, mounts, cgroups)", pytrace=False
        )
    try:
        find_binaries()
        find_node_binaries()
    except BinariesMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def real_node() -> Iterator[RealNode]:
    """One real single-node cluster for the session; teardown must leave the host clean."""
    _require_node_prerequisites()
    try:
        node = RealNode()
    except (BinariesMissing, NodeUnavailable) as e:
        pytest.fail(str(e), pytrace=False)
    try:
        node.start()
        yield node
    finally:
        state = node.state
        node.stop()
        leftovers = host_leftovers(state) if state is not None else []
        if leftovers:
            pytest.fail("real-node teardown left behind: " + ", ".join(leftovers), pytrace=False)


@pytest.fixture
def node_machine() -> None:
    """The machine is free for a node of the test's own (no node of this session is up)."""
    _require_node_prerequisites()
    state = NodeState.load()
    if state is not None and state.owner_alive():
        pytest.fail(
            f"a real node is up (owner pid {state.owner_pid}, work dir {state.workdir}); "
            "tests using node_machine must run before real_node starts",
            pytrace=False,
        )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``node`` implies ``e2e``; ``node_machine`` tests go first (before ``real_node``)."""
    for item in items:
        if item.get_closest_marker("node") and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: 0 if "node_machine" in getattr(item, "fixturenames", ()) else 1)
