"""The pure parts of the Vault credential source: translation, extraction, timing."""

from __future__ import annotations

import pytest
import requests
from hvac import exceptions as hvac_errors
from hypothesis import given
from hypothesis import strategies as st

from sidecar.credentials import MAX_CREDENTIAL_BYTES
from sidecar.credentials_vault import (
    KubernetesAuth,
    TokenFileAuth,
    VaultFailure,
    VaultSettings,
    classify,
    extract_credential,
    next_delay,
    token_renew_at,
    value_expiry,
)

LEAKY = "s.SecretTokenInTheMessage https://vault/v1/secret?token=abc"


def settings(**kw: object) -> VaultSettings:
    base: dict[str, object] = {
        "addr": "http://127.0.0.1:8200",
        "secret_path": "mcp/kubernetes",
        "field": "token",
        "auth": TokenFileAuth("/run/vault/token"),
        "refresh_interval_s": 30.0,
        "max_stale_s": 300.0,
        "retry_min_s": 0.5,
        "retry_max_s": 15.0,
    }
    base.update(kw)
    return VaultSettings(**base)  # type: ignore[arg-type]


class TestErrorsAreTranslatedWithoutTheirMessages:
    @pytest.mark.parametrize(
        ("exc", "reason", "drop"),
        [
            (hvac_errors.Forbidden(LEAKY), "permission denied", True),
            (hvac_errors.Unauthorized(LEAKY), "permission denied", True),
            (hvac_errors.InvalidPath(LEAKY), "no such secret", True),
            (hvac_errors.InvalidRequest(LEAKY), "rejected the request", True),
            (hvac_errors.VaultDown(LEAKY), "sealed", False),
            (hvac_errors.RateLimitExceeded(LEAKY), "rate limiting", False),
            (hvac_errors.InternalServerError(LEAKY), "InternalServerError", False),
            (requests.ConnectionError(LEAKY), "unreachable", False),
            (requests.Timeout(LEAKY), "unreachable", False),
            (TimeoutError(LEAKY), "did not answer in time", False),
            (RuntimeError(LEAKY), "unexpected error", False),
        ],
    )
    def test_each_failure_has_a_fixed_reason_and_a_verdict_on_the_cache(
        self, exc: BaseException, reason: str, drop: bool
    ) -> None:
        failure = classify(exc)
        assert reason in failure.reason
        assert failure.drop is drop
        assert "SecretToken" not in failure.reason and "token=abc" not in failure.reason

    def test_a_failure_already_translated_is_kept(self) -> None:
        failure = VaultFailure("cannot read the Vault token file", drop=False)
        assert classify(failure) is failure


class TestExtractingTheCredential:
    def kv(self, data: object, version: int = 3) -> dict[str, object]:
        return {"data": {"data": data, "metadata": {"version": version}}, "lease_duration": 0}

    def test_the_field_and_the_version_are_taken_and_whitespace_trimmed(self) -> None:
        assert extract_credential(self.kv({"token": " abc \n"}), "token") == ("abc", 3)

    @pytest.mark.parametrize(
        ("response", "message"),
        [
            ({"data": None}, "not a KV v2 secret"),
            ({"nothing": 1}, "not a KV v2 secret"),
            ({"data": {"data": {"other": "x"}, "metadata": {}}}, "has no field 'token'"),
            ({"data": {"data": {"token": 42}, "metadata": {}}}, "is not a string"),
            ({"data": {"data": {"token": "  "}, "metadata": {}}}, "empty"),
            ({"data": {"data": {"token": "a\r\nX-Evil: 1"}, "metadata": {}}}, "single line"),
            ({"data": {"data": {"token": "a\0b"}, "metadata": {}}}, "single line"),
            (
                {"data": {"data": {"token": "x" * (MAX_CREDENTIAL_BYTES + 1)}, "metadata": {}}},
                "larger than",
            ),
        ],
    )
    def test_unusable_answers_are_authoritative_failures(
        self, response: object, message: str
    ) -> None:
        with pytest.raises(VaultFailure, match=message) as err:
            extract_credential(response, "token")
        assert err.value.drop


class TestTiming:
    def test_a_value_without_a_lease_lives_max_stale_and_with_one_its_lease(self) -> None:
        assert value_expiry(100.0, 0, 300.0) == 400.0
        assert value_expiry(100.0, 60.0, 300.0) == 160.0

    def test_tokens_are_renewed_two_thirds_into_their_ttl_and_root_tokens_never(self) -> None:
        assert token_renew_at(100.0, 30.0) == 120.0
        assert token_renew_at(100.0, 0) is None

    def test_after_a_success_the_refresh_interval_applies(self) -> None:
        s = settings()
        assert (
            next_delay(now=0, settings=s, failures=0, renew_at=None, expires_at=300, jitter=1) == 30
        )

    def test_a_token_due_for_renewal_comes_first(self) -> None:
        s = settings()
        assert next_delay(now=0, settings=s, failures=0, renew_at=5, expires_at=300, jitter=1) == 5

    def test_a_short_lease_is_reread_two_thirds_of_the_way(self) -> None:
        s = settings()
        assert next_delay(now=0, settings=s, failures=0, renew_at=None, expires_at=9, jitter=1) == 6

    def test_failures_back_off_exponentially_up_to_the_cap_with_jitter(self) -> None:
        s = settings()
        delays = [
            next_delay(now=0, settings=s, failures=n, renew_at=None, expires_at=None, jitter=1)
            for n in range(1, 8)
        ]
        assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
        half = next_delay(now=0, settings=s, failures=3, renew_at=None, expires_at=None, jitter=0.5)
        assert half == 1.0

    @given(
        now=st.floats(0, 1e6),
        failures=st.integers(0, 10_000),
        renew_in=st.none() | st.floats(-1e4, 1e4),
        expire_in=st.none() | st.floats(-1e4, 1e4),
        jitter=st.floats(0.5, 1.0),
    )
    def test_the_delay_is_always_positive_and_bounded(
        self,
        now: float,
        failures: int,
        renew_in: float | None,
        expire_in: float | None,
        jitter: float,
    ) -> None:
        s = settings()
        delay = next_delay(
            now=now,
            settings=s,
            failures=failures,
            renew_at=None if renew_in is None else now + renew_in,
            expires_at=None if expire_in is None else now + expire_in,
            jitter=jitter,
        )
        assert 0.05 <= delay <= max(s.refresh_interval_s, s.retry_max_s)


class TestSettings:
    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"addr": "127.0.0.1:8200"}, "http"),
            ({"secret_path": "/"}, "path and field"),
            ({"field": ""}, "path and field"),
            ({"header": "X Bad"}, "header"),
            ({"auth": KubernetesAuth("")}, "role"),
            ({"refresh_interval_s": 300.0}, "below max_stale_s"),
            ({"retry_min_s": 0.0}, "retry_min_s"),
        ],
    )
    def test_bad_settings_are_refused_with_a_clear_message(
        self, overrides: dict[str, object], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            settings(**overrides)
