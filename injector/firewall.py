"""The pod's packet filter, as data: protected ports -> ``iptables-restore`` input.

Pure. ``palisade pod-firewall`` (injector/firewall_cmd.py) runs in the injected
init container ``palisade-init``, inside the pod's network namespace, before the
sidecar and the MCP server start. It asks ``iptables-save`` what is there, gives
that text and the ports to :func:`restore_text`, and feeds the answer to
``iptables-restore --noflush`` (and the same to ``ip6tables-restore``): one
atomic commit per address family, which touches only the ``filter`` table, only
our chain, and only our jump from ``INPUT``; whatever else other init containers
(a mesh, a CNI) put there is kept.

The rules::

    :PALISADE_INBOUND - [0:0]                     (declared: created, or flushed when present)
    -A PALISADE_INBOUND -i lo -j RETURN           (the sidecar dials 127.0.0.1: allowed)
    -A PALISADE_INBOUND -p tcp -m tcp --dport 8080 --syn -j REJECT --reject-with tcp-reset
    -I INPUT 1 -j PALISADE_INBOUND                (only when INPUT does not already start so)

Why ``--syn``: a connection to the port can only be opened by a SYN, and refusing
that one packet refuses every connection from outside the pod (the client sees a
reset at once, not a timeout). Replies to connections the pod itself opened carry
ACK and are not touched, so an outgoing connection whose ephemeral source port
happens to equal a protected port keeps working, and no connection tracking
module is needed. Traffic inside the pod (to 127.0.0.1 or the pod's own IP) goes
over ``lo`` and is allowed. Running it twice gives the same rules: the chain is
declared (flushed) and refilled, the jump is moved to the front or left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CHAIN = "PALISADE_INBOUND"
JUMP = ("-A", "INPUT", "-j", CHAIN)

#: What iptables prints when the kernel cannot do it (module missing, family off).
_NO_KERNEL_SUPPORT = (
    "can't initialize",
    "table does not exist",
    "address family not supported",
    "protocol not supported",
    "failed to initialize nft",
    "could not fetch rule set generation id",
)


class FirewallError(ValueError):
    """The rules cannot be built from what was asked."""


def checked_ports(ports: Iterable[int]) -> tuple[int, ...]:
    """Sorted, unique TCP port numbers; anything else is an error."""
    out: set[int] = set()
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise FirewallError(f"not a TCP port number: {port!r}")
        out.add(port)
    if not out:
        raise FirewallError("no port to protect")
    return tuple(sorted(out))


def input_jumps(saved: str) -> list[int]:
    """Positions (1-based) of our plain jump among the ``INPUT`` rules of ``iptables-save``."""
    found: list[int] = []
    position = 0
    table = ""
    for raw in saved.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        if table != "filter" or not line.startswith("-A INPUT "):
            continue
        position += 1
        if tuple(line.split()) == JUMP:
            found.append(position)
    return found


def restore_text(ports: Sequence[int], saved: str = "") -> str:
    """The ``iptables-restore --noflush`` input that leaves exactly our rules in place.

    ``saved`` is the current ``iptables-save -t filter`` output (the same text
    serves ``ip6tables``: ``REJECT --reject-with tcp-reset`` exists in both).
    """
    lines = ["*filter", f":{CHAIN} - [0:0]", f"-A {CHAIN} -i lo -j RETURN"]
    lines += [
        f"-A {CHAIN} -p tcp -m tcp --dport {port} --syn -j REJECT --reject-with tcp-reset"
        for port in checked_ports(ports)
    ]
    jumps = input_jumps(saved)
    if jumps != [1]:
        # Absent, elsewhere or more than once: one jump, first in INPUT, so that no
        # earlier ACCEPT rule lets a connection past us.
        lines += [f"-D INPUT -j {CHAIN}"] * len(jumps)
        lines.append(f"-I INPUT 1 -j {CHAIN}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def kernel_lacks_support(message: str) -> bool:
    """Whether iptables' error says the kernel cannot filter this family (not a bug of ours)."""
    lowered = message.lower()
    return any(marker in lowered for marker in _NO_KERNEL_SUPPORT)
