"""The harness's own pieces that need no Kubernetes binaries: PKI, lookup, processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.harness import commands, pki
from tests.harness.binaries import BinariesMissing, find_binaries
from tests.harness.process import ManagedProcess, free_port


class TestPki:
    def test_leaf_certificates_verify_against_their_ca(self) -> None:
        ca = pki.make_ca()
        leaf = pki.issue(ca, "svc", dns_names=("svc.ns.svc",), ip_addresses=("127.0.0.1",))
        cert = x509.load_pem_x509_certificate(leaf.cert_pem)
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
        assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

    def test_client_certificates_carry_groups_as_organizations(self) -> None:
        ca = pki.make_ca()
        leaf = pki.issue(ca, "alice", organizations=("system:masters",), server=False, client=True)
        cert = x509.load_pem_x509_certificate(leaf.cert_pem)
        orgs = [a.value for a in cert.subject if a.oid == x509.NameOID.ORGANIZATION_NAME]
        assert orgs == ["system:masters"]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    def test_a_certificate_for_no_use_is_refused(self) -> None:
        with pytest.raises(ValueError, match="server or client"):
            pki.issue(pki.make_ca(), "x", server=False, client=False)

    def test_signing_keys_are_a_matching_pair(self) -> None:
        from cryptography.hazmat.primitives import serialization

        private_pem, public_pem = pki.make_signing_key()
        private = serialization.load_pem_private_key(private_pem, password=None)
        public = serialization.load_pem_public_key(public_pem)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


class TestBinaryLookup:
    def test_missing_binaries_name_every_one_and_the_fix(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PALISADE_KUBE_BIN_DIR", str(tmp_path))
        monkeypatch.setenv("PALISADE_KUBE_TOOLS_DIR", str(tmp_path))
        with pytest.raises(BinariesMissing) as e:
            find_binaries()
        for name in ("kube-apiserver", "kube-controller-manager", "etcd", "helm", "kubectl"):
            assert name in str(e.value)
        assert "make setup" in str(e.value)

    def test_binaries_are_found_in_the_directories_named_by_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("kube-apiserver", "kube-controller-manager", "etcd", "helm", "kubectl"):
            (tmp_path / name).write_text("#!/bin/sh\n")
            (tmp_path / name).chmod(0o755)
        monkeypatch.setenv("PALISADE_KUBE_BIN_DIR", str(tmp_path))
        monkeypatch.setenv("PALISADE_KUBE_TOOLS_DIR", str(tmp_path))
        found = find_binaries()
        assert found.etcd == tmp_path / "etcd"
        assert found.kubectl == tmp_path / "kubectl"

    def test_the_setup_script_cache_record_is_followed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bins, tools = tmp_path / "k8s-vX", tmp_path / "tools-vY"
        for d, names in (
            (bins, ("kube-apiserver", "kube-controller-manager", "etcd")),
            (tools, ("helm", "kubectl")),
        ):
            d.mkdir()
            for name in names:
                (d / name).write_text("#!/bin/sh\n")
                (d / name).chmod(0o755)
        (tmp_path / "kube").mkdir()
        (tmp_path / "kube" / "current").write_text(f"{bins}\n{tools}\n")
        monkeypatch.delenv("PALISADE_KUBE_BIN_DIR", raising=False)
        monkeypatch.delenv("PALISADE_KUBE_TOOLS_DIR", raising=False)
        monkeypatch.setenv("PALISADE_CACHE", str(tmp_path))
        found = find_binaries()
        assert found.kube_apiserver == bins / "kube-apiserver"
        assert found.helm == tools / "helm"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


class TestManagedProcess:
    def test_stop_ends_the_child_and_anything_it_forked(self, tmp_path: Path) -> None:
        pidfile = tmp_path / "grandchild.pid"
        script = f"sleep 300 & echo $! > {pidfile}; wait"
        proc = ManagedProcess("sh", ["/bin/sh", "-c", script], tmp_path / "log")
        proc.start()
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        grandchild = int(pidfile.read_text())
        assert proc.running() and _alive(grandchild)
        proc.stop(timeout=5)
        assert not proc.running()
        deadline = time.monotonic() + 5
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild)

    def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(self, tmp_path: Path) -> None:
        code = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(300)"
        )
        proc = ManagedProcess("stubborn", [sys.executable, "-c", code], tmp_path / "log")
        proc.start()
        deadline = time.monotonic() + 10
        while "up" not in proc.log_tail():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.stop(timeout=0.5)
        assert proc.exit_code() == -signal.SIGKILL

    def test_the_log_tail_shows_what_the_child_printed(self, tmp_path: Path) -> None:
        proc = ManagedProcess("echo", ["/bin/sh", "-c", "echo one; echo two"], tmp_path / "log")
        proc.start()
        deadline = time.monotonic() + 5
        while proc.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.log_tail(1) == "two"
        proc.stop()

    def test_free_ports_are_bindable(self) -> None:
        import socket

        port = free_port()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


class TestCommandLines:
    def test_the_api_server_enables_webhooks_and_token_issuance_and_ends_with_extras(
        self, tmp_path: Path
    ) -> None:
        argv = commands.apiserver_args(
            Path("/bin/kube-apiserver"),
            etcd_url="http://127.0.0.1:1",
            port=6443,
            pki=tmp_path,
            cert_dir=tmp_path / "c",
            extra=("--v=4",),
        )
        flags = dict(a.split("=", 1) for a in argv[1:])
        plugins = flags["--enable-admission-plugins"].split(",")
        assert {"MutatingAdmissionWebhook", "ValidatingAdmissionWebhook", "ServiceAccount"} <= set(
            plugins
        )
        assert flags["--service-account-issuer"] == commands.ISSUER
        assert flags["--service-account-signing-key-file"] == str(tmp_path / "sa.key")
        assert flags["--bind-address"] == "127.0.0.1"
        assert flags["--authorization-mode"] == "RBAC"
        assert argv[-1] == "--v=4"

    def test_etcd_listens_on_loopback_only(self, tmp_path: Path) -> None:
        argv = commands.etcd_args(Path("/bin/etcd"), tmp_path, 2379, 2380)
        urls = [a.split("=", 1)[1] for a in argv if "urls=" in a]
        assert urls and all(u.startswith("http://127.0.0.1:") for u in urls)

    def test_the_controller_manager_serves_nothing_and_runs_the_named_controllers(
        self, tmp_path: Path
    ) -> None:
        argv = commands.controller_manager_args(
            Path("/bin/kcm"), kubeconfig=tmp_path / "k", controllers=("a", "b"), pki=tmp_path
        )
        assert "--secure-port=0" in argv
        assert "--controllers=a,b" in argv
        assert "--leader-elect=false" in argv

    def test_static_tokens_with_separators_are_refused(self) -> None:
        with pytest.raises(ValueError, match="commas"):
            commands.token_file_line("a,b")
        line = commands.token_file_line("tok")
        assert line == 'tok,palisade-admin,uid-palisade-admin,"system:masters"\n'

    def test_a_kubeconfig_names_one_cluster_user_and_context(self) -> None:
        import base64

        doc = commands.kubeconfig("https://127.0.0.1:1", b"PEM", "tok", user="u")
        assert doc["current-context"] == "palisade-test"
        assert doc["users"] == [{"name": "u", "user": {"token": "tok"}}]
        cluster = doc["clusters"][0]["cluster"]
        assert base64.b64decode(cluster["certificate-authority-data"]) == b"PEM"
