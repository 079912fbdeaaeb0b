"""The distributor's public bundle keys travel from the injector's flags/env into every
injected sidecar, present exactly when a distributor is configured, in the form the
real ``palisade sidecar`` reads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from injector import admission, trust
from injector.main import register, settings_from
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from palisade.bundle.signing import generate_key, key_id, private_key_pem, public_key_pem
from tests.harness.pki import make_ca
from tests.injector.pods import ENABLED, apply_patch, pod, review

KEY_A = generate_key()
KEY_B = generate_key()
PEM_A = public_key_pem(KEY_A).decode()
PEM_B = public_key_pem(KEY_B).decode()


def parse(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser, env or {})
    return parser.parse_args(argv)


def injected(sidecar: SidecarSettings, native: str = "never") -> dict[str, Any]:
    """The sidecar container the injector adds to the standard MCP pod."""
    settings = InjectionSettings(native_sidecar=native, sidecar=sidecar)  # type: ignore[arg-type]
    patched = apply_patch(pod(), decode_patch(admission.serve(review(pod()), ENABLED, settings)))
    where = "initContainers" if native == "always" else "containers"
    (container,) = [c for c in patched["spec"][where] if c["name"] == "palisade-sidecar"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


class TestTheKeysTheInjectorAccepts:
    def test_pem_text_with_several_blocks_and_comments_gives_each_key_once(self) -> None:
        text = f"# rotation: old and new\n{PEM_A}\n{PEM_B}\n{PEM_A}"
        keys = trust.normalize([text])
        assert keys == (PEM_A.strip(), PEM_B.strip())

    def test_the_sidecar_value_separates_keys_with_commas(self) -> None:
        value = trust.sidecar_env_value(trust.normalize([PEM_A, PEM_B]))
        assert value.split(",") == [PEM_A.strip(), PEM_B.strip()]
        assert trust.key_ids(value.split(",")) == (key_id(KEY_A), key_id(KEY_B))

    def test_a_private_key_is_refused_by_position(self) -> None:
        with pytest.raises(trust.TrustError, match=r"#2 is not a public key"):
            trust.normalize([PEM_A, private_key_pem(KEY_B).decode()])

    def test_a_damaged_key_is_refused_without_echoing_it(self) -> None:
        damaged = PEM_A.replace(PEM_A.splitlines()[1], "bm90IGEga2V5IGF0IGFsbA==")
        with pytest.raises(trust.TrustError) as err:
            trust.normalize([damaged])
        assert "#1 is not an Ed25519 PEM public key" in str(err.value)
        assert "bm90" not in str(err.value)

    def test_text_without_any_pem_block_is_refused(self) -> None:
        with pytest.raises(trust.TrustError, match="no PEM block"):
            trust.normalize(["/etc/keys/missing.pem"])


class TestFlagsAndEnvironment:
    def test_the_env_carries_pem_text_as_the_chart_renders_it(self) -> None:
        env = {
            "PALISADE_DISTRIBUTOR": "dist.palisade.svc:9401",
            "PALISADE_SIDECAR_TRUSTED_KEYS": f"{PEM_A}\n{PEM_B}",
        }
        sidecar = settings_from(parse([], env)).injection.sidecar
        assert sidecar.distributor == "dist.palisade.svc:9401"
        assert sidecar.trusted_keys == (PEM_A.strip(), PEM_B.strip())

    def test_flags_take_files_and_directories_of_pem(self, tmp_path: Path) -> None:
        (tmp_path / "dir").mkdir()
        (tmp_path / "dir" / "b.pem").write_text(PEM_B)
        (tmp_path / "dir" / "notes.txt").write_text("not a key")
        (tmp_path / "a.pub").write_text(PEM_A)
        argv = ["--distributor", "d:9401", "--sidecar-trusted-key", str(tmp_path / "a.pub")]
        argv += ["--sidecar-trusted-key", str(tmp_path / "dir")]
        sidecar = settings_from(parse(argv)).injection.sidecar
        assert sidecar.trusted_keys == (PEM_A.strip(), PEM_B.strip())

    def test_a_distributor_without_keys_stops_the_injector_with_the_reason(self) -> None:
        with pytest.raises(SystemExit, match="--distributor needs --sidecar-trusted-key"):
            settings_from(parse(["--distributor", "d:9401"]))

    def test_an_unreadable_key_file_stops_the_injector(self, tmp_path: Path) -> None:
        argv = ["--distributor", "d:9401", "--sidecar-trusted-key", str(tmp_path / "none.pem")]
        with pytest.raises(SystemExit, match=r"cannot read trusted key .*none\.pem"):
            settings_from(parse(argv))

    def test_a_bad_key_stops_the_injector(self) -> None:
        env = {"PALISADE_SIDECAR_TRUSTED_KEYS": private_key_pem(KEY_A).decode()}
        with pytest.raises(SystemExit, match="#1 is not a public key"):
            settings_from(parse(["--distributor", "d:9401"], env))

    def test_no_distributor_and_no_keys_is_the_default(self) -> None:
        sidecar = settings_from(parse([])).injection.sidecar
        assert (sidecar.distributor, sidecar.trusted_keys) == (None, ())


class TestTheInjectedSidecar:
    @pytest.mark.parametrize("native", ["always", "never"])
    def test_with_a_distributor_it_gets_the_address_and_the_keys(self, native: str) -> None:
        keys = trust.normalize([PEM_A, PEM_B])
        container = injected(SidecarSettings(distributor="d:9401", trusted_keys=keys), native)
        env = env_of(container)
        assert env["PALISADE_DISTRIBUTOR"] == "d:9401"
        assert env["PALISADE_TRUSTED_KEY"] == f"{PEM_A.strip()},{PEM_B.strip()}"
        args = container["args"]
        assert args[args.index("--state-dir") + 1] == "/var/lib/palisade/bundles"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["palisade-bundle-cache"] == "/var/lib/palisade/bundles"

    def test_without_a_distributor_neither_address_nor_keys_are_set(self) -> None:
        keys = trust.normalize([PEM_A])  # given, but there is no distributor to verify
        env = env_of(injected(SidecarSettings(trusted_keys=keys)))
        assert "PALISADE_DISTRIBUTOR" not in env
        assert "PALISADE_TRUSTED_KEY" not in env

    def test_the_volumes_do_not_depend_on_the_distributor(self) -> None:
        keys = trust.normalize([PEM_A])
        with_d = injected(SidecarSettings(distributor="d:9401", trusted_keys=keys))
        without = injected(SidecarSettings())
        assert with_d["volumeMounts"] == without["volumeMounts"]
        assert with_d["args"] == without["args"]

    def test_the_downward_api_names_are_the_ones_the_sidecar_reads(self) -> None:
        env = env_of(injected(SidecarSettings(distributor="d:9401", trusted_keys=("x",))))
        fields = {k: v["fieldRef"]["fieldPath"] for k, v in env.items() if isinstance(v, dict)}
        assert fields["PALISADE_POD_NAME"] == "metadata.name"
        assert fields["PALISADE_POD_NAMESPACE"] == "metadata.namespace"
        assert fields["PALISADE_POD_UID"] == "metadata.uid"
        assert fields["PALISADE_NODE_NAME"] == "spec.nodeName"
        assert env["PALISADE_TENANT"] == "payments"

    def test_the_real_sidecar_parser_builds_its_fleet_settings_from_that_env(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sidecar_main = pytest.importorskip("sidecar.main")
        fleet = pytest.importorskip("sidecar.fleet")
        keys = trust.normalize([PEM_A, PEM_B])
        container = injected(SidecarSettings(distributor="d:9401", trusted_keys=keys))
        filled = {
            "PALISADE_POD_NAME": "mcp-0",
            "PALISADE_POD_NAMESPACE": "payments",
            "PALISADE_POD_UID": "uid-123",
            "PALISADE_NODE_NAME": "node-1",
        }
        for name, value in env_of(container).items():
            monkeypatch.setenv(name, value if isinstance(value, str) else filled.get(name, "x"))
        parser = argparse.ArgumentParser()
        sidecar_main.register(parser)
        s = sidecar_main.settings_from(parser.parse_args(container["args"][1:]))
        d = s.distributor
        assert d is not None
        assert d.targets == ("d:9401",)
        assert str(d.state_dir) == "/var/lib/palisade/bundles"
        assert (d.pod, d.namespace, d.node, d.tenant) == ("mcp-0", "payments", "node-1", "payments")
        trusted = fleet.load_trusted(d.trusted_keys)
        assert set(trusted.key_ids) == {key_id(KEY_A), key_id(KEY_B)}


class TestWithoutADistributorTheBundleComesFromAConfigMap:
    def test_the_config_map_is_mounted_read_only_watched_and_verified(self) -> None:
        keys = trust.normalize([PEM_A])
        spec = SidecarSettings(bundle_configmap="palisade-bundle", trusted_keys=keys)
        settings = InjectionSettings(native_sidecar="never", sidecar=spec)
        patched = apply_patch(
            pod(), decode_patch(admission.serve(review(pod()), ENABLED, settings))
        )
        volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
        assert volumes["palisade-bundle"]["configMap"] == {"name": "palisade-bundle"}
        (container,) = [c for c in patched["spec"]["containers"] if c["name"] == "palisade-sidecar"]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["palisade-bundle"]["mountPath"] == "/etc/palisade/bundle"
        assert mounts["palisade-bundle"]["readOnly"] is True
        args = container["args"]
        assert args[args.index("--bundle") + 1] == "/etc/palisade/bundle"
        env = env_of(container)
        assert env["PALISADE_TRUSTED_KEY"] == PEM_A.strip()
        assert "PALISADE_DISTRIBUTOR" not in env
        again = admission.serve(review(patched), ENABLED, settings)
        assert decode_patch(again) == []  # idempotent

    def test_a_distributor_wins_over_the_config_map(self) -> None:
        keys = trust.normalize([PEM_A])
        spec = SidecarSettings(distributor="d:9401", bundle_configmap="b", trusted_keys=keys)
        container = injected(spec)
        assert "--bundle" not in container["args"]
        assert "palisade-bundle" not in {m["name"] for m in container["volumeMounts"]}
        assert env_of(container)["PALISADE_DISTRIBUTOR"] == "d:9401"

    def test_a_config_map_without_keys_stops_the_injector(self) -> None:
        env = {"PALISADE_SIDECAR_BUNDLE_CONFIGMAP": "palisade-bundle"}
        with pytest.raises(SystemExit, match="--sidecar-bundle-configmap needs"):
            settings_from(parse([], env))

    def test_the_real_sidecar_parser_takes_the_mounted_bundle(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sidecar_main = pytest.importorskip("sidecar.main")
        spec = SidecarSettings(bundle_configmap="b", trusted_keys=trust.normalize([PEM_A]))
        container = injected(spec)
        for name, value in env_of(container).items():
            monkeypatch.setenv(name, value if isinstance(value, str) else "x")
        parser = argparse.ArgumentParser()
        sidecar_main.register(parser)
        s = sidecar_main.settings_from(parser.parse_args(container["args"][1:]))
        assert s.distributor is None
        assert str(s.bundle_path) == "/etc/palisade/bundle"
        assert str(s.state_dir) == "/var/lib/palisade/bundles"


class TestTheDistributorCA:
    """With a TLS distributor, the injector hands its sidecars the CA to verify it with."""

    CA_PEM = make_ca().cert_pem.decode()

    def test_a_ca_file_or_text_reaches_the_sidecar_as_inline_pem(self, tmp_path: Path) -> None:
        (tmp_path / "ca.crt").write_text(self.CA_PEM)
        env = {"PALISADE_SIDECAR_TRUSTED_KEYS": PEM_A}
        for spec in (str(tmp_path / "ca.crt"), self.CA_PEM):
            args = ["--distributor", "d:9401", "--sidecar-distributor-ca", spec]
            sidecar = settings_from(parse(args, env)).injection.sidecar
            assert sidecar.distributor_ca.strip() == self.CA_PEM.strip()
            assert env_of(injected(sidecar))["PALISADE_DISTRIBUTOR_CA"] == sidecar.distributor_ca

    def test_without_a_ca_the_sidecar_gets_none(self) -> None:
        keys = trust.normalize([PEM_A])
        env = env_of(injected(SidecarSettings(distributor="d:9401", trusted_keys=keys)))
        assert "PALISADE_DISTRIBUTOR_CA" not in env

    def test_a_ca_that_is_not_a_certificate_or_has_no_distributor_stops_the_injector(
        self,
    ) -> None:
        env = {"PALISADE_SIDECAR_TRUSTED_KEYS": PEM_A, "PALISADE_SIDECAR_DISTRIBUTOR_CA": PEM_B}
        with pytest.raises(SystemExit, match="not a PEM certificate"):
            settings_from(parse(["--distributor", "d:9401"], env))
        with pytest.raises(SystemExit, match="needs --distributor"):
            settings_from(parse(["--sidecar-distributor-ca", self.CA_PEM]))
