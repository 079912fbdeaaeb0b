"""A private network namespace with a veth pair: the test node's own network.

The kernel here has no ``dummy`` module, so the node gets its IP from a veth
pair: the host side (``pnh<pid>``, the first address of a free /30) stays in the
host namespace, the other end becomes ``eth0`` in the namespace with the second
address, which is the node IP. The namespace has loopback up, a default route
via the host side and IP forwarding on (pods route through it). Everything the
node runs is started under ``nsenter --net=<path>`` only, so it shares the
host's mount namespace (kubelet's mounts are visible to the teardown) but never
touches the host's interfaces, routes or iptables.

``pick_subnet`` is pure (tested directly); the rest runs ``ip``.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")
#: The /30s tried for the veth pair, in order: 10.203.0.0/30, 10.203.0.4/30, ...
CANDIDATE_POOL = ipaddress.IPv4Network("10.203.0.0/24")


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message has its stderr."""


def pick_subnet(
    in_use: Iterable[ipaddress.IPv4Network], pool: ipaddress.IPv4Network = CANDIDATE_POOL
) -> ipaddress.IPv4Network:
    """The first /30 of ``pool`` that overlaps nothing the host already routes or holds."""
    used = list(in_use)
    for candidate in pool.subnets(new_prefix=30):
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise NetnsError(f"no free /30 left in {pool} (host routes: {', '.join(map(str, used))})")


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip [-n NETNS] ARGS`` and return its stdout."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return r.stdout


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network on the host's interfaces and in its routing tables."""
    nets: list[ipaddress.IPv4Network] = []
    for link in json.loads(ip("-j", "-4", "addr", "show") or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and not dst.startswith(("broadcast", "local")):
            try:
                nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                continue
    return nets


@dataclass(frozen=True)
class NetNamespace:
    """``ip netns`` NAME with a veth pair; ``node_ip`` is the address inside."""

    name: str
    host_if: str
    subnet: ipaddress.IPv4Network

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def host_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def node_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    @property
    def prefix(self) -> tuple[str, ...]:
        """Put before a command line to run it inside the namespace (network only)."""
        return ("nsenter", f"--net={self.path}")

    @classmethod
    def for_pid(cls, pid: int) -> NetNamespace:
        """Names for this process's node, with a /30 the host does not use."""
        return cls(f"palisade-node-{pid}", f"pnh{pid}", pick_subnet(host_networks()))

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> None:
        """Make the namespace, the veth pair, the addresses, routes and sysctls."""
        peer = f"pnn{self.host_if[3:]}"
        bits = self.subnet.prefixlen
        ip("netns", "add", self.name)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.name)
        ip("addr", "add", f"{self.host_ip}/{bits}", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("link", "set", "lo", "up", netns=self.name)
        ip("link", "set", peer, "name", "eth0", netns=self.name)
        ip("addr", "add", f"{self.node_ip}/{bits}", "dev", "eth0", netns=self.name)
        ip("link", "set", "eth0", "up", netns=self.name)
        # Service IPs (10.96.0.0/16) need a route before kube-proxy's DNAT applies.
        ip("route", "add", "default", "via", self.host_ip, netns=self.name)
        self.sysctl("net.ipv4.ip_forward", "1")
        self.sysctl("net.bridge.bridge-nf-call-iptables", "1")

    def sysctl(self, key: str, value: str) -> None:
        """Set a per-namespace sysctl inside the namespace."""
        path = Path("/proc/sys") / key.replace(".", "/")
        self.run(["sh", "-c", f"echo {value} > {path}"])

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace; raise :class:`NetnsError` on failure if check."""
        r = subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and r.returncode != 0:
            raise NetnsError(
                f"in {self.name}: {' '.join(argv)} failed with {r.returncode}: "
                f"{r.stderr.strip() or r.stdout.strip()}"
            )
        return r

    def pids(self) -> list[int]:
        """Processes whose network namespace this is."""
        if not self.exists():
            return []
        return [int(p) for p in ip("netns", "pids", self.name, check=False).split()]

    def delete(self) -> None:
        """Remove the namespace (the veth pair goes with it); no-op when it is gone."""
        if self.exists():
            ip("netns", "delete", self.name)
        ip("link", "delete", self.host_if, check=False)
