"""pytest plugin: session-scoped fixtures backed by one real control plane.

``kube``                  etcd + kube-apiserver + a kube-controller-manager running
                          the basic controllers (ServiceAccounts, root CA, namespaces).
``kube_with_controllers`` the same control plane with every default controller
                          running (Deployments -> ReplicaSets -> Pods, garbage collection).

Both fail (not skip) with "run make setup" when the binaries are missing. Mark
tests that use them ``@pytest.mark.e2e``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.binaries import BinariesMissing
from tests.harness.controlplane import ControlPlane


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
