"""Entry point of the ``palisade`` console script.

Each command group lives in its own module exposing ``register(parser)``; only
the group named on the command line is imported, so ``palisade bundle lint``
never loads the sidecar's web stack. Daemon groups live with their daemon
(``sidecar.main`` etc.) and are named here as strings, which keeps the core
free of imports from the daemons.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: group name -> (module exposing ``register``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bundle": ("palisade.cli.bundle", "lint, test, sign and verify policy bundles"),
    "audit": ("palisade.cli.audit", "verify and query signed audit logs"),
    "check-server": ("palisade.cli.check_server", "serve gRPC PolicyService/Check"),
    "keys": ("palisade.cli.keys", "generate Ed25519 signing keys"),
    "sidecar": ("sidecar.main", "run the MCP governance sidecar"),
    "injector": ("injector.main", "run the mutating admission webhook"),
    "pod-firewall": (
        "injector.firewall_cmd",
        "install the pod's packet filter (the injected init container runs it)",
    ),
    "distributor": ("distributor.main", "run the policy distributor"),
    "nodeagent": ("nodeagent.main", "run the GPU node agent, or show its status"),
    "fleet": ("palisade.cli.fleet", "show sidecars, nodes and bundles known to the distributor"),
    "approvals": ("palisade.cli.approvals", "list, approve or deny pending approvals"),
    "completion": ("palisade.cli.completion", "print a shell completion script (bash, zsh, fish)"),
}


def version() -> str:
    """The installed distribution's version, from its package metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("palisade")
    except PackageNotFoundError:
        return "unknown (not installed)"


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palisade",
        description="Govern AI agents' MCP tool calls and GPU use on Kubernetes.",
        epilog="Exit status: 0 done, 1 the check failed or the service refused, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"palisade {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        parser = top_parser()
        if args and not args[0].startswith("-"):
            parser.error(f"unknown command {args[0]!r}")
        parser.parse_args(args)
        parser.print_help()
        return 0 if args else 2
    name = args[0]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"palisade {name}: not available in this build", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"palisade {name}", description=help_text)
    module.register(parser)
    ns = parser.parse_args(args[1:])
    func = getattr(ns, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(ns)
    except KeyboardInterrupt:
        print(f"palisade {name}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:
        print(f"palisade {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
