"""The signing key generated into an empty Secret and published in a ConfigMap, against a
real kube-apiserver: racing replicas end with one key, restarts keep it, an emptied
Secret gets it back, an absent Secret is waited for. The distributors run as real
processes with a ServiceAccount token whose only rights are the chart's: get, update
and patch on the two named objects.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from distributor.signing_bootstrap import SigningBootstrap
from distributor.signing_keys import KEY_NAME, TRUST_KEY, keys_in
from palisade.bundle import key_id, load_public_key
from palisade.distribution import TrustedKeys
from tests.distributor.helpers import (
    Launched,
    Replica,
    bundle_yaml,
    eventually,
    launch_replica,
    make_client,
    start_replica,
    wait_ready,
)
from tests.harness import ControlPlane, kubeconfig

pytestmark = pytest.mark.e2e

SECRET = "palisade-distributor-signing"
TRUST = "palisade-trust"
SA = "palisade-distributor"
_ns_numbers = itertools.count()


@dataclass
class Keys:
    """One namespace with the chart's empty Secret and ConfigMap and a distributor token."""

    kube: ControlPlane
    ns: str
    tmp: Path
    kubeconfig: Path
    policy_dir: Path

    def secret_path(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/secrets/{SECRET}"

    def secret_keys(self) -> list[str]:
        data = self.kube.request("GET", self.secret_path()).get("data") or {}
        return [key_id(k) for k in keys_in({k: base64.b64decode(v) for k, v in data.items()})]

    def trusted(self) -> TrustedKeys:
        text = self.published()
        return TrustedKeys([load_public_key(text.encode())]) if text else TrustedKeys()

    def published(self) -> str:
        cm = self.kube.request("GET", f"/api/v1/namespaces/{self.ns}/configmaps/{TRUST}")
        return str((cm.get("data") or {}).get(TRUST_KEY, ""))

    def create_secret(self) -> None:
        self.kube.request(
            "POST",
            f"/api/v1/namespaces/{self.ns}/secrets",
            {"metadata": {"name": SECRET}, "type": "Opaque"},
        )

    def start(self, name: str, *, interval: float = 60.0) -> Replica:
        return wait_ready(self.launch(name, interval=interval))

    def launch(self, name: str, *, interval: float = 60.0) -> Launched:
        return launch_replica(
            self.tmp,
            name,
            policy_dir=self.policy_dir,
            store=self.tmp / "distributor.db",
            keys=[],
            extra=[
                "--kubeconfig", str(self.kubeconfig),
                "--key-namespace", self.ns,
                "--signing-key-secret", SECRET,
                "--trust-configmap", TRUST,
                "--key-check-interval", str(interval),
            ],
        )  # fmt: skip


def _restricted_kubeconfig(kube: ControlPlane, ns: str, path: Path) -> None:
    """A token of a ServiceAccount bound to exactly the chart's distributor key rights."""
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": SA}})
    kube.request(
        "POST",
        f"{base}/roles",
        {
            "metadata": {"name": f"{SA}-keys"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [SECRET],
                    "verbs": ["get", "update", "patch"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [TRUST],
                    "verbs": ["get", "update", "patch"],
                },
            ],
        },
    )
    kube.request(
        "POST",
        f"{base}/rolebindings",
        {
            "metadata": {"name": f"{SA}-keys"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{SA}-keys",
            },
            "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}],
        },
    )
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{SA}/token",
        {"spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    path.write_text(yaml.safe_dump(kubeconfig(kube.server, kube.ca_pem, token, user=SA)))


@pytest.fixture
def keys(kube: ControlPlane, tmp_path: Path) -> Iterator[Keys]:
    ns = f"dist-keys-{next(_ns_numbers)}-{int(time.time()) % 100000}"
    kube.create_namespace(ns)
    kube.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": TRUST}})
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "payments.yaml").write_text(bundle_yaml())
    cfg = tmp_path / "kubeconfig"
    _restricted_kubeconfig(kube, ns, cfg)
    made = Keys(kube, ns, tmp_path, cfg, policy_dir)
    made.create_secret()
    try:
        yield made
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _start_together(keys: Keys, names: list[str]) -> list[Replica]:
    """Start replicas at the same moment, then wait until each serves."""
    launched = [keys.launch(n) for n in names]
    replicas: list[Replica] = []
    try:
        for one in launched:
            replicas.append(wait_ready(one))
    except BaseException:
        for one in launched:
            if one.proc.poll() is None:
                one.proc.kill()
        raise
    return replicas


async def _bundle_from(replica: Replica, keys: Keys, trusted: TrustedKeys, cid: str) -> int:
    client, _ = make_client(keys.tmp, cid, [replica.target], trusted)
    await client.start()
    try:
        what = f"a bundle from {replica.name}"
        try:
            await eventually(lambda: client.status.revision >= 1, 20, what)
        except AssertionError:
            raise AssertionError(
                f"{what}: {client.status}\n{replica.log_path.read_text()[-3000:]}"
            ) from None
        assert client.nacks == 0
        return client.status.revision
    finally:
        await client.stop()


class TestGeneratedKey:
    async def test_two_replicas_racing_on_an_empty_secret_end_with_one_key_both_sign_with(
        self, keys: Keys
    ) -> None:
        replicas = _start_together(keys, ["race-a", "race-b"])
        try:
            (kid,) = keys.secret_keys()
            await eventually(lambda: bool(keys.published()), 15, "the public key published")
            assert key_id(load_public_key(keys.published().encode())) == kid
            logs = [r.log_path.read_text() for r in replicas]
            assert sum("generated a signing key" in log for log in logs) == 1, logs
            for log in logs:
                assert kid in log
                assert "PRIVATE KEY" not in log
            trusted = keys.trusted()
            for i, replica in enumerate(replicas):
                assert await _bundle_from(replica, keys, trusted, f"side-{i}") >= 1
        finally:
            for r in replicas:
                r.stop()

    async def test_a_restart_keeps_the_key_and_publishes_nothing_new(self, keys: Keys) -> None:
        first = keys.start("first")
        (kid,) = keys.secret_keys()
        # the public half is published a moment after the key is written: wait for it
        await eventually(lambda: bool(keys.published()), 15, "the public key published")
        first.stop()
        published = keys.published()
        assert key_id(load_public_key(published.encode())) == kid
        second = keys.start("second")
        try:
            assert keys.secret_keys() == [kid]
            assert keys.published() == published
            assert "signing with the key(s) in Secret" in second.log_path.read_text()
            assert await _bundle_from(second, keys, keys.trusted(), "after-restart") >= 1
        finally:
            second.stop()

    async def test_a_secret_emptied_while_running_gets_the_same_key_back(self, keys: Keys) -> None:
        replica = keys.start("keeper", interval=0.3)
        try:
            (kid,) = keys.secret_keys()
            obj = keys.kube.request("GET", keys.secret_path())
            obj["data"] = {}
            keys.kube.request("PUT", keys.secret_path(), obj)
            await eventually(lambda: keys.secret_keys() == [kid], 15, "the key written back")
            cm_path = f"/api/v1/namespaces/{keys.ns}/configmaps/{TRUST}"
            cm = keys.kube.request("GET", cm_path)
            cm["data"] = {TRUST_KEY: "tampered"}
            keys.kube.request("PUT", cm_path, cm)
            await eventually(
                lambda: "tampered" not in keys.published(), 15, "the public key republished"
            )
            assert key_id(load_public_key(keys.published().encode())) == kid
        finally:
            replica.stop()

    async def test_without_the_secret_it_waits_and_starts_once_it_exists(self, keys: Keys) -> None:
        keys.kube.request("DELETE", keys.secret_path())
        launched = keys.launch("patient")
        try:
            log = launched.log_path
            await eventually(
                lambda: log.exists() and "waiting for the signing-key Secret" in log.read_text(),
                20,
                "the wait to be logged",
            )
            assert "does not exist yet" in log.read_text()
            assert not launched.ready.exists(), "it must not serve without a key"
            assert launched.proc.poll() is None, "it waits, it does not exit"
            keys.create_secret()
            replica = await asyncio.to_thread(wait_ready, launched, 60)
            assert len(keys.secret_keys()) == 1
            replica.stop()
        finally:
            if launched.proc.poll() is None:
                launched.proc.kill()

    async def test_an_unreadable_key_in_the_secret_stops_it_and_stays_untouched(
        self, keys: Keys
    ) -> None:
        obj = keys.kube.request("GET", keys.secret_path())
        bad = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nnope\n").decode()
        obj["data"] = {KEY_NAME: bad}
        keys.kube.request("PUT", keys.secret_path(), obj)
        with pytest.raises(RuntimeError) as err:
            keys.start("refuses")
        assert "'signing.pem' is not a usable signing key" in str(err.value)
        after = keys.kube.request("GET", keys.secret_path())["data"]
        assert after == {KEY_NAME: bad}


class TestTheRace:
    """In one process: both bootstraps read the empty Secret before either writes."""

    async def test_the_write_that_loses_the_race_rereads_and_takes_the_winners_key(
        self, keys: Keys
    ) -> None:
        gate = asyncio.Barrier(2)
        made: list[Ed25519PrivateKey] = []

        def generate() -> Ed25519PrivateKey:
            key = Ed25519PrivateKey.generate()
            made.append(key)
            return key

        class Gated(SigningBootstrap):
            reads = 0

            async def _read_secret(self) -> tuple[Any, dict[str, bytes] | None]:
                result = await super()._read_secret()
                self.reads += 1
                if self.reads == 1:
                    await gate.wait()  # the other one has read the same empty Secret
                return result

        async with keys.kube.api_client() as api:
            a, b = (
                Gated(api, keys.ns, secret=SECRET, configmap=TRUST, generate=generate)
                for _ in range(2)
            )
            got_a, got_b = await asyncio.gather(a.load_keys(), b.load_keys())
        assert len(made) == 2, "both generated a key"
        assert [key_id(k) for k in got_a] == [key_id(k) for k in got_b]
        assert keys.secret_keys() == [key_id(got_a[0])]
        assert key_id(got_a[0]) in {key_id(k) for k in made}
        assert sorted((a.reads, b.reads)) == [1, 2], "the loser read again"

        async with keys.kube.api_client() as api:
            both = SigningBootstrap(api, keys.ns, secret=SECRET, configmap=TRUST)
            await asyncio.gather(both.publish(got_a), both.publish(got_b))
        assert key_id(load_public_key(keys.published().encode())) == key_id(got_a[0])


class TestAnOperatorsKey:
    async def test_a_key_file_is_published_and_no_secret_is_needed(self, keys: Keys) -> None:
        key_path = keys.tmp / "operator.pem"
        from tests.distributor.helpers import write_key

        key = write_key(key_path)
        replica = start_replica(
            keys.tmp,
            "operator",
            policy_dir=keys.policy_dir,
            store=keys.tmp / "distributor.db",
            keys=[key_path],
            extra=[
                "--kubeconfig", str(keys.kubeconfig),
                "--key-namespace", keys.ns,
                "--trust-configmap", TRUST,
            ],
        )  # fmt: skip
        try:
            await eventually(lambda: bool(keys.published()), 15, "the public key published")
            assert key_id(load_public_key(keys.published().encode())) == key_id(key)
            assert keys.secret_keys() == [], "the Secret is not touched"
        finally:
            replica.stop()
