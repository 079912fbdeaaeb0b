"""Unit tests of the real node's pure pieces: images, subnets, configs, readiness, state."""

from __future__ import annotations

import io
import ipaddress
import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from tests.harness import node_config as cfg
from tests.harness import node_manifests, oci
from tests.harness.netns import NetnsError, pick_subnet
from tests.harness.node_cleanup import remove_new_entries
from tests.harness.node_state import NodeState, ProcessRecord
from tests.harness.node_wait import (
    api_path,
    programmed_endpoints,
    ready_check,
    ready_endpoints,
)

SPEC = oci.ImageSpec(
    name="palisade.local/hello:1", files={"hello": b"\x7fELF..."}, entrypoint=("/hello",)
)


class TestOciArchives:
    def test_the_same_image_gives_the_same_bytes(self) -> None:
        assert oci.archive(SPEC) == oci.archive(SPEC)

    def test_the_index_names_the_image_for_containerd(self) -> None:
        with tarfile.open(fileobj=io.BytesIO(oci.archive(SPEC))) as tar:
            names = tar.getnames()
            index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        assert "oci-layout" in names
        entry = index["manifests"][0]
        assert entry["annotations"]["io.containerd.image.name"] == "palisade.local/hello:1"
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == "1"
        assert f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}" in names

    def test_the_layer_holds_the_binary_executable_and_a_sticky_tmp(self) -> None:
        with tarfile.open(fileobj=io.BytesIO(oci.layer_tar({"bin/x": b"x"}))) as tar:
            members = {m.name: m for m in tar.getmembers()}
        assert members["bin/x"].mode == 0o755 and members["bin"].isdir()
        assert members["tmp"].mode == 0o1777
        assert all(m.mtime == 0 and m.uid == 0 for m in members.values())


class TestSubnets:
    def test_the_first_free_slash_30_is_picked(self) -> None:
        used = [ipaddress.IPv4Network("10.203.0.0/30"), ipaddress.IPv4Network("10.0.0.0/8")]
        pool = ipaddress.IPv4Network("192.168.77.0/29")
        assert str(pick_subnet(used[:1])) == "10.203.0.4/30"
        assert str(pick_subnet(used, pool)) == "192.168.77.0/30"

    def test_a_full_pool_is_an_error(self) -> None:
        with pytest.raises(NetnsError, match="no free"):
            pick_subnet([ipaddress.IPv4Network("10.203.0.0/24")])


class TestConfigs:
    paths = cfg.NodePaths(Path("/w"))

    def test_containerd_has_the_settings_this_machine_needs(self) -> None:
        doc = tomllib.loads(
            cfg.containerd_config(self.paths, pause_image="p:1", cni_bin_dir=Path("/usr/lib/cni"))
        )
        runtime = doc["plugins"]["io.containerd.cri.v1.runtime"]
        assert runtime["restrict_oom_score_adj"] is True
        assert runtime["netns_mounts_under_state_dir"] is True
        runc = runtime["containerd"]["runtimes"]["runc"]["options"]
        assert runc == {"SystemdCgroup": False, "Root": "/w/containerd/runc"}
        assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"]
        assert doc["grpc"]["address"] == "/w/containerd/containerd.sock"
        assert doc["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "p:1"

    def test_the_kubelet_accepts_cgroup_v1_and_uses_the_cluster_dns(self) -> None:
        k = cfg.kubelet_config(
            self.paths,
            node_ip="10.203.0.2",
            ca_file=Path("ca"),
            cert_file=Path("c"),
            key_file=Path("k"),
        )
        assert (k["failCgroupV1"], k["cgroupDriver"], k["failSwapOn"]) == (
            False,
            "cgroupfs",
            False,
        )
        assert k["clusterDNS"] == ["10.96.0.10"] and k["resolvConf"] == "/w/resolv.conf"
        assert k["authentication"]["webhook"]["enabled"] and k["authorization"]["mode"] == "Webhook"

    def test_the_bridge_is_a_masquerading_gateway_with_host_local_ipam(self) -> None:
        bridge = cfg.cni_conflist()["plugins"][0]
        assert (bridge["type"], bridge["isGateway"], bridge["ipMasq"]) == ("bridge", True, True)
        assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]

    def test_storage_is_one_default_class_and_a_volume_per_size(self) -> None:
        objs = node_manifests.storage(Path("/w/pv"), (1, 5))
        sc, *pvs = objs
        assert sc["metadata"]["annotations"] == {
            "storageclass.kubernetes.io/is-default-class": "true"
        }
        assert [p["spec"]["capacity"]["storage"] for p in pvs] == ["1Gi", "5Gi"]
        assert pvs[1]["spec"]["hostPath"]["path"] == "/w/pv/pv-1"

    def test_coredns_sits_behind_kube_dns_at_its_fixed_ip(self) -> None:
        objs = {o["kind"]: o for o in node_manifests.coredns("img:1")}
        assert objs["Service"]["spec"]["clusterIP"] == "10.96.0.10"
        container = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert (container["image"], container["imagePullPolicy"]) == ("img:1", "Never")
        assert "kubernetes cluster.local" in objs["ConfigMap"]["data"]["Corefile"]


