"""``palisade pod-firewall``: install the pod's packet filter, then exit.

A thin adapter over injector/firewall.py, run by the injected init container
``palisade-init`` (root, ``NET_ADMIN`` only, read-only root filesystem with an
emptyDir on ``/run`` for iptables' lock file)::

    palisade pod-firewall --protect-port 8080 [--protect-port 8081 ...]

For each address family it tries the iptables backends in turn (``nft`` first;
``legacy`` also needs ``NET_RAW``, which the injector does not grant), reads the
current ``filter`` table with ``*-save``, and commits :func:`restore_text` with
``*-restore --noflush``. IPv6 is skipped when this network namespace has no IPv6
(``/proc/net/if_inet6`` absent) or the kernel cannot filter it; IPv4 must succeed.
Exit status: 0 installed, 1 failed (the pod does not start: fail closed), 2 usage.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from injector.firewall import FirewallError, checked_ports, kernel_lacks_support, restore_text

#: (save, restore) commands per family, in the order ``auto`` tries them.
BACKENDS: dict[str, dict[str, tuple[str, str]]] = {
    "ipv4": {
        "nft": ("iptables-nft-save", "iptables-nft-restore"),
        "legacy": ("iptables-legacy-save", "iptables-legacy-restore"),
        "default": ("iptables-save", "iptables-restore"),
    },
    "ipv6": {
        "nft": ("ip6tables-nft-save", "ip6tables-nft-restore"),
        "legacy": ("ip6tables-legacy-save", "ip6tables-legacy-restore"),
        "default": ("ip6tables-save", "ip6tables-restore"),
    },
}

Runner = Callable[[Sequence[str], str], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # fixed argv, no shell
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


@dataclass(frozen=True)
class Outcome:
    """What happened for one address family."""

    family: str
    applied: bool
    detail: str


def apply_family(
    family: str,
    ports: Sequence[int],
    backend: str,
    run: Runner = _run,
    which: Callable[[str], str | None] = shutil.which,
) -> Outcome:
    """Install the rules for one family with the first backend that works."""
    names = list(BACKENDS[family]) if backend == "auto" else [backend]
    problems: list[str] = []
    attempted = unsupported = 0
    for name in names:
        save, restore = BACKENDS[family][name]
        save_path, restore_path = which(save), which(restore)
        if save_path is None or restore_path is None:
            problems.append(f"{restore}: not installed")
            continue
        attempted += 1
        saved = run([save_path, "-t", "filter"], "")
        if saved.returncode == 0:
            done = run([restore_path, "--noflush"], restore_text(ports, saved.stdout))
            if done.returncode == 0:
                return Outcome(family, True, restore)
            failed, step = done, restore
        else:
            failed, step = saved, save
        message = (failed.stderr or failed.stdout).strip() or f"exit {failed.returncode}"
        unsupported += kernel_lacks_support(message)
        problems.append(f"{step}: {message}")
    summary = "; ".join(problems)
    if family == "ipv6" and attempted and unsupported == attempted:
        # Every backend says the kernel cannot filter IPv6 here: nothing to install.
        return Outcome(family, False, f"the kernel has no ip6tables support ({summary})")
    raise FirewallError(f"{family}: no iptables backend worked: {summary}")


def ipv6_enabled(proc: Path = Path("/proc")) -> bool:
    """Whether this network namespace has IPv6 at all."""
    return (proc / "net" / "if_inet6").exists()


def install(
    ports: Sequence[int],
    backend: str = "auto",
    run: Runner = _run,
    proc: Path = Path("/proc"),
) -> list[Outcome]:
    """Both families; raises FirewallError when the pod would be left unprotected."""
    checked = checked_ports(ports)
    outcomes = [apply_family("ipv4", checked, backend, run)]
    if ipv6_enabled(proc):
        outcomes.append(apply_family("ipv6", checked, backend, run))
    else:
        outcomes.append(Outcome("ipv6", False, "IPv6 is off in this network namespace"))
    return outcomes


def main(ns: argparse.Namespace) -> int:
    try:
        outcomes = install(ns.protect_port, ns.backend)
    except FirewallError as exc:
        print(f"palisade pod-firewall: {exc}", file=sys.stderr)
        print(
            "palisade pod-firewall: the pod stays closed. The init container needs the "
            "iptables tools in its image, NET_ADMIN, and a writable /run (NET_RAW too for "
            "the legacy backend); or opt out with the annotation palisade.dev/pod-firewall: "
            '"false" where the namespace allows it.',
            file=sys.stderr,
        )
        return 1
    ports = ", ".join(str(p) for p in checked_ports(ns.protect_port))
    for o in outcomes:
        state = f"installed with {o.detail}" if o.applied else f"skipped: {o.detail}"
        print(f"palisade pod-firewall: {o.family} {state}")
    print(f"palisade pod-firewall: TCP port(s) {ports} refuse connections from outside the pod")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protect-port",
        type=int,
        action="append",
        required=True,
        help="TCP port reachable only from inside the pod (repeatable)",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "nft", "legacy", "default"],
        default="auto",
        help="iptables backend (auto: nft, then legacy, then the plain iptables-restore)",
    )
    parser.set_defaults(func=main)
