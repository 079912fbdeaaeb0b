"""Build Palisade's images without a Docker daemon, reproducibly.

    python -m images.build [--image palisade] [--out build/images] [--smoke]

Layers, bottom first (images/definition.py says which image stacks which):

    base      debootstrap of Debian bookworm (minbase + python3, iptables, ...), cached
    deps      images/requirements.lock in /usr/lib/python3/dist-packages
    examples  examples/mcp_servers in /app/examples/mcp_servers
    app       the project's wheel, and /usr/local/bin/palisade
    kube-mcp  the kubernetes-mcp-server binary (cached by scripts/setup) and its config

Each layer's mtimes come from one epoch: the base's from its Release file, the deps'
from the last commit of the lock file, the examples' from that of examples/mcp_servers,
the kube-mcp layer's from that of its pins (the setup step and the config), the app's
and the image's ``created`` from SOURCE_DATE_EPOCH (default: the commit
time of HEAD); each is clamped to SOURCE_DATE_EPOCH. Output under ``--out``:
``oci/`` (one OCI layout with every image, blobs shared), ``<name>-<version>.oci.tar``
per image (for ``ctr -n k8s.io images import``) and ``build.json`` (what is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from images import definition, oci, pylayers, rootfs, smoke

log = logging.getLogger("images.build")

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def default_cache(env: Mapping[str, str] = os.environ) -> Path:
    root = env.get("PALISADE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache/palisade")
    return Path(root) / "images"


def project_version(repo: Path) -> str:
    version: str = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    return version


def chart_app_version(repo: Path) -> str | None:
    chart = repo / "charts/palisade/Chart.yaml"
    if not chart.is_file():
        return None
    match = re.search(r"^appVersion:\s*['\"]?([^'\"\s]+)", chart.read_text(), re.M)
    return match.group(1) if match else None


def git(repo: Path, *args: str) -> str | None:
    if not (repo / ".git").exists() or not shutil.which("git"):
        return None
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def source_date_epoch(repo: Path, env: Mapping[str, str] = os.environ) -> int:
    """SOURCE_DATE_EPOCH, else the commit time of HEAD."""
    if env.get("SOURCE_DATE_EPOCH"):
        return int(env["SOURCE_DATE_EPOCH"])
    committed = git(repo, "log", "-1", "--format=%ct")
    if not committed:
        raise SystemExit("not a git checkout: set SOURCE_DATE_EPOCH")
    return int(committed)


def path_epoch(repo: Path, paths: Sequence[str], ceiling: int) -> int:
    """The commit time of the last commit touching ``paths``, at most ``ceiling``."""
    committed = git(repo, "log", "-1", "--format=%ct", "--", *paths)
    return min(int(committed), ceiling) if committed else ceiling


KUBE_MCP_SOURCES = (
    "scripts/setup.d/52-kubernetes-mcp-server.sh",
    definition.KUBE_MCP_CONFIG_SOURCE,
)
"""What the kube-mcp layer follows: the pinned version and integrity, and the config."""

IMAGE_SOURCES = (
    *pylayers.WHEEL_SOURCES,
    definition.LOCK_FILE,
    "examples/mcp_servers",
    "images/files",
    *KUBE_MCP_SOURCES,
)


def labels(repo: Path, version: str, description: str) -> dict[str, str]:
    revision = git(repo, "rev-parse", "HEAD") or "unknown"
    if git(repo, "status", "--porcelain", "--", *IMAGE_SOURCES):
        revision += "-dirty"
    source = git(repo, "remote", "get-url", "origin")
    if not source:
        chart = repo / "charts/palisade/Chart.yaml"
        match = re.search(r"^home:\s*(\S+)", chart.read_text(), re.M) if chart.is_file() else None
        source = match.group(1) if match else ""
    found = {
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.title": description,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    return {k: v for k, v in found.items() if v}


@dataclass
class Timer:
    """Seconds per build step, in order."""

    steps: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def step(self, name: str, fn: Callable[[], T]) -> T:
        t0 = time.monotonic()
        result = fn()
        self.steps[name] = round(time.monotonic() - t0, 1)
        log.info("%s: %.1f s", name, self.steps[name])
        return result

    @property
    def total(self) -> float:
        return round(time.monotonic() - self.start, 1)


def base_layer(base: rootfs.Base) -> oci.Layer:
    """The base's layer blob, written once per cached base."""
    cached = base.dir / "layer.json"
    store = oci.BlobStore(base.dir)
    if cached.is_file():
        layer = oci.Layer.from_json(json.loads(cached.read_text()))
        if store.path(layer.blob.digest).is_file():
            return layer
    layer = oci.write_layer(
        base.rootfs,
        store,
        epoch=base.epoch,
        created_by=base.created_by,
        clamp=True,
        root_owned=False,
        exclude=rootfs.layer_exclude,
    )
    cached.write_text(json.dumps(layer.to_json(), indent=2))
    return layer


