"""A real Kubernetes control plane for tests (etcd + kube-apiserver + kube-controller-manager).

Plain Python API::

    from tests.harness import ControlPlane
    with ControlPlane() as kube: ...

pytest fixtures (registered by tests/conftest.py): ``kube`` and
``kube_with_controllers``. See docs/kube-harness.md.
"""

from tests.harness.binaries import BinariesMissing, KubeBinaries, find_binaries
from tests.harness.commands import ADMIN_USER, BASIC_CONTROLLERS, kubeconfig
from tests.harness.controlplane import (
    ApiError,
    ControlPlane,
    ControlPlaneConfig,
    HarnessError,
)

__all__ = [
    "ADMIN_USER",
    "BASIC_CONTROLLERS",
    "ApiError",
    "BinariesMissing",
    "ControlPlane",
    "ControlPlaneConfig",
    "HarnessError",
    "KubeBinaries",
    "find_binaries",
    "kubeconfig",
]
