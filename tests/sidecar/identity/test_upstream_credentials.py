"""The upstream credential replaces the client's, and follows a rotated Secret mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.credentials import (
    CredentialUnavailable,
    FileCredential,
    NoCredential,
    upstream_headers,
)


class SecretMount:
    """A directory laid out as the kubelet lays out a Secret volume (atomic writer)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0

    def write(self, value: bytes) -> None:
        self.generation += 1
        data = self.root / f"..2026_11_21_{self.generation}"
        data.mkdir()
        (data / "token").write_bytes(value)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(data.name)
        os.replace(tmp, self.root / "..data")  # the atomic swap
        link = self.root / "token"
        if not link.is_symlink():
            link.symlink_to("..data/token")

    @property
    def path(self) -> str:
        return str(self.root / "token")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_clients_token_is_stripped_and_the_upstream_credential_added(
    tmp_path: Path,
) -> None:
    mount = SecretMount(tmp_path)
    mount.write(b"upstream-secret\n")
    out = await upstream_headers(
        [
            ("Authorization", "Bearer client-token"),
            ("proxy-authorization", "Basic eA=="),
            ("Mcp-Session-Id", "s1"),
        ],
        FileCredential(mount.path),
    )
    assert out == [("Mcp-Session-Id", "s1"), ("Authorization", "Bearer upstream-secret")]


async def test_without_an_upstream_credential_the_clients_token_is_still_stripped() -> None:
    out = await upstream_headers(
        {"authorization": "Bearer client-token", "Accept": "*/*"}, NoCredential()
    )
    assert out == [("Accept", "*/*")]


async def test_a_custom_header_without_scheme_is_supported(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k-123")
    cred = FileCredential(str(tmp_path / "key"), header="X-Api-Key", scheme="")
    assert await cred.header() == ("X-Api-Key", "k-123")


async def test_a_rotated_secret_is_picked_up_after_the_check_interval(tmp_path: Path) -> None:
    mount = SecretMount(tmp_path)
    mount.write(b"first")
    clock = FakeClock()
    cred = FileCredential(mount.path, check_interval_s=1.0, clock=clock)
    assert cred.current() == "Bearer first"
    mount.write(b"second")
    clock.now = 0.5
    assert cred.current() == "Bearer first"  # not checked yet: the hot path is a clock read
    clock.now = 1.5
    assert cred.current() == "Bearer second"
    clock.now = 3.0
    assert cred.current() == "Bearer second"
    assert cred.loads == 2  # unchanged files are not re-read


@pytest.mark.parametrize(
    "content", [b"", b"   \n", b"two\nlines", b"\xff\xfe", b"x" * 70_000], ids=str
)
def test_an_unusable_credential_file_fails_closed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "token").write_bytes(content)
    cred = FileCredential(str(tmp_path / "token"))
    with pytest.raises(CredentialUnavailable) as info:
        cred.current()
    assert str(tmp_path / "token") in str(info.value)


def test_a_credential_file_that_disappears_fails_closed_until_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("v1")
    clock = FakeClock()
    cred = FileCredential(str(path), check_interval_s=0.0, clock=clock)
    assert cred.current() == "Bearer v1"
    path.unlink()
    with pytest.raises(CredentialUnavailable):
        cred.current()
    path.write_text("v2")
    assert cred.current() == "Bearer v2"


def test_the_credential_never_appears_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("super-secret\nsecond-line")
    with pytest.raises(CredentialUnavailable) as info:
        FileCredential(str(path)).current()
    assert "super-secret" not in str(info.value)


def test_a_header_name_that_could_inject_is_refused() -> None:
    with pytest.raises(ValueError):
        FileCredential("/nonexistent", header="X-Evil\r\nHost")


async def test_a_credential_source_is_callable_for_the_upstream_client(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc")
    assert await FileCredential(str(tmp_path / "token"))() == {"Authorization": "Bearer abc"}
    assert await NoCredential()() == {}
