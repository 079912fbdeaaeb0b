"""``palisade check-server`` as a real process: serves, reloads, denies without a bundle,
exposes metrics, and stops cleanly on SIGTERM with a verifiable audit log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from palisade.audit import Signer, verify_files
from palisade.v1 import policy_pb2, policy_pb2_grpc
from tests.harness.process import free_port

BUNDLE = Path(__file__).parent / "data" / "payments.yaml"


@dataclass
class Proc:
    proc: subprocess.Popen[str]
    socket: str
    audit: Path
    signer: Signer
    bundle: Path
    metrics_port: int

    def check(self, **kw: object) -> policy_pb2.CheckResponse:
        base: dict[str, object] = {
            "agent": "sre-agent-payments",
            "server": "kubernetes-mcp",
            "server_version": "1.2.0",
            "tool": "pods_log",
            "session": "s1",
        }
        base.update(kw)
        args = base.pop("args", {"namespace": "payments"})
        req = policy_pb2.CheckRequest(**base)  # type: ignore[arg-type]
        req.arguments.update(args)  # type: ignore[arg-type]
        with grpc.insecure_channel(f"unix:{self.socket}") as ch:
            resp: policy_pb2.CheckResponse = policy_pb2_grpc.PolicyServiceStub(ch).Check(
                req, timeout=5
            )
            return resp


def _start(tmp: Path, bundle: Path) -> Proc:
    sock_dir = tempfile.mkdtemp(prefix="pal-", dir="/tmp")
    sock = f"{sock_dir}/check.sock"
    signer = Signer.generate()
    key = tmp / "audit.pem"
    key.write_bytes(signer.private_pem())
    port = free_port()
    cmd = [
        sys.executable, "-m", "palisade.cli.main", "check-server",
        "--bundle", str(bundle), "--socket", sock,
        "--audit-file", str(tmp / "audit.jsonl"), "--audit-key", str(key),
        "--metrics-port", str(port), "--grace", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    return Proc(proc, sock, tmp / "audit.jsonl", signer, bundle, port)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Proc]:
    bundle = tmp_path / "bundle.yaml"
    shutil.copy(BUNDLE, bundle)
    p = _start(tmp_path, bundle)
    yield p
    if p.proc.poll() is None:
        p.proc.kill()
        p.proc.wait()
    shutil.rmtree(os.path.dirname(p.socket), ignore_errors=True)


def _stop(p: Proc) -> str:
    p.proc.send_signal(signal.SIGTERM)
    _, err = p.proc.communicate(timeout=15)
    assert p.proc.returncode == 0, err
    return err


def test_it_decides_with_the_real_engine_and_stops_cleanly_on_sigterm(running: Proc) -> None:
    ok = running.check()
    assert (ok.decision, ok.rule_id) == (policy_pb2.DECISION_ALLOW, "allow-reads")
    other_ns = running.check(tool="resources_create_or_update", args={"namespace": "default"})
    assert other_ns.decision == policy_pb2.DECISION_DENY
    destructive = running.check(tool="resources_delete")
    assert destructive.rule_id == "deny-destructive"
    err = _stop(running)
    res = verify_files([running.audit], trusted=[running.signer.public])
    assert res.ok and res.records == 3 and res.head == destructive.audit_hash
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(d["msg"] == "check server stopped" and d["audit_seq"] == 3 for d in logs)


def test_registry_secret_arguments_are_redacted_in_the_audit(running: Proc) -> None:
    running.check(
        tool="resources_create_or_update",
        args={"namespace": "payments", "manifest_token": "zz-secret-zz", "password": "pw-pw"},
    )
    _stop(running)
    text = running.audit.read_text()
    assert "zz-secret-zz" not in text and "pw-pw" not in text


def test_metrics_count_decisions_on_the_metrics_port(running: Proc) -> None:
    running.check()
    running.check(tool="resources_delete")
    url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    (line,) = [
        x
        for x in body.splitlines()
        if x.startswith("palisade_decisions_total{")
        and 'decision="allow",rule="allow-reads",server="kubernetes-mcp",tool="pods_log"} 1.0' in x
    ]
    assert line.startswith('palisade_decisions_total{agent="'), line
    assert "palisade_decision_duration_seconds_count 2.0" in body


def test_a_bad_bundle_on_reload_keeps_the_last_good_one(running: Proc) -> None:
    running.bundle.write_text("apiVersion: palisade.dev/v1alpha1\nkind: PolicyBundle\nspec: [\n")
    running.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert running.check().decision == policy_pb2.DECISION_ALLOW
    err = _stop(running)
    assert "bundle reload failed; keeping the last good bundle" in err


def test_an_invalid_bundle_at_start_denies_every_call_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: palisade.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {}\n")
    p = _start(tmp_path, bad)
    try:
        resp = p.check()
        assert (resp.decision, resp.rule_id) == (policy_pb2.DECISION_DENY, "no-bundle")
        assert "bad.yaml is invalid" in resp.reason
        _stop(p)
        [rec] = [json.loads(line) for line in p.audit.read_text().splitlines()]
        assert rec["rule_id"] == "no-bundle" and rec["decision"] == "deny"
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
        shutil.rmtree(os.path.dirname(p.socket), ignore_errors=True)


def test_an_unreadable_audit_key_refuses_to_start(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    out = subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", "check-server", "--bundle", str(BUNDLE),
         "--socket", str(tmp_path / "s.sock"), "--audit-file", str(tmp_path / "a.jsonl"),
         "--audit-key", str(missing)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot read audit key" in out.stderr


def test_sighup_activates_a_changed_bundle_with_the_next_revision(running: Proc) -> None:
    first = running.check()
    assert (first.decision, first.bundle_revision) == (policy_pb2.DECISION_ALLOW, 1)
    text = running.bundle.read_text().replace(
        "decision: allow\n      reason: reads are allowed",
        "decision: deny\n      reason: reads are frozen",
    )
    running.bundle.write_text(text)
    running.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while (resp := running.check()).bundle_revision != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (resp.decision, resp.reason, resp.bundle_revision) == (
        policy_pb2.DECISION_DENY,
        "reads are frozen",
        2,
    )
    assert resp.bundle_digest != first.bundle_digest
    _stop(running)
