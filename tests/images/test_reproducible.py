"""Two builds from the same commit give the same image digests, the OCI writer and the
base normaliser fix every byte that would differ, and the built images run.

The unit tests need nothing. The build tests need root (debootstrap, chroot, mount
namespaces) and the package registries; they reuse the cached base
(``$PALISADE_CACHE/images``) and bootstrap it first when it is missing (about a
minute). A second debootstrap is not done here: it was measured by hand to give the
same base layer digest (docs/images.md), and doubling the slowest step on every CI run
buys little, since the base is cached by its recipe and rebuilt only when that changes.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from images import build, definition, oci, rootfs, smoke

REPO = Path(__file__).resolve().parents[2]
EPOCH = 1_700_000_000


def make_tree(root: Path, names: list[str], mtime: int) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
        os.utime(path, (mtime, mtime))
    (root / "bin").mkdir(exist_ok=True)
    (root / "bin/tool").write_text("#!/bin/sh\n")
    (root / "bin/tool").chmod(0o750)
    (root / "bin/link").symlink_to("tool")


def layer_members(store: oci.BlobStore, layer: oci.Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(store.path(layer.blob.digest), "r:gz") as tar:
        return tar.getmembers()


def pack(tmp: Path, root: Path, **kwargs: Any) -> tuple[oci.BlobStore, oci.Layer]:
    store = oci.BlobStore(tmp / "layout")
    layer = oci.write_layer(root, store, epoch=EPOCH, created_by="test", **kwargs)
    return store, layer


class TestTheLayerWriter:
    def test_entries_are_in_byte_order_with_each_directory_before_its_contents(
        self, tmp_path: Path
    ) -> None:
        make_tree(tmp_path / "t", ["z/b", "a/Z", "a/a", "B", "a/b/c"], 1)
        store, layer = pack(tmp_path, tmp_path / "t")
        names = [m.name for m in layer_members(store, layer)]
        expected = [
            "B",
            "a",
            "a/Z",
            "a/a",
            "a/b",
            "a/b/c",
            "bin",
            "bin/link",
            "bin/tool",
            "z",
            "z/b",
        ]
        assert names == expected

    def test_a_root_owned_layer_has_one_mtime_owner_0_and_umask_free_modes(
        self, tmp_path: Path
    ) -> None:
        make_tree(tmp_path / "t", ["a", "d/b"], 1)
        (tmp_path / "t/a").chmod(0o600)
        store, layer = pack(tmp_path, tmp_path / "t")
        by_name = {m.name: m for m in layer_members(store, layer)}
        assert {m.mtime for m in by_name.values()} == {EPOCH}
        assert {(m.uid, m.gid, m.uname, m.gname) for m in by_name.values()} == {(0, 0, "", "")}
        assert by_name["a"].mode == 0o644
        assert by_name["bin/tool"].mode == 0o755
        assert by_name["d"].mode == 0o755
        assert by_name["bin/link"].issym() and by_name["bin/link"].linkname == "tool"

    def test_clamping_keeps_older_mtimes_and_preserving_keeps_owner_and_mode(
        self, tmp_path: Path
    ) -> None:
        make_tree(tmp_path / "t", ["old", "new"], 1)
        os.utime(tmp_path / "t/new", (EPOCH + 99, EPOCH + 99))
        (tmp_path / "t/old").chmod(0o4711)
        store, layer = pack(tmp_path, tmp_path / "t", clamp=True, root_owned=False)
        by_name = {m.name: m for m in layer_members(store, layer)}
        assert by_name["old"].mtime == 1
        assert by_name["new"].mtime == EPOCH
        assert by_name["old"].mode == 0o4711
        assert (by_name["old"].uid, by_name["old"].gid) == (os.getuid(), os.getgid())
        assert by_name["old"].uname == ""

    def test_the_same_files_made_differently_give_the_same_digest(self, tmp_path: Path) -> None:
        make_tree(tmp_path / "one", ["x/1", "x/2", "y"], 5)
        make_tree(tmp_path / "two", ["y", "x/2", "x/1"], 77)
        os.utime(tmp_path / "two/x", (123, 123))
        _, first = pack(tmp_path, tmp_path / "one")
        _, second = pack(tmp_path, tmp_path / "two")
        assert first == second
        (tmp_path / "two/y").write_text("changed\n")
        _, third = pack(tmp_path, tmp_path / "two")
        assert third.blob.digest != first.blob.digest

    def test_the_gzip_header_has_no_mtime_and_no_file_name(self, tmp_path: Path) -> None:
        make_tree(tmp_path / "t", ["a"], 1)
        store, layer = pack(tmp_path, tmp_path / "t")
        blob = store.path(layer.blob.digest).read_bytes()
        assert blob[:3] == b"\x1f\x8b\x08"
        assert blob[3] == 0  # FLG: no FNAME, no FEXTRA, no FCOMMENT
        assert blob[4:8] == b"\0\0\0\0"  # MTIME
        assert layer.blob.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        raw = gzip.decompress(blob)
        assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert layer.uncompressed_size == len(raw)

    def test_hard_links_carry_the_data_once_and_excluded_paths_are_left_out(
        self, tmp_path: Path
    ) -> None:
        make_tree(tmp_path / "t", ["a", "dev/keep"], 1)
        os.link(tmp_path / "t/a", tmp_path / "t/b")
        os.mkfifo(tmp_path / "t/fifo")
        store, layer = pack(tmp_path, tmp_path / "t", exclude=rootfs.layer_exclude)
        by_name = {m.name: m for m in layer_members(store, layer)}
        assert by_name["a"].isreg() and by_name["a"].size > 0
        assert by_name["b"].islnk() and by_name["b"].linkname == "a"
        assert by_name["fifo"].isfifo()
        assert "dev" in by_name and "dev/keep" not in by_name

    def test_devices_and_sockets_have_no_tar_entry(self) -> None:
        st = os.stat_result((stat.S_IFCHR | 0o666, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        assert oci.tar_info("dev/null", st, epoch=EPOCH, clamp=False, root_owned=True) is None


class TestTheLayout:
    @pytest.fixture
    def image(self, tmp_path: Path) -> tuple[oci.BlobStore, dict[str, Any]]:
        make_tree(tmp_path / "t", ["usr/bin/x"], 1)
        store, layer = pack(tmp_path, tmp_path / "t")
        config = oci.ImageConfig(
            user="65532:65532",
            entrypoint=("palisade",),
            cmd=(),
            env=("A=1",),
            working_dir="/app",
            labels={"org.opencontainers.image.version": "1.0"},
        )
        manifest = oci.write_image(store, config, [layer], EPOCH)
        return store, oci.index_entry(manifest, "palisade", "1.0")

    def test_the_index_names_the_image_for_containerd_and_by_tag(
        self, image: tuple[oci.BlobStore, dict[str, Any]]
    ) -> None:
        store, entry = image
        oci.write_layout(store.layout, [entry])
        index = json.loads((store.layout / "index.json").read_text())
        (only,) = index["manifests"]
        assert only["annotations"] == {
            "io.containerd.image.name": "docker.io/library/palisade:1.0",
            "org.opencontainers.image.ref.name": "1.0",
        }
        assert only["platform"] == {"architecture": "amd64", "os": "linux"}
        manifest = store.read_json(only["digest"])
        config = store.read_json(manifest["config"]["digest"])
        assert config["created"] == "2023-11-14T22:13:20Z"
        assert config["config"]["User"] == "65532:65532"
        assert config["rootfs"]["diff_ids"] == [
            "sha256:" + hashlib.sha256(gzip.decompress(
                store.path(manifest["layers"][0]["digest"]).read_bytes()
            )).hexdigest()
        ]  # fmt: skip

    def test_the_tarball_is_sorted_and_holds_exactly_the_images_blobs(
        self, tmp_path: Path, image: tuple[oci.BlobStore, dict[str, Any]]
    ) -> None:
        store, entry = image
        store.put_bytes(b"unrelated", "x")
        out = tmp_path / "image.oci.tar"
        oci.write_layout_tar(store, entry, out, epoch=EPOCH)
        first = out.read_bytes()
        oci.write_layout_tar(store, entry, out, epoch=EPOCH)
        assert out.read_bytes() == first
        with tarfile.open(out) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {m.mtime for m in members} == {EPOCH}
        blobs = {n.rsplit("/", 1)[1] for n in names if n.startswith("blobs/sha256/")}
        assert blobs == {d.removeprefix("sha256:") for d in oci.referenced_blobs(
            store, entry["digest"]
        )}  # fmt: skip
        assert {"oci-layout", "index.json"} <= set(names)

    def test_containerd_names_keep_a_registry_and_default_docker_hub(self) -> None:
        assert oci.containerd_name("palisade", "1") == "docker.io/library/palisade:1"
        assert oci.containerd_name("acme/palisade", "1") == "docker.io/acme/palisade:1"
        assert oci.containerd_name("reg.example:5000/p", "1") == "reg.example:5000/p:1"


class TestTheBaseNormaliser:
    def test_shadow_days_placeholders_and_mtimes_are_fixed(self, tmp_path: Path) -> None:
        root = tmp_path / "root"
        (root / "etc").mkdir(parents=True)
        for name in ("passwd", "group", "gshadow"):
            (root / "etc" / name).write_text("root:x:0:0:root:/root:/bin/bash\n")
        (root / "etc/shadow").write_text("root:*:20789:0:99999:7:::\nnobody:*:20788:0:99999:7:::\n")
        (root / "etc/hostname").write_text("build-machine\n")
        (root / "home").mkdir()
        os.utime(root / "etc/shadow", (EPOCH + 5, EPOCH + 5))
        rootfs.normalise(root, EPOCH)
        day = str(EPOCH // 86400)
        shadow = (root / "etc/shadow").read_text().splitlines()
        assert [line.split(":")[2] for line in shadow] == [day, day, day]
        assert shadow[-1].startswith("nonroot:!:")
        assert "nonroot:x:65532:65532:" in (root / "etc/passwd").read_text()
        assert (root / "etc/hostname").read_text() == ""
        assert max(p.lstat().st_mtime for p in root.rglob("*")) <= EPOCH

    def test_trim_keeps_copyright_and_empties_caches(self, tmp_path: Path) -> None:
        root = tmp_path / "root"
        make_tree(
            root,
            [
                "usr/share/doc/bash/copyright",
                "usr/share/doc/bash/changelog.gz",
                "usr/share/locale/de/LC_MESSAGES/x.mo",
                "usr/share/locale/locale.alias",
                "var/lib/apt/lists/partial/x",
                "var/lib/dpkg/status-old",
                "var/log/dpkg.log",
            ],
            1,
        )
        rootfs.trim(root)
        left = {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}
        assert "usr/share/doc/bash/copyright" in left
        assert "usr/share/locale/locale.alias" in left
        assert not left & {"usr/share/doc/bash/changelog.gz", "var/lib/dpkg/status-old"}
        assert (root / "var/lib/apt/lists/partial").is_dir()
        assert not (root / "usr/share/locale/de").exists()

    def test_the_mirror_is_read_from_apt_sources_or_the_environment(self, tmp_path: Path) -> None:
        apt = tmp_path / "apt"
        (apt / "sources.list.d").mkdir(parents=True)
        (apt / "sources.list.d/debian.sources").write_text(
            "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n\n"
            "Types: deb\n# a comment\nURIs: http://mirror.test/debian/\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n"
        )
        (apt / "sources.list.d/other.list").write_text(
            "deb [arch=amd64] https://elsewhere.test/apt stable main\n"
        )
        assert rootfs.debian_mirror("bookworm", {}, apt) == "http://mirror.test/debian"
        env = {rootfs.MIRROR_ENV: "http://local.test/debian/"}
        assert rootfs.debian_mirror("bookworm", env, apt) == "http://local.test/debian"
        with pytest.raises(SystemExit):
            rootfs.debian_mirror("bookworm", {}, tmp_path / "none")

    def test_the_base_key_follows_the_recipe(self) -> None:
        key = rootfs.base_key("bookworm", "minbase", ["python3", "iptables"], "http://m/debian")
        assert key == rootfs.base_key(
            "bookworm", "minbase", ["iptables", "python3"], "http://m/debian"
        )
        assert key != rootfs.base_key(
            "trixie", "minbase", ["python3", "iptables"], "http://m/debian"
        )


# --- real builds ----------------------------------------------------------------------

needs_root = pytest.mark.e2e
"""Real builds: root (debootstrap, chroot, mount namespaces) and the package registries."""


def _require_root() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("chroot"):
        pytest.fail("building images needs root, unshare and chroot (run as root)", pytrace=False)


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Both images built twice from this checkout into two fresh output folders."""
    _require_root()
    cache = build.default_cache()
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(build.source_date_epoch(REPO))}
    reports = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name)
        reports.append(build.build(REPO, out, cache, env=env) | {"out": str(out)})
    yield reports


