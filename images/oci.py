"""A small deterministic OCI image writer: layers from directory trees, config, manifest,
index and the layout tarball that ``ctr -n k8s.io images import`` reads.

Why not umoci: the bytes of a layer are the whole reproducibility story, and here
every one of them is decided in one place: entries sorted by byte order, directories
before their contents, numeric ownership with empty user and group names, mtimes set
(or clamped) to one epoch, no xattrs, no access times, a gzip header with mtime 0
and no file name, one fixed compression level. The layers of two images that share
a base are then shared byte for byte, and a unit test can pin each rule. The price
is that only what a rootfs needs is supported: regular files, directories, symlinks,
hard links and fifos; device nodes and sockets are left out (the runtime provides
/dev).

Layout written by :func:`write_layout`::

    oci-layout                  {"imageLayoutVersion": "1.0.0"}
    index.json                  one manifest per image, named by annotations
    blobs/sha256/<hex>          layers (tar+gzip), configs, manifests
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

GZIP_LEVEL = 6
"""zlib level 6: within 2% of level 9 on a Python rootfs, at about half the time."""

ANNOTATION_REF = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

Exclude = Callable[[str], bool]
"""Given an entry's path in the layer (``usr/bin/python3``), whether to leave it out."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layer:
    """A written layer: its blob and what the image config needs."""

    blob: Descriptor
    diff_id: str
    """sha256 of the uncompressed tar."""
    uncompressed_size: int
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "blob": self.blob.to_json(),
            "diff_id": self.diff_id,
            "uncompressed_size": self.uncompressed_size,
            "created_by": self.created_by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layer:
        blob = data["blob"]
        return cls(
            Descriptor(blob["mediaType"], blob["digest"], blob["size"]),
            data["diff_id"],
            data["uncompressed_size"],
            data["created_by"],
        )


def canonical_json(obj: object) -> bytes:
    """The one JSON encoding of every config, manifest and index written here."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BlobStore:
    """Content-addressed ``blobs/sha256`` of an OCI layout."""

    def __init__(self, layout: Path) -> None:
        self.layout = layout
        self.dir = layout / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        if algo != "sha256" or len(hexdigest) != 64:
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.dir / hexdigest

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return Descriptor(media_type, digest, len(data))

    def put_json(self, obj: object, media_type: str) -> Descriptor:
        return self.put_bytes(canonical_json(obj), media_type)

    def copy_from(self, other: BlobStore, desc: Descriptor) -> None:
        dst = self.path(desc.digest)
        if not dst.exists():
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(other.path(desc.digest), tmp)
            tmp.replace(dst)

    def read_json(self, digest: str) -> Any:
        return json.loads(self.path(digest).read_bytes())


# --- layers ---------------------------------------------------------------------------


def _sorted_entries(directory: Path) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return sorted(it, key=lambda e: os.fsencode(e.name))


def iter_tree(root: Path, exclude: Exclude | None = None) -> Iterator[tuple[str, Path]]:
    """Every path under ``root`` as (layer path, host path): byte order, parents first."""

    def walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        for entry in _sorted_entries(directory):
            name = prefix + entry.name
            if exclude is not None and exclude(name):
                continue
            path = Path(entry.path)
            yield name, path
            if entry.is_dir(follow_symlinks=False):
                yield from walk(path, name + "/")

    yield from walk(root, "")


def normal_mode(st_mode: int) -> int:
    """The permission bits of an entry in a root-owned layer: 0755 or 0644, 0777 links."""
    if stat.S_ISLNK(st_mode):
        return 0o777
    if stat.S_ISDIR(st_mode) or st_mode & 0o111:
        return 0o755
    return 0o644


def tar_info(
    name: str,
    st: os.stat_result,
    *,
    epoch: int,
    clamp: bool,
    root_owned: bool,
    link_target: str = "",
) -> tarfile.TarInfo | None:
    """The tar header of one entry, normalised; None for what a layer leaves out."""
    info = tarfile.TarInfo(name)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = link_target
    elif stat.S_ISREG(mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:  # devices and sockets: the runtime makes /dev
        return None
    info.mode = normal_mode(mode) if root_owned else stat.S_IMODE(mode)
    info.uid, info.gid = (0, 0) if root_owned else (st.st_uid, st.st_gid)
    info.uname = info.gname = ""
    mtime = int(st.st_mtime)
    info.mtime = min(mtime, epoch) if clamp else epoch
    return info


class _Tee(io.RawIOBase):
    """Hashes and counts what tarfile writes, and passes it on to gzip."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        self.sink.write(view)
        return len(view)


