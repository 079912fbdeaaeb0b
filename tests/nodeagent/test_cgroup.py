"""/proc/<pid>/cgroup -> pod UID and container, on real-world samples of every format."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.cgroup import CgroupIdentity, Namespace, ProcCgroupReader, locate, parse

UID = "8dbc5577-d0e2-4706-8787-57d52c03ddf2"
UID_ = UID.replace("-", "_")
CID = "14011c7d92a9e513dfd69211da0413dbf319a5e45a02b354ba6e98e10272542d"

V1_CGROUPFS_DOCKER = f"""12:pids:/kubepods/burstable/pod{UID}/{CID}
11:hugetlb:/kubepods/burstable/pod{UID}/{CID}
10:net_cls,net_prio:/kubepods/burstable/pod{UID}/{CID}
9:memory:/kubepods/burstable/pod{UID}/{CID}
8:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}
7:devices:/kubepods/burstable/pod{UID}/{CID}
1:name=systemd:/kubepods/burstable/pod{UID}/{CID}
"""

BURSTABLE = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
BESTEFFORT = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"

V1_SYSTEMD_CONTAINERD = f"""12:memory:{BURSTABLE}/cri-containerd-{CID}.scope
11:cpu,cpuacct:{BURSTABLE}/cri-containerd-{CID}.scope
1:name=systemd:{BURSTABLE}/cri-containerd-{CID}.scope
0::/
"""

V1_SYSTEMD_CRIO = f"""11:devices:{BESTEFFORT}/crio-{CID}.scope
10:memory:{BESTEFFORT}/crio-{CID}.scope
1:name=systemd:{BESTEFFORT}/crio-{CID}.scope
"""

V1_SYSTEMD_DOCKER = f"""9:memory:/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope
1:name=systemd:/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope
"""

V1_CGROUPFS_CRIO = f"""9:memory:/kubepods/besteffort/pod{UID}/crio-{CID}
1:name=systemd:/kubepods/besteffort/pod{UID}/crio-{CID}
"""

V2_SYSTEMD_CONTAINERD = (
    f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
    f"cri-containerd-{CID}.scope\n"
)
V2_SYSTEMD_CRIO = (
    f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
    f"crio-{CID}.scope\n"
)
V2_CGROUPFS_CONTAINERD = f"0::/kubepods/burstable/pod{UID}/{CID}\n"
V2_CGROUPFS_GUARANTEED = f"0::/kubepods/pod{UID}/{CID}\n"
V2_KIND_NESTED = (
    f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
    f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n"
)
V1_CONTAINERD_COLON_FORM = (
    f"4:memory:/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:"
    f"cri-containerd:{CID}\n"
)

#: Every v1 hierarchy of a hybrid host like the test machines' (cgroup v1 plus a
#: cgroup2 at /sys/fs/cgroup/unified; the controller set of `cat /proc/self/cgroup`
#: there), with kubelet's cgroupfs driver on containerd v2 + runc: every
#: controller's line names the container, and so does the unified one.
HYBRID_CONTROLLERS = (
    "9:name=systemd",
    "8:pids",
    "7:blkio",
    "6:freezer",
    "5:devices",
    "4:memory",
    "3:cpuset",
    "2:cpuacct",
    "1:cpu",
)


def _hybrid(path: str, unified: str | None = None) -> str:
    lines = [f"{c}:{path}" for c in HYBRID_CONTROLLERS]
    return "\n".join([*lines, f"0::{path if unified is None else unified}"]) + "\n"


V1_HYBRID_BESTEFFORT = _hybrid(f"/kubepods/besteffort/pod{UID}/{CID}")
V1_HYBRID_BURSTABLE_UNIFIED_ROOT = _hybrid(f"/kubepods/burstable/pod{UID}/{CID}", unified="/")
V1_HYBRID_GUARANTEED = _hybrid(f"/kubepods/pod{UID}/{CID}")
V1_HYBRID_UNIFIED_ELSEWHERE = _hybrid(
    f"/kubepods/besteffort/pod{UID}/{CID}", unified="/system.slice/containerd.service"
)
V1_CGROUPFS_UNDERSCORE_UID = f"4:memory:/kubepods/besteffort/pod{UID_}/{CID}\n0::/\n"
#: An agent in a cgroup namespace rooted two levels down (as the kernel renders it:
#: read on a test machine through `unshare -C`).
V1_NESTED_CGROUPNS = f"4:memory:/../../kubepods/besteffort/pod{UID}/{CID}\n1:cpu:/\n0::/\n"
V2_CGROUPNS_OTHER_POD_CGROUPFS = f"0::/../../pod{UID}/{CID}\n"
V2_CGROUPNS_OTHER_QOS_SYSTEMD = (
    f"0::/../../../kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
    f"cri-containerd-{CID}.scope\n"
)
V2_DELETED = f"0::/kubepods/besteffort/pod{UID}/{CID} (deleted)\n"


@pytest.mark.parametrize(
    ("text", "version", "driver", "runtime"),
    [
        pytest.param(V1_HYBRID_BESTEFFORT, 2, "cgroupfs", "", id="hybrid-besteffort"),
        pytest.param(
            V1_HYBRID_BURSTABLE_UNIFIED_ROOT, 1, "cgroupfs", "", id="hybrid-burstable-unified-root"
        ),
        pytest.param(V1_HYBRID_GUARANTEED, 2, "cgroupfs", "", id="hybrid-guaranteed"),
        pytest.param(V1_HYBRID_UNIFIED_ELSEWHERE, 1, "cgroupfs", "", id="hybrid-unified-not-a-pod"),
        pytest.param(V1_CGROUPFS_UNDERSCORE_UID, 1, "cgroupfs", "", id="v1-underscore-uid"),
        pytest.param(V1_NESTED_CGROUPNS, 1, "cgroupfs", "", id="v1-nested-cgroupns"),
        pytest.param(V2_CGROUPNS_OTHER_POD_CGROUPFS, 2, "cgroupfs", "", id="v2-cgroupns-cgroupfs"),
        pytest.param(
            V2_CGROUPNS_OTHER_QOS_SYSTEMD, 2, "systemd", "containerd", id="v2-cgroupns-systemd"
        ),
        pytest.param(V2_DELETED, 2, "cgroupfs", "", id="v2-deleted-cgroup"),
        pytest.param(V1_CGROUPFS_DOCKER, 1, "cgroupfs", "", id="v1-cgroupfs-docker/containerd"),
        pytest.param(V1_SYSTEMD_CONTAINERD, 1, "systemd", "containerd", id="v1-systemd-containerd"),
        pytest.param(V1_SYSTEMD_CRIO, 1, "systemd", "cri-o", id="v1-systemd-crio"),
        pytest.param(V1_SYSTEMD_DOCKER, 1, "systemd", "docker", id="v1-systemd-docker"),
        pytest.param(V1_CGROUPFS_CRIO, 1, "cgroupfs", "cri-o", id="v1-cgroupfs-crio"),
        pytest.param(V2_SYSTEMD_CONTAINERD, 2, "systemd", "containerd", id="v2-systemd-containerd"),
        pytest.param(V2_SYSTEMD_CRIO, 2, "systemd", "cri-o", id="v2-systemd-crio"),
        pytest.param(V2_CGROUPFS_CONTAINERD, 2, "cgroupfs", "", id="v2-cgroupfs-containerd"),
        pytest.param(V2_CGROUPFS_GUARANTEED, 2, "cgroupfs", "", id="v2-cgroupfs-guaranteed"),
        pytest.param(V2_KIND_NESTED, 2, "systemd", "containerd", id="v2-kind-nested-kubelet"),
        pytest.param(V1_CONTAINERD_COLON_FORM, 1, "systemd", "containerd", id="v1-colon-form"),
    ],
)
def test_every_known_format_yields_the_pod_uid_and_container_id(
    text: str, version: int, driver: str, runtime: str
) -> None:
    assert parse(text) == CgroupIdentity(UID, CID, runtime, version, driver)


def test_systemd_slice_underscores_become_the_dashes_of_the_real_uid() -> None:
    ident = parse(V2_SYSTEMD_CONTAINERD)
    assert ident is not None and ident.pod_uid == UID and "_" not in ident.pod_uid


def test_static_pod_hash_uids_are_recognised() -> None:
    uid = "6f1d9c2b3a4e5f60718293a4b5c6d7e8"
    ident = parse(f"0::/kubepods/burstable/pod{uid}/{CID}\n")
    assert ident is not None and ident.pod_uid == uid


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0::/system.slice/sshd.service\n", id="host-service"),
        pytest.param("0::/user.slice/user-1000.slice/session-3.scope\n", id="user-session"),
        pytest.param("0::/\n", id="root"),
        pytest.param("0::/kubepods.slice/kubepods-burstable.slice\n", id="qos-slice-only"),
        pytest.param("12:memory:/docker/" + CID + "\n", id="plain-docker-not-kubernetes"),
        pytest.param("", id="empty"),
        pytest.param("garbage without colons\n", id="garbage"),
        pytest.param("0::/../../../..\n", id="v2-host-seen-from-a-cgroupns"),
        pytest.param(
            "0::/../../../../system.slice/containerd.service\n", id="v2-host-service-from-cgroupns"
        ),
        pytest.param(_hybrid("/"), id="hybrid-root"),
        pytest.param(
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/49f3656ceed192d86bc872db272acd3d\n"
            "1:cpu:/\n0::/\n",
            id="test-machine-sandboxed-process",
        ),
        pytest.param("0::/kubepods/besteffort\n", id="qos-dir-only"),
        pytest.param(f"0::/kubepods/besteffort/pod{UID[:-1]}/{CID}\n", id="short-uid"),
        pytest.param(f"0::/kubepods/besteffort/xpod{UID}/{CID}\n", id="not-a-pod-segment"),
        pytest.param(f"0::/system.slice/libpod-{CID}.scope\n", id="podman-container"),
    ],
)
def test_processes_outside_pods_have_no_identity(text: str) -> None:
    assert parse(text) is None
    assert locate(text).kind == "host"


def test_containerd_sandbox_and_container_ids_both_name_the_pod() -> None:
    sandbox = "b" * 64
    pause = parse(f"0::/kubepods/besteffort/pod{UID}/{sandbox}\n")
    app = parse(f"0::/kubepods/besteffort/pod{UID}/{CID}\n")
    assert pause is not None and app is not None
    assert (pause.pod_uid, pause.container_id) == (UID, sandbox)
    assert (app.pod_uid, app.container_id) == (UID, CID)


def test_a_pod_level_process_names_the_pod_but_no_container() -> None:
    ident = parse(f"0::/kubepods/burstable/pod{UID}\n")
    assert ident == CgroupIdentity(UID, "", "", 2, "cgroupfs")


def test_a_container_subcgroup_still_names_its_container() -> None:
    ident = parse(f"0::{BURSTABLE}/cri-containerd-{CID}.scope/init.scope\n")
    assert ident is not None and (ident.pod_uid, ident.container_id) == (UID, CID)


def test_a_kubelet_nested_in_another_clusters_pod_yields_both_pods_outermost_first() -> None:
    outer = "11111111-2222-3333-4444-555555555555"
    text = (
        f"4:memory:/kubepods/burstable/pod{outer}/{'a' * 64}/kubepods/besteffort/pod{UID}/{CID}\n"
    )
    where = locate(text)
    assert where.kind == "pod"
    assert [(p.pod_uid, p.container_id) for p in where.pods] == [(outer, "a" * 64), (UID, CID)]


OWN = Namespace(private=True, pod_uid="0b7e8a1c-1d2e-4f3a-9b8c-7d6e5f4a3b2c")
SIBLING = "c" * 64


@pytest.mark.parametrize(
    ("text", "ns", "kind", "pod_uid", "container_id"),
    [
        pytest.param("0::/\n", OWN, "own-pod", OWN.pod_uid, "", id="own-container"),
        pytest.param("0::/\n", Namespace(private=True), "own-pod", None, None, id="own-no-uid"),
        pytest.param(f"0::/../{SIBLING}\n", OWN, "own-pod", OWN.pod_uid, SIBLING, id="sibling"),
        pytest.param(
            f"0::/../cri-containerd-{SIBLING}.scope\n",
            OWN,
            "own-pod",
            OWN.pod_uid,
            SIBLING,
            id="sibling-systemd",
        ),
        pytest.param("0::/../../../..\n", OWN, "host", None, None, id="host-above"),
        pytest.param("0::/../something\n", OWN, "host", None, None, id="sibling-not-a-container"),
        pytest.param("0::/\n", Namespace(), "host", None, None, id="root-in-host-namespace"),
        pytest.param(
            f"0::/../../pod{UID}/{CID}\n", OWN, "pod", UID, CID, id="other-pod-from-namespace"
        ),
    ],
)
def test_paths_inside_the_readers_own_cgroup_namespace_belong_to_its_own_pod(
    text: str, ns: Namespace, kind: str, pod_uid: str | None, container_id: str | None
) -> None:
    where = locate(text, ns)
    assert where.kind == kind
    if pod_uid is None:
        assert where.identity is None
    else:
        assert where.identity is not None
        assert (where.identity.pod_uid, where.identity.container_id) == (pod_uid, container_id)


@pytest.mark.parametrize(
    ("pid1", "private"),
    [
        pytest.param("0::/../../../..\n", True, id="v2-hostpid-in-cgroupns"),
        pytest.param("4:memory:/../..\n1:cpu:/\n0::/\n", True, id="v1-hostpid-in-cgroupns"),
        pytest.param("0::/init.scope\n", False, id="v2-host"),
        pytest.param(_hybrid("/"), False, id="hybrid-host"),
    ],
)
def test_the_namespace_is_private_when_host_init_lies_above_its_root(
    tmp_path: Path, pid1: str, private: bool
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cgroup").write_text(pid1)
    assert Namespace.detect(tmp_path, pod_uid="u") == Namespace(private, "u")
    assert Namespace.detect(tmp_path / "missing") == Namespace()


def test_crio_conmon_names_the_pod_but_no_container() -> None:
    text = (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"crio-conmon-{CID}.scope\n"
    )
    ident = parse(text)
    assert ident is not None and ident.pod_uid == UID and ident.container_id == ""


def test_v2_line_wins_in_hybrid_mode_when_it_names_a_pod() -> None:
    hybrid = f"1:name=systemd:/user.slice\n0::/kubepods/besteffort/pod{UID}/{CID}\n"
    ident = parse(hybrid)
    assert ident is not None and ident.cgroup_version == 2


def test_reader_reads_a_real_proc_file_and_none_for_a_missing_pid(tmp_path: Path) -> None:
    own = ProcCgroupReader().read(os.getpid())
    assert own is not None and own.count(":") >= 2
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(V2_SYSTEMD_CRIO)
    reader = ProcCgroupReader(tmp_path)
    assert reader.read(42) == V2_SYSTEMD_CRIO
    assert reader.read(43) is None
    assert reader.exists(42) and not reader.exists(43)


def test_reader_reads_a_bounded_prefix_of_an_oversized_file(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("0::/" + "x" * 200_000)
    text = ProcCgroupReader(tmp_path).read(7)
    assert text is not None and len(text) == 64 * 1024
