"""Find the control-plane binaries that scripts/setup.d/40-kube.sh builds and caches.

Lookup order, for each directory:
1. ``PALISADE_KUBE_BIN_DIR`` (kube-apiserver, kube-controller-manager, etcd) and
   ``PALISADE_KUBE_TOOLS_DIR`` (helm, kubectl), when set;
2. the two lines of ``$PALISADE_CACHE/kube/current`` written by the setup script;
3. the newest ``$PALISADE_CACHE/kube/k8s-*`` and ``tools-*`` directories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "etcd")
TOOLS = ("helm", "kubectl")


class BinariesMissing(RuntimeError):
    """A binary the harness needs is not installed; the message says how to fix it."""


@dataclass(frozen=True)
class KubeBinaries:
    """Absolute paths of every binary the harness runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    etcd: Path
    helm: Path
    kubectl: Path


def cache_root() -> Path:
    """The cache directory shared by the setup scripts."""
    env = os.environ.get("PALISADE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "palisade"


def _newest(parent: Path, pattern: str) -> Path | None:
    found = sorted(p for p in parent.glob(pattern) if p.is_dir() and not p.name.endswith(".tmp"))
    return found[-1] if found else None


def _dirs() -> tuple[Path | None, Path | None]:
    bin_dir = os.environ.get("PALISADE_KUBE_BIN_DIR")
    tools_dir = os.environ.get("PALISADE_KUBE_TOOLS_DIR")
    kube = cache_root() / "kube"
    current = kube / "current"
    recorded: list[str] = []
    if current.is_file():
        recorded = [line.strip() for line in current.read_text().splitlines() if line.strip()]
    b = Path(bin_dir) if bin_dir else (Path(recorded[0]) if recorded else _newest(kube, "k8s-*"))
    t = (
        Path(tools_dir)
        if tools_dir
        else (Path(recorded[1]) if len(recorded) > 1 else _newest(kube, "tools-*"))
    )
    return b, t


def find_binaries() -> KubeBinaries:
    """Locate all five binaries or raise :class:`BinariesMissing` naming the fix."""
    bin_dir, tools_dir = _dirs()
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for names, where in ((CONTROL_PLANE, bin_dir), (TOOLS, tools_dir)):
        for name in names:
            path = where / name if where else None
            if path is None or not os.access(path, os.X_OK):
                missing.append(f"{name} (looked in {where or cache_root() / 'kube'})")
            else:
                paths[name] = path
    if missing:
        raise BinariesMissing(
            "Kubernetes test binaries not found: "
            + ", ".join(missing)
            + ". Run `make setup` (scripts/setup.d/40-kube.sh builds them), "
            "or point PALISADE_KUBE_BIN_DIR / PALISADE_KUBE_TOOLS_DIR at them."
        )
    return KubeBinaries(
        kube_apiserver=paths["kube-apiserver"],
        kube_controller_manager=paths["kube-controller-manager"],
        etcd=paths["etcd"],
        helm=paths["helm"],
        kubectl=paths["kubectl"],
    )