def write_layer(
    root: Path,
    store: BlobStore,
    *,
    epoch: int,
    created_by: str,
    clamp: bool = False,
    root_owned: bool = True,
    exclude: Exclude | None = None,
) -> Layer:
    """Pack the tree under ``root`` into a tar+gzip layer blob.

    ``clamp``: keep mtimes older than ``epoch`` (a distribution's files, whose .pyc
    record their source's mtime) and clamp newer ones; otherwise every mtime is
    ``epoch``. ``root_owned``: 0:0 and 0755/0644 modes (files from pip or git, whose
    modes follow the umask); otherwise ownership and modes are kept as they are.
    """
    tmp = store.dir / f".layer-{os.getpid()}.tmp"
    seen: dict[tuple[int, int], str] = {}
    with tmp.open("wb") as raw:
        outer = _Tee(raw)
        with gzip.GzipFile(
            filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=outer, mtime=0
        ) as gz:
            inner = _Tee(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name, path in iter_tree(root, exclude):
                    _add(tar, name, path, seen, epoch=epoch, clamp=clamp, root_owned=root_owned)
    digest = "sha256:" + outer.sha.hexdigest()
    tmp.replace(store.path(digest))
    return Layer(
        Descriptor(MEDIA_LAYER, digest, outer.size),
        "sha256:" + inner.sha.hexdigest(),
        inner.size,
        created_by,
    )


def _add(
    tar: tarfile.TarFile,
    name: str,
    path: Path,
    seen: dict[tuple[int, int], str],
    *,
    epoch: int,
    clamp: bool,
    root_owned: bool,
) -> None:
    st = path.lstat()
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    info = tar_info(name, st, epoch=epoch, clamp=clamp, root_owned=root_owned, link_target=target)
    if info is None:
        return
    if info.type == tarfile.REGTYPE and st.st_nlink > 1:
        key = (st.st_dev, st.st_ino)
        if key in seen:  # the first path in sort order carries the data
            info.type, info.linkname, info.size = tarfile.LNKTYPE, seen[key], 0
            tar.addfile(info)
            return
        seen[key] = name
    if info.type == tarfile.REGTYPE:
        with path.open("rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


# --- config, manifest, index ----------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config."""

    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str
    labels: Mapping[str, str]
    exposed_ports: tuple[str, ...] = ()


def image_config(config: ImageConfig, layers: Iterable[Layer], created: int) -> dict[str, Any]:
    layers = list(layers)
    runtime: dict[str, Any] = {
        "User": config.user,
        "Entrypoint": list(config.entrypoint),
        "Env": list(config.env),
        "WorkingDir": config.working_dir,
        "Labels": dict(config.labels),
    }
    if config.cmd:
        runtime["Cmd"] = list(config.cmd)
    if config.exposed_ports:
        runtime["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    return {
        "created": rfc3339(created),
        "architecture": "amd64",
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": rfc3339(created), "created_by": la.created_by} for la in layers],
    }


def write_image(
    store: BlobStore, config: ImageConfig, layers: Iterable[Layer], created: int
) -> Descriptor:
    """Write config and manifest blobs; returns the manifest's descriptor."""
    layers = list(layers)
    config_desc = store.put_json(image_config(config, layers, created), MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [layer.blob.to_json() for layer in layers],
    }
    return store.put_json(manifest, MEDIA_MANIFEST)


def containerd_name(repository: str, tag: str) -> str:
    """The name containerd and the kubelet give ``repository:tag`` (Docker's normal form)."""
    first = repository.split("/", 1)[0]
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        return f"{repository}:{tag}"
    if "/" not in repository:
        repository = "library/" + repository
    return f"docker.io/{repository}:{tag}"


def index_entry(manifest: Descriptor, repository: str, tag: str) -> dict[str, Any]:
    entry = manifest.to_json()
    entry["platform"] = {"architecture": "amd64", "os": "linux"}
    entry["annotations"] = {
        ANNOTATION_CONTAINERD_NAME: containerd_name(repository, tag),
        ANNOTATION_REF: tag,
    }
    return entry


def write_layout(layout: Path, entries: Iterable[Mapping[str, Any]]) -> None:
    """Write ``oci-layout`` and ``index.json`` (entries sorted by image name)."""
    entries = sorted(entries, key=lambda e: e["annotations"][ANNOTATION_CONTAINERD_NAME])
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries}
    (layout / "index.json").write_bytes(canonical_json(index))


def referenced_blobs(store: BlobStore, manifest_digest: str) -> list[str]:
    """The manifest, its config and its layers."""
    manifest = store.read_json(manifest_digest)
    return [manifest_digest, manifest["config"]["digest"]] + [
        layer["digest"] for layer in manifest["layers"]
    ]


def write_layout_tar(store: BlobStore, entry: Mapping[str, Any], out: Path, *, epoch: int) -> None:
    """One image as an OCI layout tarball, for ``ctr images import``."""
    members: dict[str, bytes | Path | None] = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical_json(
            {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]}
        ),
        "blobs": None,
        "blobs/sha256": None,
    }
    for digest in referenced_blobs(store, entry["digest"]):
        members[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = store.path(digest)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            content = members[name]
            info = tarfile.TarInfo(name)
            info.mtime = epoch
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, bytes):
                info.mode, info.size = 0o644, len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.mode, info.size = 0o644, content.stat().st_size
                with content.open("rb") as f:
                    tar.addfile(info, f)
    tmp.replace(out)


def unpack(store: BlobStore, manifest_digest: str, dest: Path) -> None:
    """Extract an image's layers in order into ``dest`` (no whiteouts are written here)."""
    manifest = store.read_json(manifest_digest)
    for layer in manifest["layers"]:
        with tarfile.open(store.path(layer["digest"]), "r:gz") as tar:
            if hasattr(tarfile, "fully_trusted_filter"):
                tar.extraction_filter = tarfile.fully_trusted_filter
            tar.extractall(dest, numeric_owner=True)  # noqa: S202 - our own layers
