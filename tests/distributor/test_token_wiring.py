"""Every subscriber the chart installs carries a token the chart's distributor accepts.

The distributor checks tokens for one audience; the injector (for sidecars) and the
node agent DaemonSet must project exactly that audience, at the path the client is
told to read. Rendered with the real helm; the injector's own patch builder.
"""

from __future__ import annotations

from typing import Any

from distributor.subscriber_auth import DEFAULT_AUDIENCE
from injector import admission, trust
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from palisade.bundle.signing import generate_key, public_key_pem
from tests.chart.render import one, render
from tests.injector.pods import ENABLED, apply_patch, pod, review


def _projected_tokens(volumes: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """volume name -> (audience, path) of each projected ServiceAccount token."""
    out = {}
    for v in volumes:
        for src in v.get("projected", {}).get("sources", []):
            sat = src.get("serviceAccountToken")
            if sat and sat.get("audience"):
                out[v["name"]] = (sat["audience"], sat["path"])
    return out


def test_the_chart_authenticates_subscribers_and_names_the_node_agents_account() -> None:
    objects = render(release="palisade", namespace="palisade")
    dep = one(objects, "Deployment", "palisade-distributor")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--subscriber-auth=token-review" in args
    assert f"--subscriber-audience={DEFAULT_AUDIENCE}" in args
    assert "--node-agent-service-account=palisade:palisade-nodeagent" in args
    assert "--insecure-subscribers" not in args
    ds = one(objects, "DaemonSet", "palisade-nodeagent")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "palisade-nodeagent"
    role = one(objects, "ClusterRole", "palisade-distributor-subscribers")
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
        (("tokenreviews",), ("create",)),
        (("pods",), ("get",)),
    }
    binding = one(objects, "ClusterRoleBinding", "palisade-distributor-subscribers")
    assert binding["subjects"][0]["name"] == "palisade-distributor"


def test_the_node_agent_daemonset_mounts_a_token_for_the_distributor_and_reads_it() -> None:
    ds = one(render(release="palisade", namespace="palisade"), "DaemonSet", "palisade-nodeagent")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    tokens = _projected_tokens(pod["volumes"])
    assert list(tokens.values()) == [(DEFAULT_AUDIENCE, "token")]
    (volume,) = tokens
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PALISADE_NODEAGENT_DISTRIBUTOR_TOKEN_FILE"] == f"{mount['mountPath']}/token"


def test_insecure_subscribers_are_an_explicit_choice_of_the_chart() -> None:
    objects = render({"distributor": {"subscriberAuth": "insecure"}})
    args = one(objects, "Deployment", "palisade-distributor")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--insecure-subscribers" in args and "--subscriber-auth=token-review" not in args
    assert not [o for o in objects if o["metadata"]["name"].endswith("-subscribers")]


def _injected(sidecar: SidecarSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod as the injector patches the standard MCP pod, and its sidecar container."""
    settings = InjectionSettings(sidecar=sidecar)
    patched = apply_patch(pod(), decode_patch(admission.serve(review(pod()), ENABLED, settings)))
    every = patched["spec"].get("initContainers", []) + patched["spec"]["containers"]
    (container,) = [c for c in every if c["name"] == "palisade-sidecar"]
    return patched, container


def test_an_injected_sidecar_gets_a_token_for_the_distributor_and_is_told_where() -> None:
    keys = trust.normalize([public_key_pem(generate_key()).decode()])
    for identity in ("cluster-oidc", "token-review", "none"):
        sidecar = SidecarSettings(distributor="d:9401", trusted_keys=keys, identity=identity)
        patched, container = _injected(sidecar)
        tokens = _projected_tokens(patched["spec"]["volumes"])
        assert list(tokens.values()) == [(DEFAULT_AUDIENCE, "distributor-token")], identity
        (volume,) = tokens
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PALISADE_DISTRIBUTOR_TOKEN_FILE"] == f"{mounts[volume]}/distributor-token"
    patched, container = _injected(SidecarSettings(identity="none"))
    assert _projected_tokens(patched["spec"]["volumes"]) == {}
    assert "PALISADE_DISTRIBUTOR_TOKEN_FILE" not in {e["name"] for e in container["env"]}
