"""The README's quick start, run as written: on the real node, or by ``make cluster``.

The commands are read from the README block that follows the marker
``<!-- quickstart -->`` (one ``helm ...`` or ``kubectl ...`` per line, ``#``
comments allowed), so the README and what the tests and ``make cluster`` do
cannot drift apart. Before them, the images are built daemonless
(``scripts/build-images``) and imported into the node's containerd, which is
what a cluster with a registry would pull.

    python -m tests.harness.quickstart up     # make cluster
    python -m tests.harness.quickstart down   # make cluster-down
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = "<!-- quickstart -->"
TOOLS = ("helm", "kubectl")


class Cluster(Protocol):
    """What the quick start needs of a cluster (``RealNode`` has it)."""

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> Any: ...
    def helm(self, *args: str, check: bool = True, timeout: float = 180) -> Any: ...
    def import_image(self, tar_path: Path | str) -> str: ...


class QuickstartError(RuntimeError):
    """The README block is missing or malformed, or one of its commands failed."""


@dataclass
class Timings:
    """Seconds per step, in the order they ran."""

    steps: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn: Any) -> Any:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.steps[name] = round(time.monotonic() - t0, 2)


def readme_commands(text: str | None = None) -> list[list[str]]:
    """The quick start's commands, as argv lists, from the first code block after the marker."""
    text = README.read_text() if text is None else text
    at = text.find(MARKER)
    if at < 0:
        raise QuickstartError(f"README.md has no {MARKER} block")
    lines = text[at:].splitlines()[1:]
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("```"))
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    except StopIteration as exc:
        raise QuickstartError(f"no fenced code block after {MARKER}") from exc
    commands = []
    for line in lines[start + 1 : end]:
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] not in TOOLS:
            raise QuickstartError(f"quick start line is not helm or kubectl: {line!r}")
        commands.append(argv)
    if not commands:
        raise QuickstartError(f"the {MARKER} block holds no command")
    return commands


def build_images(timeout: float = 1800) -> dict[str, Any]:
    """``scripts/build-images`` (cached base; reproducible); returns its build report."""
    result = subprocess.run(
        [str(REPO / "scripts/build-images")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise QuickstartError(f"scripts/build-images failed:\n{result.stderr[-4000:]}")
    report: dict[str, Any] = json.loads((REPO / "build/images/build.json").read_text())
    return report


def import_images(cluster: Cluster, report: dict[str, Any]) -> None:
    for image in report["images"]:
        cluster.import_image(image["tarball"])


def _from_repo(arg: str) -> str:
    """A path of the repository (``charts/palisade``) made absolute; anything else as is."""
    return str(REPO / arg) if "/" in arg and (REPO / arg).exists() else arg


def run_commands(cluster: Cluster, commands: Sequence[Sequence[str]], timings: Timings) -> None:
    """Each README command through the cluster's own helm/kubectl, from the repository root."""
    for argv in commands:
        tool = cluster.helm if argv[0] == "helm" else cluster.kubectl
        args = [_from_repo(a) for a in argv[1:]]
        result = timings.run(
            " ".join(argv[:3]), lambda a=args, t=tool: t(*a, check=False, timeout=900)
        )
        if result.returncode != 0:
            raise QuickstartError(
                f"quick start command failed: {shlex.join(argv)}\n"
                f"{(result.stderr or result.stdout).strip()[-3000:]}"
            )


def install(cluster: Cluster, timings: Timings) -> dict[str, Any]:
    """Build and import the images, then run the README's commands; returns the build report."""
    report: dict[str, Any] = timings.run("build images", build_images)
    timings.run("import images", lambda: import_images(cluster, report))
    run_commands(cluster, readme_commands(), timings)
    return report


def uninstall(cluster: Cluster) -> None:
    """Undo the README's commands on a cluster that stays up (for the next module):
    what they applied deleted in reverse, the release uninstalled, its namespace gone."""
    for argv in reversed(readme_commands()):
        if argv[:2] == ["kubectl", "apply"]:
            args = [_from_repo(a) for a in argv[2:]]
            cluster.kubectl("delete", *args, "--ignore-not-found", "--wait", timeout=300)
    cluster.helm("uninstall", "palisade", "-n", "palisade", "--wait", "--timeout", "5m")
    cluster.kubectl("delete", "namespace", "palisade", "--ignore-not-found", "--wait", timeout=300)


def _up() -> int:
    from tests.harness.node import NodeConfig, RealNode

    timings = Timings()
    node = RealNode(NodeConfig(detached=True))
    timings.run("node up", node.start)
    try:
        install(node, timings)
        timings.run(
            "example ready",
            lambda: node.wait_ready("deployment", "payments", "k8s-mcp", timeout=300),
        )
    except Exception:
        print("quick start failed; tear down with: make cluster-down", file=sys.stderr)
        raise
    tools = node.binaries.kubectl.parent
    print("Palisade is running on a single-node cluster:")
    for name, seconds in timings.steps.items():
        print(f"  {seconds:7.1f} s  {name}")
    print(f"\n  export KUBECONFIG={node.kubeconfig} PATH={tools}:$PATH")
    print("  kubectl -n palisade get pods,ds,deploy")
    print("  kubectl -n payments get pods           # the MCP server, with its sidecar")
    print("  kubectl -n payments logs job/sre-agent # what the agent tried, what Palisade decided")
    print("\nRemove everything with: make cluster-down")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    if args.action == "up":
        sys.exit(_up())
    from tests.harness.node_cli import main as node_main

    node_main([args.action])


if __name__ == "__main__":
    main()
