"""The chart hands the distributor's public bundle keys to the injector, which hands them
to every injected sidecar: by default the trust ConfigMap the distributor publishes into,
watched by the injector; an external distributor without keys is refused at render time."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pytest

from injector import admission
from injector.main import register, settings_from
from injector.review import decode_patch
from palisade.bundle.signing import generate_key, public_key_pem
from tests.chart.render import CHART, by_kind, container_env, helm, one, render, values_args
from tests.injector.pods import ENABLED, apply_patch, pod, review

pytestmark = pytest.mark.e2e  # needs the helm binary from scripts/setup.d/40-kube.sh

KEY_A = public_key_pem(generate_key()).decode()
KEY_B = public_key_pem(generate_key()).decode()
DISTRIBUTOR = {"enabled": True, "signingKeySecret": "palisade-keys"}
NO_DISTRIBUTOR = {"enabled": False}


def injector_env(values: dict[str, Any]) -> dict[str, Any]:
    return container_env(one(render(values), "Deployment", "palisade-injector"))


def template(values: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        return helm(
            "template", "palisade", str(CHART), "-n", "palisade",
            *values_args(values, Path(tmp)), check=False,
        )  # fmt: skip


def injected_env(chart_env: dict[str, Any]) -> dict[str, Any]:
    """What the injector, configured from the rendered env, puts into an MCP pod."""
    env = {k: v for k, v in chart_env.items() if isinstance(v, str)}
    parser = argparse.ArgumentParser()
    register(parser, env)
    injection = settings_from(parser.parse_args([])).injection
    patched = apply_patch(pod(), decode_patch(admission.serve(review(pod()), ENABLED, injection)))
    containers = patched["spec"]["containers"] + patched["spec"].get("initContainers", [])
    (sidecar,) = [c for c in containers if c["name"] == "palisade-sidecar"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}


class TestWithPublicKeys:
    def test_the_keys_reach_the_injector_and_through_it_every_sidecar(self) -> None:
        env = injector_env({"distributor": {**DISTRIBUTOR, "publicKeys": [KEY_A, KEY_B]}})
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS"] == f"{KEY_A}\n{KEY_B}"
        sidecar = injected_env(env)
        assert sidecar["PALISADE_DISTRIBUTOR"] == "palisade-distributor.palisade.svc:9401"
        assert sidecar["PALISADE_TRUSTED_KEY"] == f"{KEY_A.strip()},{KEY_B.strip()}"

    def test_an_external_distributor_address_gets_the_keys_too(self) -> None:
        env = injector_env({"distributor": {"address": "dist.example:9401", "publicKeys": [KEY_A]}})
        assert env["PALISADE_DISTRIBUTOR"] == "dist.example:9401"
        assert injected_env(env)["PALISADE_TRUSTED_KEY"] == KEY_A.strip()

    def test_the_keys_can_come_from_an_operators_config_map(self) -> None:
        values = {
            "distributor": {
                **DISTRIBUTOR,
                "publicKeysConfigMap": {"name": "bundle-keys", "key": "bundle.pub"},
            }
        }
        env = injector_env(values)
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP"] == "bundle-keys"
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP_KEY"] == "bundle.pub"
        assert "PALISADE_SIDECAR_TRUSTED_KEYS" not in env
        rules = one(render(values), "Role", "palisade-injector")["rules"]
        (cm,) = [r for r in rules if r["resources"] == ["configmaps"]]
        assert cm["resourceNames"] == ["bundle-keys"]

    def test_inline_keys_and_the_watched_config_map_are_both_given(self) -> None:
        env = injector_env({"distributor": {**DISTRIBUTOR, "publicKeys": [KEY_A]}})
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS"] == KEY_A
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP"] == "palisade-trust"
        parser = argparse.ArgumentParser()
        register(parser, {k: v for k, v in env.items() if isinstance(v, str)})
        settings = settings_from(parser.parse_args([]))
        assert settings.keys.configmap == "palisade-trust"
        assert settings.injection.sidecar.trusted_keys == (KEY_A.strip(),)


class TestByDefault:
    def test_the_injector_watches_the_trust_config_map_the_distributor_publishes_into(
        self,
    ) -> None:
        objects = render()
        env = container_env(one(objects, "Deployment", "palisade-injector"))
        assert env["PALISADE_DISTRIBUTOR"] == "palisade-distributor.palisade.svc:9401"
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP"] == "palisade-trust"
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP_KEY"] == "keys.pem"
        assert "PALISADE_SIDECAR_TRUSTED_KEYS" not in env, "no key is known at render time"
        args = one(objects, "Deployment", "palisade-distributor")["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        assert "--trust-configmap=palisade-trust" in args
        assert "--trust-configmap-key=keys.pem" in args

    def test_the_injector_starts_with_no_key_known_yet(self) -> None:
        """Without the ConfigMap it would stop: --distributor needs a key."""
        env = {
            k: v
            for k, v in injector_env({}).items()
            if isinstance(v, str) and k != "PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP"
        }
        parser = argparse.ArgumentParser()
        register(parser, env)
        with pytest.raises(SystemExit, match="needs --sidecar-trusted-key"):
            settings_from(parser.parse_args([]))
        env["PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP"] = "palisade-trust"
        parser = argparse.ArgumentParser()
        register(parser, env)
        assert settings_from(parser.parse_args([])).injection.sidecar.trusted_keys == ()

    def test_a_users_own_signing_secret_still_publishes_into_the_trust_config_map(
        self,
    ) -> None:
        objects = render({"distributor": DISTRIBUTOR})
        dep = one(objects, "Deployment", "palisade-distributor")
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--signing-key=/etc/palisade/signing/signing.pem" in args
        assert not [a for a in args if a.startswith("--signing-key-secret")]
        assert "--trust-configmap=palisade-trust" in args
        assert sorted(s["metadata"]["name"] for s in by_kind(objects, "Secret")) == [
            "palisade-distributor-admin",
            "palisade-injector-tls",
        ], "no empty signing Secret when the user brings one"
        keys_role = one(objects, "Role", "palisade-distributor-keys")
        assert [r["resources"] for r in keys_role["rules"]] == [["secrets"], ["configmaps"]]
        assert keys_role["rules"][0]["resourceNames"] == ["palisade-distributor-admin"]

    def test_extra_sidecar_arguments_reach_the_sidecar_command_line(self) -> None:
        values = {
            "distributor": {**DISTRIBUTOR, "publicKeys": [KEY_A]},
            "sidecar": {"extraArgs": ["--resource", "https://mcp.example/a b"]},
        }
        env = {k: v for k, v in injector_env(values).items() if isinstance(v, str)}
        parser = argparse.ArgumentParser()
        register(parser, env)
        extra = settings_from(parser.parse_args([])).injection.sidecar.extra_args
        assert extra == ("--resource", "https://mcp.example/a b")


class TestWithoutPublicKeys:
    def test_an_external_distributor_without_keys_is_refused_with_the_reason(self) -> None:
        result = template({"distributor": {**NO_DISTRIBUTOR, "address": "dist.example:9401"}})
        assert result.returncode != 0
        assert "distributor.publicKeys is required" in result.stderr
        assert "refuse to start without one" in result.stderr

    def test_a_distributor_alone_needs_no_keys_when_nothing_is_injected(self) -> None:
        objects = render({"distributor": DISTRIBUTOR, "injector": {"enabled": False}})
        assert one(objects, "Deployment", "palisade-distributor")

    def test_without_a_distributor_neither_address_nor_keys_are_given(self) -> None:
        env = injector_env({"distributor": NO_DISTRIBUTOR})
        assert "PALISADE_DISTRIBUTOR" not in env
        assert "PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP" not in env
        assert "PALISADE_SIDECAR_TRUSTED_KEYS" not in env
        sidecar = injected_env(env)
        assert "PALISADE_DISTRIBUTOR" not in sidecar and "PALISADE_TRUSTED_KEY" not in sidecar

    def test_notes_say_that_without_a_distributor_sidecars_deny_every_call(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = helm(
                "install", "palisade", str(CHART), "-n", "palisade", "--dry-run=client",
                *values_args({"distributor": NO_DISTRIBUTOR}, Path(tmp)),
            ).stdout  # fmt: skip
        assert "No distributor: injected sidecars have no policy bundle" in out


class TestTheSchema:
    @pytest.mark.parametrize(
        ("values", "complaint"),
        [
            ({"distributor": {"publicKeys": ["ssh-ed25519 AAAA"]}}, "/distributor/publicKeys/0"),
            ({"distributor": {"publicKeysConfigMap": {"nam": "x"}}}, "nam"),
            ({"sidecar": {"extraArgs": ["--x='y'"]}}, "/sidecar/extraArgs/0"),
        ],
    )
    def test_bad_key_values_are_refused_with_the_path(
        self, values: dict[str, Any], complaint: str
    ) -> None:
        result = template(values)
        assert result.returncode != 0
        assert complaint in result.stderr


class TestWithoutADistributor:
    def test_a_bundle_config_map_with_keys_reaches_every_sidecar(self) -> None:
        values = {
            "sidecar": {"bundleConfigMap": "palisade-bundle"},
            "distributor": {**NO_DISTRIBUTOR, "publicKeys": [KEY_A]},
        }
        env = injector_env(values)
        assert env["PALISADE_SIDECAR_BUNDLE_CONFIGMAP"] == "palisade-bundle"
        sidecar = injected_env(env)
        assert sidecar["PALISADE_TRUSTED_KEY"] == KEY_A.strip()
        assert "PALISADE_DISTRIBUTOR" not in sidecar

    def test_a_bundle_config_map_without_keys_is_refused(self) -> None:
        result = template(
            {"sidecar": {"bundleConfigMap": "palisade-bundle"}, "distributor": NO_DISTRIBUTOR}
        )
        assert result.returncode != 0
        assert "sidecar.bundleConfigMap needs distributor.publicKeys" in result.stderr

    def test_a_distributor_makes_the_bundle_config_map_unused(self) -> None:
        values = {
            "sidecar": {"bundleConfigMap": "palisade-bundle"},
            "distributor": {**NO_DISTRIBUTOR, "address": "d:9401", "publicKeys": [KEY_A]},
        }
        env = injector_env(values)
        assert "PALISADE_SIDECAR_BUNDLE_CONFIGMAP" not in env
        assert env["PALISADE_DISTRIBUTOR"] == "d:9401"

    def test_notes_show_how_to_create_the_config_map(self) -> None:
        values = {
            "sidecar": {"bundleConfigMap": "pb"},
            "distributor": {**NO_DISTRIBUTOR, "publicKeys": [KEY_A]},
        }
        with tempfile.TemporaryDirectory() as tmp:
            out = helm(
                "install", "palisade", str(CHART), "-n", "palisade", "--dry-run=client",
                *values_args(values, Path(tmp)),
            ).stdout  # fmt: skip
        assert "create configmap pb --from-file=bundle.signed" in out