@needs_root
@pytest.mark.slow
@pytest.mark.timeout(1200)
class TestTwoBuildsAgree:
    def test_two_builds_from_the_same_commit_give_the_same_digests(
        self, two_builds: list[dict[str, Any]]
    ) -> None:
        first, second = ([(i["ref"], i["digest"]) for i in r["images"]] for r in two_builds)
        assert first == second
        assert [i["ref"] for i in two_builds[0]["images"]] == [
            f"{spec.name}:{two_builds[0]['version']}" for spec in definition.IMAGES
        ]

    def test_the_tarballs_are_byte_identical_and_share_the_lower_layers(
        self, two_builds: list[dict[str, Any]]
    ) -> None:
        first, second = two_builds
        for a, b in zip(first["images"], second["images"], strict=True):
            assert Path(a["tarball"]).read_bytes() == Path(b["tarball"]).read_bytes()
        palisade, example, kube_mcp = (
            [la["digest"] for la in image["layers"]] for image in first["images"]
        )
        assert palisade[:3] == example  # base, deps, examples
        assert kube_mcp[:1] == palisade[:1] and len(kube_mcp) == 2  # base, kube-mcp

    def test_the_palisade_image_runs_as_its_user(
        self, two_builds: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        report = two_builds[0]
        image = report["images"][0]
        root = smoke.unpack_image(Path(report["out"]) / "oci", image["digest"], tmp_path / "r")
        checks = smoke.check_palisade(root)
        assert any(line.startswith("iptables -V: iptables v1.8") for line in checks)
        assert not (root / "usr/lib/python3/dist-packages/bin").exists()
        assert not list((root / "usr/lib/python3/dist-packages").glob("*/direct_url.json"))
        pycs = list((root / "usr/lib/python3/dist-packages/palisade").rglob("*.pyc"))
        assert pycs and all(p.read_bytes()[4:8] == b"\x01\0\0\0" for p in pycs)  # unchecked

    def test_the_example_image_serves_mcp_on_its_entrypoint(
        self, two_builds: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        report = two_builds[0]
        image = report["images"][1]
        root = smoke.unpack_image(Path(report["out"]) / "oci", image["digest"], tmp_path / "r")
        assert smoke.check_example_mcp(root)

    def test_the_kubernetes_mcp_image_answers_only_requests_that_carry_a_token(
        self, two_builds: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        report = two_builds[0]
        image = report["images"][2]
        assert image["ref"].startswith(f"{definition.KUBE_MCP.name}:")
        root = smoke.unpack_image(Path(report["out"]) / "oci", image["digest"], tmp_path / "r")
        binary = root / definition.KUBE_MCP_BINARY.lstrip("/")
        assert binary.stat().st_mode & 0o777 == 0o755
        checks = smoke.check_kube_mcp(root)
        assert checks[0] == f"kubernetes-mcp-server --version: v{definition.KUBE_MCP_VERSION}"

    def test_the_layout_index_names_both_images(self, two_builds: list[dict[str, Any]]) -> None:
        report = two_builds[0]
        index = json.loads((Path(report["out"]) / "oci/index.json").read_text())
        names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
        version = report["version"]
        assert names == sorted(
            f"docker.io/library/{spec.name}:{version}" for spec in definition.IMAGES
        )
        with tarfile.open(report["images"][0]["tarball"]) as tar:
            member = tar.extractfile("index.json")
            assert member is not None
            (entry,) = json.load(io.TextIOWrapper(member))["manifests"]
        assert entry["digest"] == report["images"][0]["digest"]
