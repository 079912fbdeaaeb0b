"""Secrets never reach an audit record; the digest still covers the real arguments."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from palisade.audit import REDACTED, AuditWriter, Redactor, Signer, digest

from .conftest import entry


def test_registry_names_and_builtin_fragments_are_redacted_at_any_depth() -> None:
    r = Redactor(["kubeconfig"])
    out = r.redact(
        {
            "namespace": "payments",
            "KubeConfig": "apiVersion: v1 ...",
            "db": {"DB_Password": "hunter2", "hosts": [{"api-key": "k1"}, {"name": "x"}]},
            "github_token": {"nested": "whole value goes"},
        }
    )
    assert out == {
        "namespace": "payments",
        "KubeConfig": REDACTED,
        "db": {"DB_Password": REDACTED, "hosts": [{"api-key": REDACTED}, {"name": "x"}]},
        "github_token": REDACTED,
    }


def test_secret_looking_values_are_redacted_whatever_their_name() -> None:
    r = Redactor()
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzcmUifQ.c2lnbmF0dXJl"
    out = r.redact({"header": "Bearer abc.def", "note": jwt, "pem": "-----BEGIN PRIVATE KEY-----"})
    assert out == {"header": REDACTED, "note": REDACTED, "pem": REDACTED}
    assert r.redact({"text": "a bearer of news"}) == {"text": "a bearer of news"}


def test_the_digest_does_not_depend_on_key_order_or_integral_floats() -> None:
    assert digest({"a": 1, "b": [1, 2.0]}) == digest({"b": [1.0, 2], "a": 1.0})
    assert digest({"a": 1}) != digest({"a": 2})


async def test_a_written_record_holds_no_secret_value(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    async with AuditWriter(path, Signer.generate(), fsync="never") as w:
        args = {"namespace": "payments", "password": "s3cr3t-pw", "opts": {"tok": "s3cr3t-tk"}}
        rec = await w.append(entry(arguments=args), secret_names=["tok"])
    text = path.read_text()
    assert "s3cr3t" not in text
    assert rec["arguments"] == {
        "namespace": "payments",
        "password": REDACTED,
        "opts": {"tok": REDACTED},
    }
    assert rec["arguments_digest"] == digest(args)


_names = st.sampled_from(["password", "x_token", "API-KEY", "secret", "Authorization", "creds"])
_plain = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)


@given(
    st.recursive(
        st.dictionaries(_plain, st.integers() | st.text(max_size=5), max_size=3),
        lambda inner: st.dictionaries(
            _plain | _names, inner | st.lists(inner, max_size=2), max_size=3
        ),
        max_leaves=10,
    ),
    _names,
)
def test_a_planted_secret_is_never_in_the_redacted_output(
    tree: dict[str, object], name: str
) -> None:
    planted = {"outer": [tree, {name: "PLANTED-SECRET-VALUE"}], name: "PLANTED-SECRET-VALUE"}
    out = Redactor(["creds"]).redact(planted)
    assert "PLANTED-SECRET-VALUE" not in repr(out)


def test_the_all_fields_marker_redacts_everything_but_keeps_the_shape() -> None:
    from palisade.audit.redact import ALL_FIELDS

    out = Redactor([ALL_FIELDS]).redact({"a": 1, "b": [{"c": 2}]})
    assert out == {"a": REDACTED, "b": REDACTED}
