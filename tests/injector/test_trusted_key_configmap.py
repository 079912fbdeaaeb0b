"""Trusted bundle keys that appear after the injector started: the ConfigMap the
distributor publishes its key into, read and watched.

The pure part (ConfigMap data -> keys) is table-driven; the watch runs against the
real kube-apiserver of the harness, as a ServiceAccount holding exactly the RBAC the
chart must grant (get, list, watch on that one ConfigMap name).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from injector.keysource import ConfigMapKeys, keys_from_data, merge
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from injector.webhook import StaticNamespaces, Webhook
from palisade.bundle.signing import generate_key, private_key_pem, public_key_pem
from tests.harness.controlplane import ControlPlane
from tests.injector.pods import ENABLED, apply_patch, pod, review

NAME = "palisade-distributor-keys"
KEY_A = public_key_pem(generate_key()).decode().strip()
KEY_B = public_key_pem(generate_key()).decode().strip()
PRIVATE = private_key_pem(generate_key()).decode()


@pytest.mark.parametrize(
    ("data", "keys", "problem"),
    [
        (None, (), "does not exist yet"),
        ({}, (), "has no key 'keys.pem' yet"),
        ({"keys.pem": "  \n"}, (), "has no key 'keys.pem' yet"),
        ({"keys.pem": KEY_A}, (KEY_A,), ""),
        ({"keys.pem": f"{KEY_A}\n{KEY_B}\n{KEY_A}"}, (KEY_A, KEY_B), ""),
        ({"keys.pem": PRIVATE}, (), "not a public key"),
        ({"keys.pem": "garbage"}, (), "no PEM block"),
        ({"other.pem": KEY_A}, (), "has no key 'keys.pem' yet"),
    ],
)
def test_config_map_data_becomes_keys_or_a_problem(
    data: dict[str, str] | None, keys: tuple[str, ...], problem: str
) -> None:
    state = keys_from_data(data, "keys.pem", "palisade/" + NAME)
    assert state.keys == keys
    assert problem in state.problem
    assert bool(state.problem) is not bool(keys)


def test_flag_keys_come_first_and_hide_a_missing_config_map() -> None:
    assert merge((KEY_A,), keys_from_data(None, "keys.pem", "x")).keys == (KEY_A,)
    assert merge((KEY_A,), keys_from_data({"keys.pem": KEY_B}, "keys.pem", "x")).keys == (
        KEY_A,
        KEY_B,
    )
    assert merge((), keys_from_data(None, "keys.pem", "x")).problem


# --- against a real API server --------------------------------------------------------------


async def eventually(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Release:
    """A namespace standing for the release, and the injector's least-privilege client."""

    def __init__(self, kube: ControlPlane) -> None:
        self.kube = kube
        self.ns = "palisade-" + secrets.token_hex(3)
        kube.create_namespace(self.ns)
        self.path = f"/api/v1/namespaces/{self.ns}/configmaps"

    def grant_injector(self) -> str:
        """A ServiceAccount with only the rule the chart must add; its token."""
        kube, ns = self.kube, self.ns
        kube.request(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "injector"}}
        )
        kube.request(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
            {
                "metadata": {"name": "injector-keys"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": [NAME],
                        "verbs": ["get", "list", "watch"],
                    }
                ],
            },
        )
        kube.request(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            {
                "metadata": {"name": "injector-keys"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "injector-keys",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "injector", "namespace": ns}],
            },
        )
        answer = kube.request(
            "POST",
            f"/api/v1/namespaces/{ns}/serviceaccounts/injector/token",
            {"spec": {"expirationSeconds": 3600}},
        )
        return str(answer["status"]["token"])

    def client(self, token: str) -> ApiClient:
        cfg = Configuration(
            host=self.kube.server,
            api_key={"BearerToken": token},
            api_key_prefix={"BearerToken": "Bearer"},
        )
        cfg.ssl_ca_cert = str(self.kube.ca_file)
        return ApiClient(configuration=cfg)

    def publish(self, text: str) -> None:
        body = {"metadata": {"name": NAME}, "data": {"keys.pem": text}}
        status, _ = self.kube._raw("GET", f"{self.path}/{NAME}", None)
        if status == 404:
            self.kube.request("POST", self.path, body)
        else:
            self.kube.request("PUT", f"{self.path}/{NAME}", body)

    def withdraw(self) -> None:
        self.kube.request("DELETE", f"{self.path}/{NAME}")


@pytest.fixture
async def release(kube: ControlPlane) -> AsyncIterator[tuple[Release, ApiClient]]:
    r = Release(kube)
    api = r.client(r.grant_injector())
    try:
        yield r, api
    finally:
        await api.close()


def sidecar_key_env(doc: Any) -> str:
    spec = apply_patch(pod(), decode_patch(doc))["spec"]
    (side,) = [c for c in spec["containers"] if c["name"] == "palisade-sidecar"]
    return str({e["name"]: e.get("value") for e in side["env"]}["PALISADE_TRUSTED_KEY"])


@pytest.mark.e2e
async def test_a_key_published_after_start_reaches_the_next_pod_through_the_watch(
    release: tuple[Release, ApiClient],
) -> None:
    r, api = release
    # min_refresh huge: after the first read, only the watch can bring news.
    source = ConfigMapKeys(api, r.ns, NAME, min_refresh_seconds=1e9)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    webhook = Webhook(
        InjectionSettings(
            native_sidecar="never", sidecar=SidecarSettings(distributor="d.palisade:7070")
        ),
        StaticNamespaces({"payments": ENABLED}),
        keys=source,
    )
    try:
        await eventually(lambda: source.updates >= 1, "the first read")
        refused = (await webhook.review(review(pod())))["response"]
        assert refused["allowed"] is False
        assert (
            "has not published its signing key yet; retry in a few seconds"
            in (refused["status"]["message"])
        )
        assert "does not exist yet" in refused["status"]["message"]

        r.publish(KEY_A)
        await eventually(lambda: bool(source._found.keys), "the watch to see the key")
        assert sidecar_key_env(await webhook.review(review(pod()))) == KEY_A

        r.publish(f"{KEY_A}\n{KEY_B}")  # rotation: both, for a while
        await eventually(lambda: len(source._found.keys) == 2, "the rotated keys")
        assert sidecar_key_env(await webhook.review(review(pod()))) == f"{KEY_A},{KEY_B}"

        r.publish("not a key")  # a bad edit keeps the last good keys
        updates = source.updates
        await eventually(lambda: source.updates > updates, "the bad edit")
        assert len(source._found.keys) == 2

        r.withdraw()
        await eventually(lambda: not source._found.keys, "the deletion")
        assert (await webhook.review(review(pod())))["response"]["allowed"] is False
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.e2e
async def test_without_the_watch_a_review_reads_the_config_map_before_refusing(
    release: tuple[Release, ApiClient],
) -> None:
    r, api = release
    source = ConfigMapKeys(api, r.ns, NAME, min_refresh_seconds=0)
    assert (await source.current()).keys == ()
    r.publish(KEY_B)
    assert (await source.current()).keys == (KEY_B,)


@pytest.mark.e2e
async def test_the_least_privilege_client_cannot_read_other_config_maps(
    release: tuple[Release, ApiClient],
) -> None:
    r, api = release
    r.kube.request("POST", r.path, {"metadata": {"name": "other"}, "data": {"keys.pem": KEY_A}})
    source = ConfigMapKeys(api, r.ns, "other", min_refresh_seconds=0)
    state = await source.current()
    assert state.keys == ()
    assert "HTTP 403" in state.problem
