"""The pure parts: isolating a broken source, each resource's status, transition times."""

from __future__ import annotations

import yaml

from distributor.compiler import SourceError, compile_bundle, isolate
from distributor.crd import BundleState, status_for
from distributor.sources import with_transition_times

SERVERS = yaml.safe_dump(
    {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": "a"},
        "spec": {"servers": [{"name": "kube", "tools": [{"name": "t", "risk": "read"}]}]},
    }
)


def rules(name: str, server: str = "kube", reason: str = "") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "palisade.dev/v1alpha1",
            "kind": "PolicyBundle",
            "metadata": {"name": name},
            "spec": {
                "rules": [
                    {
                        "id": f"{name}-r",
                        "match": {"servers": [server]},
                        "decision": "deny",
                        "reason": reason,
                    }
                ]
            },
        }
    )


def test_valid_sources_pass_through_untouched() -> None:
    current = [("a", SERVERS), ("b", rules("b"))]
    out = isolate(current, {})
    assert out.sources == tuple(current) and not out.rejected and not out.held


def test_a_broken_source_with_a_last_valid_text_is_served_from_it() -> None:
    good, bad = rules("b", reason="old"), rules("b", server="nope")
    out = isolate([("a", SERVERS), ("b", bad)], {"a": SERVERS, "b": good})
    assert dict(out.sources) == {"a": SERVERS, "b": good}
    assert out.substituted == {"b"} and not out.left_out and not out.held
    assert [e.field for e in out.rejected["b"]] == ["spec.rules[0].match.servers[0]"]
    compile_bundle(out.sources)


def test_a_source_that_never_was_valid_is_left_out() -> None:
    out = isolate([("a", SERVERS), ("c", rules("c", server="nope"))], {"a": SERVERS})
    assert dict(out.sources) == {"a": SERVERS}
    assert out.left_out == {"c"} and "c" in out.rejected


def test_the_fleet_is_held_when_a_valid_source_cannot_be_served() -> None:
    bad = rules("b", server="nope")
    # Valid once, before a restart: its text is unknown, leaving it out could loosen.
    held = isolate([("a", SERVERS), ("b", bad)], {"a": SERVERS, "b": None})
    assert held.held and held.sources == (("a", SERVERS), ("b", bad)) and not held.rejected
    # Unchanged, broken by another source it depends on (alpha dropped the server).
    gone = SERVERS.replace("kube", "other")
    b = rules("b")
    held = isolate([("a", gone), ("b", b)], {"a": SERVERS, "b": b})
    assert held.held


def test_nothing_left_to_compile_holds() -> None:
    assert isolate([("c", rules("c", server="nope"))], {}).held


def err(source: str) -> SourceError:
    return SourceError(source, 3, "spec.rules[0].decision", "'perhaps' is not one of ...")


def test_status_names_the_generation_and_why() -> None:
    s = status_for(
        "b",
        BundleState(generation=4, valid_generation=2, own_errors=(err("b"),), substituted=True),
        7,
        "sha256:x",
        1,
        2,
    )
    assert s["observedGeneration"] == 4 and s["validGeneration"] == 2
    valid, ready = s["conditions"]
    assert valid["status"] == "False" and valid["reason"] == "ServingLastValid"
    assert "spec.rules[0].decision (line 3)" in valid["message"]
    assert "generation 2" in valid["message"]
    assert ready["status"] == "False" and s["rollout"] == "1/2"
    assert {c["observedGeneration"] for c in s["conditions"]} == {4}
    held = status_for("a", BundleState(generation=1, held_errors=(err("b"),)), 7, "", 0, 0)
    assert held["conditions"][0]["reason"] == "OtherBundleInvalid"
    assert "validGeneration" not in held
    mine = status_for("b", BundleState(generation=1, held_errors=(err("b"),)), 7, "", 0, 0)
    assert mine["conditions"][0]["reason"] == "Invalid"
    assert "revision 7" in mine["conditions"][0]["message"]


def test_last_transition_time_moves_only_when_status_does() -> None:
    old = {
        "conditions": [
            {"type": "Valid", "status": "True", "lastTransitionTime": "T0"},
            {"type": "Ready", "status": "False", "lastTransitionTime": "T0"},
        ]
    }
    new = {
        "conditions": [
            {"type": "Valid", "status": "True", "reason": "Other", "observedGeneration": 2},
            {"type": "Ready", "status": "True"},
        ]
    }
    out = with_transition_times(old, new, lambda: "T1")
    assert [c["lastTransitionTime"] for c in out["conditions"]] == ["T0", "T1"]
    assert with_transition_times({}, new, lambda: "T2")["conditions"][0]["lastTransitionTime"] == (
        "T2"
    )


def test_a_refused_source_carries_its_lint_code_into_the_status() -> None:
    bad = rules("b").replace("decision: deny", "decision: perhaps")
    out = isolate([("a", SERVERS), ("b", bad)], {})
    (problem,) = out.rejected["b"]
    assert problem.code == "PB014" and str(problem).endswith("[PB014]")
    assert problem.as_dict()["code"] == "PB014"
    s = status_for("b", BundleState(generation=1, own_errors=(problem,)), 1, "sha256:x", 0, 0)
    assert "[PB014]" in s["conditions"][0]["message"]


def _cr(name: str, generation: int, spec: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": name, "namespace": "ns", "generation": generation},
        "spec": spec,
    }


def test_a_text_becomes_last_valid_only_once_published_not_when_the_gate_refuses_it() -> None:
    from distributor.sources import CrdSource

    servers = yaml.safe_load(SERVERS)["spec"]

    def rule(decision: str, reason: str) -> dict[str, object]:
        return {"rules": [{"id": "b-r", "decision": decision, "reason": reason}]}

    source = CrdSource(object(), namespace="ns")
    key = "policybundle/ns/b"
    source.objects = {
        "policybundle/ns/a": _cr("a", 1, servers),
        key: _cr("b", 1, rule("deny", "published")),
    }
    source.snapshot()
    assert key not in source.valid_generation, "compiled is not yet published"
    source.published()
    assert source.valid_generation[key] == 1
    source.objects[key] = _cr("b", 2, rule("deny", "refused by the replay gate"))
    source.snapshot()  # compiles; the gate refuses it: published() is not called
    assert source.valid_generation[key] == 1
    source.objects[key] = _cr("b", 3, rule("perhaps", "broken"))
    served = dict(source.snapshot())
    assert "published" in served[key] and "refused" not in served[key]
    assert source.substituted == frozenset({key})
