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