class TestReadiness:
    def test_paths_of_namespaced_and_cluster_objects(self) -> None:
        assert api_path("deployment", "ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
        assert api_path("node", "", "n") == "/api/v1/nodes/n"

    def test_a_deployment_is_ready_when_every_replica_of_the_latest_spec_is(self) -> None:
        ready = ready_check("deployment")
        obj = {
            "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {
                "observedGeneration": 2,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
            },
        }
        assert ready(obj)
        obj["status"]["observedGeneration"] = 1
        assert not ready(obj)

    def test_a_daemonset_with_nothing_scheduled_is_not_ready(self) -> None:
        assert not ready_check("daemonset")({"status": {"desiredNumberScheduled": 0}})

    def test_an_unknown_kind_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no readiness rule"):
            ready_check("widget")


class TestState:
    def test_the_state_file_round_trips(self, tmp_path: Path) -> None:
        state = NodeState(
            owner_pid=1,
            detached=True,
            netns="n",
            host_if="h",
            subnet="10.203.0.0/30",
            workdir="/w",
            preexisting={"/var/log/pods": None},
            preexisting_cgroups=[],
            processes={"kubelet": ProcessRecord(5, "/bin/kubelet")},
        )
        state.save(tmp_path / "s.json")
        assert NodeState.load(tmp_path / "s.json") == state

    def test_only_entries_new_since_the_start_are_removed(self, tmp_path: Path) -> None:
        old, new = tmp_path / "old", tmp_path / "new"
        (old / "keep").mkdir(parents=True)
        (old / "ours").mkdir()
        (new / "x").mkdir(parents=True)
        failed = remove_new_entries({str(old): ["keep"], str(new): None})
        assert failed == []
        assert sorted(p.name for p in old.iterdir()) == ["keep"]
        assert not new.exists()


# --- a Service is reachable once kube-proxy programs its ready endpoints ---------

NAT = """\
-A KUBE-SVC-A -m comment --comment "ns/web -> 10.244.0.5:8080" -j KUBE-SEP-1
-A KUBE-SVC-A -m comment --comment "ns/web -> 10.244.0.6:8080" -m statistic -j KUBE-SEP-2
-A KUBE-SVC-B -m comment --comment "ns/web:metrics -> 10.244.0.5:9090" -j KUBE-SEP-3
-A KUBE-SVC-C -m comment --comment "ns/webhook -> 10.244.0.9:8443" -j KUBE-SEP-4
-A KUBE-SERVICES -d 10.96.0.7/32 -p tcp -m comment --comment "ns/web cluster IP" -j KUBE-SVC-A
"""


def test_programmed_endpoints_are_read_from_kube_proxy_comments_of_that_service_only() -> None:
    assert programmed_endpoints(NAT, "ns", "web") == {
        "10.244.0.5:8080",
        "10.244.0.6:8080",
        "10.244.0.5:9090",
    }
    assert programmed_endpoints(NAT, "ns", "webhook") == {"10.244.0.9:8443"}
    assert programmed_endpoints(NAT, "other", "web") == set()


def test_ready_endpoints_skip_unready_ones_and_other_ports() -> None:
    slices = {
        "items": [
            {
                "ports": [{"port": 8080}],
                "endpoints": [
                    {"addresses": ["10.244.0.5"], "conditions": {"ready": True}},
                    {"addresses": ["10.244.0.6"], "conditions": {"ready": False}},
                    {"addresses": ["10.244.0.7"]},
                ],
            },
            {
                "ports": [{"port": 9090}],
                "endpoints": [{"addresses": ["10.244.0.8"], "conditions": {"ready": True}}],
            },
        ]
    }
    assert ready_endpoints(slices, 8080) == {"10.244.0.5:8080"}
    assert ready_endpoints({"items": None}, 8080) == set()
