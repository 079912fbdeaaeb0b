"""Find what the real node needs: the binaries and images of scripts/setup.d/42-node.sh.

``$PALISADE_CACHE/node/current`` holds two lines, the binary directory and the
image directory; without it the newest ``node/*/bin`` and ``node/*/images-*``
are used. Debian's runc, CNI plugins, iptables, conntrack and util-linux's
nsenter are looked up on the system.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.harness.binaries import BinariesMissing, cache_root

NODE_BINARIES = (
    "kubelet",
    "kube-scheduler",
    "kube-proxy",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
)
SYSTEM_TOOLS = ("runc", "iptables", "conntrack", "nsenter", "ip", "mount", "umount")
CNI_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
IMAGES = ("pause", "coredns", "hello")


@dataclass(frozen=True)
class NodeImages:
    """OCI archives for ``ctr images import`` and the names they import as."""

    pause: Path
    coredns: Path
    hello: Path
    coredns_version: str
    hello_binary: Path
    """The static ``hello`` program itself, to run on the host or in the node's netns."""

    @property
    def pause_name(self) -> str:
        return "palisade.local/pause:1"

    @property
    def coredns_name(self) -> str:
        return f"palisade.local/coredns:{self.coredns_version}"

    @property
    def hello_name(self) -> str:
        """A static Go program: ``hello serve`` (default), ``hello get URL``, ``hello lookup``."""
        return "palisade.local/hello:1"


@dataclass(frozen=True)
class NodeBinaries:
    """Absolute paths of the node's programs."""

    bin_dir: Path
    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path
    containerd: Path
    ctr: Path
    runc: Path
    cni_dir: Path
    images: NodeImages


def _dirs() -> tuple[Path | None, Path | None]:
    node = cache_root() / "node"
    current = node / "current"
    if current.is_file():
        lines = [line.strip() for line in current.read_text().splitlines() if line.strip()]
        if len(lines) == 2:
            return Path(lines[0]), Path(lines[1])
    bins = sorted(p for p in node.glob("*/bin") if p.is_dir())
    imgs = sorted(p for p in node.glob("*/images-*") if p.is_dir() and p.suffix != ".tmp")
    return (bins[-1] if bins else None), (imgs[-1] if imgs else None)


def _missing(bin_dir: Path | None, img_dir: Path | None) -> list[str]:
    missing = [
        f"{name} (looked in {bin_dir or cache_root() / 'node'})"
        for name in NODE_BINARIES
        if bin_dir is None or not os.access(bin_dir / name, os.X_OK)
    ]
    missing += [f"{t} (not on PATH)" for t in SYSTEM_TOOLS if shutil.which(t) is None]
    missing += [f"CNI plugin {p} (in {CNI_DIR})" for p in CNI_PLUGINS if not (CNI_DIR / p).exists()]
    missing += [
        f"image {i}.tar (looked in {img_dir or cache_root() / 'node'})"
        for i in IMAGES
        if img_dir is None or not (img_dir / f"{i}.tar").is_file()
    ]
    return missing


def find_node_binaries() -> NodeBinaries:
    """Locate everything or raise :class:`BinariesMissing` naming the fix."""
    bin_dir, img_dir = _dirs()
    missing = _missing(bin_dir, img_dir)
    if missing or bin_dir is None or img_dir is None:
        raise BinariesMissing(
            "real-node binaries not found: "
            + ", ".join(missing)
            + ". Run `make setup` (scripts/setup.d/42-node.sh builds and installs them)."
        )
    version_file = img_dir / "coredns.version"
    version = version_file.read_text().strip() if version_file.is_file() else "unknown"
    runc = shutil.which("runc")
    assert runc is not None  # checked by _missing
    return NodeBinaries(
        bin_dir=bin_dir,
        kubelet=bin_dir / "kubelet",
        kube_scheduler=bin_dir / "kube-scheduler",
        kube_proxy=bin_dir / "kube-proxy",
        containerd=bin_dir / "containerd",
        ctr=bin_dir / "ctr",
        runc=Path(runc),
        cni_dir=CNI_DIR,
        images=NodeImages(
            pause=img_dir / "pause.tar",
            coredns=img_dir / "coredns.tar",
            hello=img_dir / "hello.tar",
            coredns_version=version,
            hello_binary=img_dir / "hello",
        ),
    )
