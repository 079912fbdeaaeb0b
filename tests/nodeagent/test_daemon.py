"""``palisade nodeagent run`` as a real process: endpoints, metrics, status table, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest

from tests.harness.process import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gpu-sim"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


class Daemon:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "agent.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "palisade.cli.main",
                "nodeagent",
                "run",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--kube",
                "off",
                "--state-dir",
                str(tmp / "state"),
                "--node",
                "test-node",
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBERNETES_SERVICE_HOST": ""},
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "agent exited early"
            try:
                if _get(self.url + "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("agent never became ready")

    def status(self) -> dict[str, Any]:
        return dict(json.loads(_get(self.url + "/status")[1]))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def test_a_simulated_node_serves_health_status_metrics_and_a_status_table(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = Daemon(
        tmp_path,
        "--backend",
        "sim",
        "--scenario",
        str(EXAMPLE / "node.yaml"),
        "--bundle",
        str(EXAMPLE / "bundle.yaml"),
        "--interval",
        "0.2",
    )
    daemons.append(d)
    d.wait_ready()
    assert _get(d.url + "/healthz") == (200, b'{"health": "ok"}')
    status = d.status()
    assert status["mode"] == "simulated" and status["node"] == "test-node"
    assert [g["uuid"][:12] for g in status["gpus"]] == ["GPU-11111111", "GPU-22222222"]
    assert status["tenants"]["payments"]["quota"]["gpus"] == 1
    assert status["bundle"]["source"].startswith("file:")
    code, body = _get(d.url + "/metrics")
    text = body.decode()
    assert code == 200
    for label in (
        "gpu=",
        "UUID=",
        "modelName=",
        "GPU_I_PROFILE=",
        "GPU_I_ID=",
        "pod=",
        "namespace=",
        "container=",
    ):
        assert label in text, label
    assert 'GPU_I_PROFILE="1g.10gb"' in text and 'pod="inference-0"' in text
    assert "palisade_gpu_tenant_seconds_total" in text
    table = subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", "nodeagent", "status", "--url", d.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for needle in (
        "test-node",
        "simulated",
        "GPU-11111111",
        "payments/inference-0",
        "research/notebook",
        "unattributed",
        "3g.40gb#1",
    ):
        assert needle in table, needle
    raw = subprocess.run(
        [
            sys.executable,
            "-m",
            "palisade.cli.main",
            "nodeagent",
            "status",
            "--url",
            d.url,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert json.loads(raw)["node"] == "test-node"
    assert d.stop() == 0, "SIGTERM ends the agent cleanly"
    audit_dir = tmp_path / "state" / "audit"
    assert audit_dir.is_dir()


def test_status_against_nothing_fails_with_one_clear_line() -> None:
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "palisade.cli.main",
            "nodeagent",
            "status",
            "--url",
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "cannot read" in out.stderr and "Traceback" not in out.stderr


def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_driver_present(), reason="a real NVIDIA driver is present")
def test_a_node_without_a_driver_is_healthy_ready_and_says_so(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = Daemon(tmp_path, "--backend", "auto", "--proc-root", str(tmp_path))
    daemons.append(d)
    d.wait_ready()
    assert _get(d.url + "/healthz") == (200, b'{"health": "ok: no GPU"}')
    status = d.status()
    assert status["mode"] == "no-gpu" and status["gpus"] == [] and status["actions"] == []
    assert "no NVIDIA driver" in status["detail"]
    assert "palisade_nodeagent_info" in _get(d.url + "/metrics")[1].decode()


def test_a_bad_scenario_file_fails_at_startup_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus:\n  - {index: 0}\nprocesses:\n  - {pid: 1}\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "palisade.cli.main",
            "nodeagent",
            "run",
            "--backend",
            "sim",
            "--scenario",
            str(bad),
            "--kube",
            "off",
            "--state-dir",
            str(tmp_path / "s"),
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "processes[0]: needs pid and gpu" in out.stderr and "Traceback" not in out.stderr


def test_a_bad_bundle_file_fails_at_startup_naming_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bundle.yaml"
    bad.write_text(
        "apiVersion: palisade.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {name: x}\n"
        "spec:\n  tenants:\n    - name: a\n      gpuQuota: {gpus: -1}\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "palisade.cli.main",
            "nodeagent",
            "run",
            "--backend",
            "none",
            "--bundle",
            str(bad),
            "--kube",
            "off",
            "--state-dir",
            str(tmp_path / "s"),
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{bad}:7:" in out.stderr and "gpuQuota.gpus" in out.stderr


INFERENCE_UID = "0b7e8a1c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"  # examples/gpu-sim/node.yaml
INFERENCE_CID = "1" * 64


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", "nodeagent", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_attribution_names_a_pids_pod_from_the_live_pod_list_and_refuses_bad_pids(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    proc = tmp_path / "proc"
    # A cgroup v1 host with the unified hierarchy (kubelet cgroupfs, containerd):
    # every controller names the container.
    path = f"/kubepods/besteffort/pod{INFERENCE_UID}/{INFERENCE_CID}"
    texts = {
        4101: "".join(f"{c}:{path}\n" for c in ("9:name=systemd", "4:memory", "1:cpu")) + "0::/\n",
        4300: "9:name=systemd:/\n4:memory:/system.slice/host.service\n0::/\n",
        1: "0::/init.scope\n",
    }
    for pid, text in texts.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(text)
    d = Daemon(
        tmp_path,
        "--backend",
        "sim",
        "--scenario",
        str(EXAMPLE / "node.yaml"),
        "--proc-root",
        str(proc),
        "--interval",
        "0.2",
    )
    daemons.append(d)
    d.wait_ready()
    code, body = _get(d.url + "/attribution?pid=4101")
    doc = json.loads(body)
    assert code == 200, doc
    assert (doc["kind"], doc["namespace"], doc["pod"], doc["container"], doc["tenant"]) == (
        "pod",
        "payments",
        "inference-0",
        "server",
        "payments",
    )
    assert doc["podUID"] == INFERENCE_UID and doc["containerID"] == INFERENCE_CID
    assert doc["cgroupDriver"] == "cgroupfs" and doc["node"] == "test-node"
    assert [g["uuid"][:12] for g in doc["gpu"]] == ["GPU-11111111"]
    code, body = _get(d.url + "/attribution?pid=4300")
    host = json.loads(body)
    assert code == 200 and host["kind"] == "host" and not host["attributed"]
    assert host["pod"] == "" and host["tenant"] == ""
    assert host["reason"] == "process is not in a pod cgroup"
    for query, status, needle in [
        ("pid=abc", 400, "decimal integer"),
        ("pid=-1", 400, "decimal integer"),
        ("pid=0", 400, "from 1 to"),
        ("pid=99999999", 400, "decimal integer"),
        ("pid=4194305", 400, "from 1 to"),
        ("pid=1&pid=2", 400, "one pid"),
        ("", 400, "missing"),
        ("pid=4999", 404, "no process 4999"),
    ]:
        code, body = _get(d.url + "/attribution?" + query)
        assert code == status, (query, body)
        assert needle in json.loads(body)["error"], (query, body)

    out = _cli("attribute", "4101", "--url", d.url)
    assert out.returncode == 0, out.stderr
    assert "pod payments/inference-0 container server tenant payments" in out.stdout
    assert INFERENCE_UID in out.stdout
    out = _cli("attribute", "4300", "--url", d.url)
    assert out.returncode == 0 and "host process" in out.stdout
    out = _cli("attribute", "4101", "--url", d.url, "--json")
    assert json.loads(out.stdout)["pod"] == "inference-0"
    out = _cli("attribute", "4999", "--url", d.url)
    assert out.returncode == 1 and "no process 4999" in out.stderr
    out = _cli("attribute", "abc", "--url", d.url)
    assert out.returncode == 2 and "decimal integer" in out.stderr
    out = _cli("attribute", "4101", "--local", "--proc-root", str(proc))
    assert out.returncode == 0 and INFERENCE_UID in out.stdout and "no pod list" in out.stdout


def test_attribute_against_nothing_fails_with_one_clear_line() -> None:
    out = _cli("attribute", "1", "--url", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "cannot ask" in out.stderr and "Traceback" not in out.stderr
