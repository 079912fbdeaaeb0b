"""/proc/<pid>/cgroup -> pod UID and container, on real-world samples of every format."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.cgroup import CgroupIdentity, ProcCgroupReader, parse

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


@pytest.mark.parametrize(
    ("text", "version", "driver", "runtime"),
    [
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
    ],
)
def test_processes_outside_pods_have_no_identity(text: str) -> None:
    assert parse(text) is None


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