def build(
    repo: Path,
    out: Path,
    cache: Path,
    *,
    images: Sequence[definition.ImageSpec] = definition.IMAGES,
    rebuild_base: bool = False,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """Build ``images``; returns the report that :func:`main` prints."""
    timer = Timer()
    version = project_version(repo)
    epoch = source_date_epoch(repo, env)
    layout = out / "oci"
    shutil.rmtree(layout, ignore_errors=True)
    store = oci.BlobStore(layout)

    base = timer.step("base", lambda: rootfs.ensure_base(cache, rebuild=rebuild_base))
    base_blob = timer.step("base layer", lambda: base_layer(base))
    store.copy_from(oci.BlobStore(base.dir), base_blob.blob)

    wanted = {name for spec in images for name in spec.layers}
    layers: dict[str, oci.Layer] = {}
    with tempfile.TemporaryDirectory(prefix="palisade-images-") as work:
        stages = Path(work)

        def layer(
            name: str, created_by: str, layer_epoch: int, fill: Callable[[Path], None]
        ) -> None:
            if name not in wanted:
                return

            def make() -> oci.Layer:
                stage = stages / name
                stage.mkdir()
                fill(stage)
                return oci.write_layer(stage, store, epoch=layer_epoch, created_by=created_by)

            layers[name] = timer.step(name, make)

        layer(
            "deps",
            f"pip install --require-hashes -r {definition.LOCK_FILE}",
            path_epoch(repo, [definition.LOCK_FILE], epoch),
            lambda stage: pylayers.deps_layer(stage, repo, base.rootfs),
        )
        layer(
            "examples",
            f"copy examples/mcp_servers {definition.EXAMPLES_DIR}",
            path_epoch(repo, ["examples/mcp_servers"], epoch),
            lambda stage: pylayers.examples_layer(stage, repo),
        )
        layer(
            "app",
            f"pip install palisade-{version}-py3-none-any.whl",
            epoch,
            lambda stage: pylayers.app_layer(stage, repo, base.rootfs, epoch),
        )
        layer(
            "kube-mcp",
            f"copy kubernetes-mcp-server {definition.KUBE_MCP_VERSION}",
            path_epoch(repo, list(KUBE_MCP_SOURCES), epoch),
            lambda stage: pylayers.kube_mcp_layer(stage, repo, default_cache(env).parent),
        )

    entries = []
    report: dict[str, Any] = {"version": version, "source_date_epoch": epoch, "images": []}
    for spec in images:
        stack = [base_blob, *(layers[name] for name in spec.layers)]
        config = oci.ImageConfig(
            user=definition.USER,
            entrypoint=spec.entrypoint,
            cmd=spec.cmd,
            env=definition.ENV,
            working_dir=definition.WORKDIR,
            labels=labels(repo, version, spec.description),
            exposed_ports=spec.exposed_ports,
        )
        manifest = oci.write_image(store, config, stack, epoch)
        entry = oci.index_entry(manifest, spec.name, version)
        entries.append(entry)
        tarball = out / f"{spec.name}-{version}.oci.tar"
        oci.write_layout_tar(store, entry, tarball, epoch=epoch)
        report["images"].append(
            {
                "ref": f"{spec.name}:{version}",
                "containerd_name": oci.containerd_name(spec.name, version),
                "digest": manifest.digest,
                "tarball": str(tarball),
                "compressed_bytes": sum(la.blob.size for la in stack),
                "uncompressed_bytes": sum(la.uncompressed_size for la in stack),
                "layers": [
                    {"created_by": la.created_by, "digest": la.blob.digest, "size": la.blob.size}
                    for la in stack
                ],
            }
        )
    oci.write_layout(layout, entries)
    report["seconds"] = {**timer.steps, "total": timer.total}
    (out / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def print_report(report: Mapping[str, Any]) -> None:
    for image in report["images"]:
        print(f"{image['ref']}  {image['digest']}")
        print(
            f"  {_mb(image['compressed_bytes'])} compressed, "
            f"{_mb(image['uncompressed_bytes'])} uncompressed  {image['tarball']}"
        )
        for la in image["layers"]:
            print(f"    {la['digest'][:19]}  {_mb(la['size']):>9}  {la['created_by']}")
    steps = ", ".join(f"{k} {v} s" for k, v in report["seconds"].items())
    print(f"build time: {steps}")


def run_smoke(out: Path, report: Mapping[str, Any]) -> None:
    layout = out / "oci"
    for image in report["images"]:
        name = image["ref"].split(":")[0]
        with tempfile.TemporaryDirectory(prefix="palisade-smoke-") as tmp:
            root = smoke.unpack_image(layout, image["digest"], Path(tmp) / "rootfs")
            if name == definition.PALISADE.name:
                checks = smoke.check_palisade(root)
            elif name == definition.KUBE_MCP.name:
                checks = smoke.check_kube_mcp(root)
            else:
                checks = smoke.check_example_mcp(root)
            for line in checks:
                print(f"smoke {image['ref']}: {line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-images", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build/images")
    parser.add_argument("--cache", type=Path, default=None, help="default: $PALISADE_CACHE/images")
    parser.add_argument(
        "--image",
        action="append",
        choices=[spec.name for spec in definition.IMAGES],
        help="build only these (repeatable; default: all)",
    )
    parser.add_argument("--rebuild-base", action="store_true", help="debootstrap again")
    parser.add_argument("--smoke", action="store_true", help="run the built images' checks")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    version, app_version = project_version(REPO), chart_app_version(REPO)
    if app_version and app_version != version:
        log.warning("chart appVersion %s != project version %s", app_version, version)
    specs = [s for s in definition.IMAGES if not args.image or s.name in args.image]
    args.out.mkdir(parents=True, exist_ok=True)
    report = build(
        REPO, args.out, args.cache or default_cache(), images=specs, rebuild_base=args.rebuild_base
    )
    print_report(report)
    if args.smoke:
        run_smoke(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
