"""The layers above the Debian base, as directory trees ready for ``oci.write_layer``:

- ``deps``: images/requirements.lock installed by the build machine's pip into
  ``/usr/lib/python3/dist-packages`` (hashes required, wheels for the image's
  interpreter only), byte-compiled by the image's own python3;
- ``examples``: examples/mcp_servers under ``/app/examples/mcp_servers``;
- ``app``: the project's wheel installed the same way, and ``/usr/local/bin/palisade``.
- ``kube-mcp``: the cached kubernetes-mcp-server binary and its config (not Python,
  but a layer above the same base all the same).

pip leaves traces of the build machine that are removed here: console scripts whose
shebang names the build interpreter (``bin/``) and ``direct_url.json`` (the path of
the wheel file).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from images import definition
from images.rootfs import run, run_in_root

log = logging.getLogger(__name__)

WHEEL_SOURCES = ("pyproject.toml", "README.md", "palisade", "sidecar", "injector",
                 "nodeagent", "distributor")  # fmt: skip
"""What the wheel is built from (as in kind/Dockerfile's COPY lines)."""


def site_dir(stage: Path) -> Path:
    return stage / definition.SITE_PACKAGES.lstrip("/")


def pip_command() -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def source_files(repo: Path, paths: Sequence[str]) -> list[str]:
    """Files under ``paths``: tracked and untracked ones that git does not ignore (what
    a ``docker build`` of this working tree would copy, less caches)."""
    if (repo / ".git").exists() and shutil.which("git"):
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
            cwd=repo,
            check=True,
            capture_output=True,
        ).stdout
        names = {n for n in out.decode().split("\0") if n}
        return sorted(n for n in names if (repo / n).is_file())
    found = []
    for top in paths:
        base = repo / top
        if base.is_file():
            found.append(top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            found += [
                os.path.relpath(os.path.join(dirpath, f), repo)
                for f in filenames
                if not f.endswith(".pyc")
            ]
    return sorted(found)


def copy_files(repo: Path, files: Sequence[str], dest: Path) -> None:
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / name, target)
        if os.access(repo / name, os.X_OK):
            target.chmod(0o755)


def tidy_site(site: Path) -> None:
    """Remove what names the build machine: ``bin/`` and ``direct_url.json``."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()
        record = direct_url.with_name("RECORD")
        if record.is_file():
            lines = record.read_text().splitlines(keepends=True)
            kept = [line for line in lines if "/direct_url.json," not in line]
            record.write_text("".join(kept))


def byte_compile(base_rootfs: Path, site: Path) -> None:
    """Compile ``site`` with the image's python3, chrooted into the base with ``site``
    bound onto its dist-packages: the .pyc carry the image's paths and compiler."""
    run_in_root(
        base_rootfs,
        ["python3", "-B", "-m", "compileall", *definition.COMPILE_FLAGS, definition.SITE_PACKAGES],
        binds={site: definition.SITE_PACKAGES},
    )


def deps_layer(stage: Path, repo: Path, base_rootfs: Path) -> None:
    site = site_dir(stage)
    site.mkdir(parents=True)
    run(
        [
            *pip_command(),
            "install",
            "--quiet",
            "--target",
            str(site),
            *definition.PIP_TARGET_FLAGS,
            *definition.PIP_INTERPRETER_FLAGS,
            "-r",
            str(repo / definition.LOCK_FILE),
        ]
    )
    tidy_site(site)
    byte_compile(base_rootfs, site)


def examples_layer(stage: Path, repo: Path) -> None:
    files = source_files(repo, ["examples/mcp_servers"])
    dest = stage / definition.WORKDIR.lstrip("/")
    dest.mkdir(parents=True)
    copy_files(repo, files, dest)


def build_wheel(repo: Path, out: Path, epoch: int, env: Mapping[str, str] = os.environ) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the sources (setuptools' in-tree build/
    could hold files deleted since), with SOURCE_DATE_EPOCH."""
    with tempfile.TemporaryDirectory(prefix="palisade-src-") as src:
        copy_files(repo, source_files(repo, WHEEL_SOURCES), Path(src))
        run(
            [*pip_command(), "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), src],
            env={**env, "SOURCE_DATE_EPOCH": str(epoch)},
        )
    (wheel,) = out.glob("palisade-*.whl")
    return wheel


def app_layer(stage: Path, repo: Path, base_rootfs: Path, epoch: int) -> None:
    site = site_dir(stage)
    site.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="palisade-wheel-") as wheels:
        wheel = build_wheel(repo, Path(wheels), epoch)
        run(
            [
                *pip_command(),
                "install",
                "--quiet",
                "--no-deps",
                "--no-compile",
                "--target",
                str(site),
                str(wheel),
            ]
        )
    tidy_site(site)
    byte_compile(base_rootfs, site)
    script = stage / definition.ENTRY_SCRIPT.lstrip("/")
    script.parent.mkdir(parents=True)
    shutil.copyfile(repo / "images/files/palisade", script)
    script.chmod(0o755)
    (stage / definition.WORKDIR.lstrip("/")).mkdir(parents=True, exist_ok=True)


def kube_mcp_binary(cache_root: Path) -> Path:
    """The kubernetes-mcp-server binary scripts/setup.d/52-kubernetes-mcp-server.sh cached."""
    path = cache_root / "npm" / f"kubernetes-mcp-server-{definition.KUBE_MCP_VERSION}"
    binary = path / "kubernetes-mcp-server"
    if not os.access(binary, os.X_OK):
        raise SystemExit(
            f"kubernetes-mcp-server {definition.KUBE_MCP_VERSION} is not at {binary}: run "
            "make setup (scripts/setup.d/52-kubernetes-mcp-server.sh)"
        )
    return binary


def kube_mcp_layer(stage: Path, repo: Path, cache_root: Path) -> None:
    """The server's binary (0755) and its config (passthrough of the sidecar's token)."""
    binary = stage / definition.KUBE_MCP_BINARY.lstrip("/")
    binary.parent.mkdir(parents=True)
    shutil.copyfile(kube_mcp_binary(cache_root), binary)
    binary.chmod(0o755)
    config = stage / definition.KUBE_MCP_CONFIG.lstrip("/")
    config.parent.mkdir(parents=True)
    shutil.copyfile(repo / definition.KUBE_MCP_CONFIG_SOURCE, config)
