"""Secret redaction in tool results, for every tool (pure)."""

from __future__ import annotations

import json

import pytest

from sidecar.quarantine.redact import redact_result, scrub

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ."
    "eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0."
    "c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAyZ3kqVb9sA0bWZkO2LrNvfJp0nY1m3q\n"
    "q8H7n2lZk0tY8Xh5pV+Wq9a1B0cD3eF4gH5iJ6kL7mN8oP==\n"
    "-----END RSA PRIVATE KEY-----"
)
KUBECONFIG = f"""\
apiVersion: v1
kind: Config
users:
- name: admin
  user:
    token: {JWT}
    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
"""

CASES = [
    ("Authorization: Bearer abcdef0123456789abcdef", "abcdef0123456789abcdef"),
    (f"the service account token is {JWT} (mounted)", JWT),
    (f"key file:\n{PEM}\nend", "MIIEowIBAAKCAQEAyZ3kqVb9sA0bWZkO2LrNvfJp0nY1m3q"),
    ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("POSTGRES_PASSWORD=hunter2-very-secret", "hunter2-very-secret"),
    ("connecting with password='s3cr3t pass' to db", "s3cr3t pass"),
    ('{"db_password": "tr0ub4dor", "user": "app"}', "tr0ub4dor"),
    (KUBECONFIG, "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo="),
    ("GITHUB_TOKEN ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnop"),
    ("slack: xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
]


class TestScrub:
    @pytest.mark.parametrize(("text", "secret"), CASES)
    def test_a_credential_in_text_is_replaced_and_counted(self, text: str, secret: str) -> None:
        out, n = scrub(text)
        assert secret not in out
        assert "[REDACTED]" in out
        assert n >= 1

    def test_the_key_stays_so_the_agent_sees_a_secret_was_there(self) -> None:
        out, n = scrub("POSTGRES_PASSWORD=hunter2 and token: abc123def")
        # a bare value runs on over spaces up to the next key (over-redaction is safe)
        assert out == "POSTGRES_PASSWORD=[REDACTED] token: [REDACTED]"
        assert n == 2

    def test_a_whole_kubeconfig_loses_every_credential_but_keeps_its_shape(self) -> None:
        out, n = scrub(KUBECONFIG)
        assert JWT not in out and "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=" not in out
        assert "kind: Config" in out and "name: admin" in out
        assert n == 2

    def test_a_pem_block_is_replaced_whole(self) -> None:
        out, n = scrub(f"before\n{PEM}\nafter")
        assert out == "before\n[REDACTED]\nafter"
        assert n == 1

    @pytest.mark.parametrize(
        "text",
        [
            "payments/payments-api-07f9c  CrashLoopBackOff",
            "tokens_used: 1234, secretName: db-creds, keys: 3",
            "basically fine; the passage of time; monkey business",
            "x" * 70_000,
        ],
    )
    def test_ordinary_text_is_left_alone(self, text: str) -> None:
        assert scrub(text) == (text, 0)


class TestRedactResult:
    def test_text_structured_content_and_resources_are_all_redacted(self) -> None:
        result = {
            "content": [
                {"type": "text", "text": f"token: {JWT}"},
                {
                    "type": "resource",
                    "resource": {"uri": "file:///kubeconfig", "text": KUBECONFIG},
                },
            ],
            "structuredContent": {
                "result": f"token: {JWT}",
                "credentials": {"password": "hunter2", "username": "app"},
                "apiKey": "k-123456",
                "count": 3,
            },
            "isError": False,
        }
        out, n = redact_result(result)
        dumped = json.dumps(out)
        for secret in (JWT, "hunter2", "k-123456", "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo="):
            assert secret not in dumped
        assert out["structuredContent"]["credentials"]["username"] == "app"
        assert out["structuredContent"]["count"] == 3
        assert n == 6
        assert JWT in json.dumps(result), "the input is not modified"

    def test_a_result_without_secrets_is_returned_as_the_same_object(self) -> None:
        result = {"content": [{"type": "text", "text": "all good"}], "isError": False}
        out, n = redact_result(result)
        assert out is result and n == 0
