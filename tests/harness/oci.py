"""A tiny, deterministic writer of single-layer OCI image archives.

The test node's images (pause, CoreDNS, the ``hello`` workload) are one static
binary each, so an image is one layer holding that binary plus a few empty
directories, a config and a manifest. The archive is an OCI image layout in a
tar file, which ``ctr -n k8s.io images import`` accepts; the index entry carries
``io.containerd.image.name`` so containerd names the image exactly as given.

Same inputs, same bytes: file times are zero, owners root, entries sorted, gzip
without a name or time. Only the standard library is used, because
scripts/setup.d/42-node.sh runs this module (``python -m tests.harness.oci``)
before any test dependency matters.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX = "application/vnd.oci.image.index.v1+json"
#: Empty directories every image gets: runc and the kubelet mount onto them.
BASE_DIRS = ("dev", "etc", "proc", "sys", "tmp", "var", "var/run")


@dataclass(frozen=True)
class ImageSpec:
    """What goes into one image."""

    name: str
    """Full reference, e.g. ``palisade.local/hello:1``."""
    files: Mapping[str, bytes]
    """Path in the image (no leading slash) -> content; all files are mode 0755."""
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/bin:/usr/bin:/bin:/",)
    architecture: str = "amd64"
    labels: Mapping[str, str] = field(default_factory=dict)


def _tar_info(name: str, *, directory: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o1777 if name == "tmp" else 0o755
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """The uncompressed layer: base directories, parents of each file, the files."""
    dirs = set(BASE_DIRS)
    for path in files:
        dirs.update(_parents(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_tar_info(d, directory=True))
        for path in sorted(files):
            data = files[path]
            tar.addfile(_tar_info(path, directory=False, size=len(data)), io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data), **extra}


def image_blobs(spec: ImageSpec) -> tuple[bytes, dict[str, bytes]]:
    """``(index.json, {digest: blob})`` for the image."""
    layer = layer_tar(spec.files)
    compressed = _gzip(layer)
    config = _json(
        {
            "architecture": spec.architecture,
            "os": "linux",
            "config": {
                "Entrypoint": list(spec.entrypoint),
                "Cmd": list(spec.cmd),
                "Env": list(spec.env),
                "WorkingDir": "/",
                "Labels": dict(spec.labels),
            },
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
            "history": [{"created_by": "tests/harness/oci.py"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": _descriptor(CONFIG, config),
            "layers": [_descriptor(LAYER, compressed)],
        }
    )
    tag = spec.name.rsplit(":", 1)[-1] if ":" in spec.name.rsplit("/", 1)[-1] else "latest"
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                _descriptor(
                    MANIFEST,
                    manifest,
                    platform={"architecture": spec.architecture, "os": "linux"},
                    annotations={
                        "io.containerd.image.name": spec.name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                )
            ],
        }
    )
    blobs = {_digest(b): b for b in (compressed, config, manifest)}
    return index, blobs


def archive(spec: ImageSpec) -> bytes:
    """The whole OCI layout as tar bytes."""
    index, blobs = image_blobs(spec)
    entries: dict[str, bytes] = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
    }
    for digest, blob in blobs.items():
        entries["blobs/sha256/" + digest.removeprefix("sha256:")] = blob
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(d, directory=True))
        for name in sorted(entries):
            info = _tar_info(name, directory=False, size=len(entries[name]))
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(entries[name]))
    return buf.getvalue()


def write_archive(spec: ImageSpec, out: Path) -> None:
    """Write the archive atomically (a half-written tar is never left at ``out``)."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(archive(spec))
    tmp.replace(out)


def _parse_file(arg: str) -> tuple[str, bytes]:
    target, sep, source = arg.partition("=")
    if not sep or not target.strip("/"):
        raise argparse.ArgumentTypeError(f"--file wants IMAGE_PATH=HOST_PATH, got {arg!r}")
    return target.strip("/"), Path(source).read_bytes()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.harness.oci --name N --out X.tar --file /bin=path --entrypoint /bin``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--file", action="append", type=_parse_file, default=[], required=True)
    p.add_argument("--entrypoint", action="append", required=True)
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--arch", default="amd64")
    a = p.parse_args(argv)
    spec = ImageSpec(
        name=a.name,
        files=dict(a.file),
        entrypoint=tuple(a.entrypoint),
        cmd=tuple(a.cmd),
        architecture=a.arch,
    )
    write_archive(spec, a.out)


if __name__ == "__main__":
    main()
