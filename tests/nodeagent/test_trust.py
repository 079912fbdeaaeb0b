"""Trusted signing keys: several per file, re-read as the kubelet swaps a ConfigMap volume."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from nodeagent.trust import KeyFileError, TrustState, TrustWatcher, parse_keys, read_source
from palisade.bundle import (
    BundleError,
    TrustedKeys,
    from_document,
    generate_key,
    key_id,
    private_key_pem,
    public_key_pem,
    sign_bundle,
    verify_bundle,
)

DOC = {
    "apiVersion": "palisade.dev/v1alpha1",
    "kind": "PolicyBundle",
    "metadata": {"name": "gpu"},
    "spec": {"tenants": [{"name": "payments", "namespaces": ["payments"]}]},
}


def kubelet_publish(volume: Path, files: dict[str, bytes]) -> None:
    """Update ``volume`` the way the kubelet's atomic writer updates a ConfigMap volume:
    a new timestamped directory, ``..data`` swapped to it by a rename, the user-visible
    names as symlinks through ``..data``, the old directory removed."""
    volume.mkdir(parents=True, exist_ok=True)
    old = (volume / "..data").resolve() if (volume / "..data").is_symlink() else None
    ts = volume / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    ts.mkdir()
    for name, data in files.items():
        (ts / name).write_bytes(data)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(ts.name)
    os.replace(tmp, volume / "..data")
    for name in files:
        link = volume / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(old)


def test_every_public_key_in_one_file_is_trusted(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    text = b"# old key, until the rotation ends\n" + public_key_pem(old) + b"\n"
    text += b"# new key\n" + public_key_pem(new)
    (tmp_path / "keys.pem").write_bytes(text)
    reading = read_source(tmp_path)
    assert reading.good
    assert [key_id(k) for k in reading.keys] == [key_id(old), key_id(new)]
    state = TrustState([tmp_path])
    state.update(reading)
    for key in (old, new):  # a bundle signed by either key alone verifies
        verify_bundle(sign_bundle(from_document(DOC), [key], 3), state.keys)


def test_a_raw_32_byte_key_file_is_still_read() -> None:
    key = generate_key()
    raw = key.public_key().public_bytes_raw()
    assert [key_id(k) for k in parse_keys(raw)] == [key_id(key)]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty: no key yet"),
        (b"not a key\n", "no PEM public key"),
        (b"PRIVATE", "no PEM public key"),
    ],
)
def test_a_file_without_a_key_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(KeyFileError, match=why):
        parse_keys(data)


def test_a_private_key_in_the_file_is_refused_without_showing_its_bytes() -> None:
    key = generate_key()
    secret = private_key_pem(key)
    with pytest.raises(KeyFileError) as info:
        parse_keys(public_key_pem(generate_key()) + secret)
    assert "block #2 is a PRIVATE KEY" in str(info.value)
    body = b"".join(secret.splitlines()[1:-1]).decode()
    assert body[:20] not in str(info.value)


def test_a_corrupt_block_refuses_the_whole_file() -> None:
    good = public_key_pem(generate_key())
    broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(KeyFileError, match="block #2"):
        parse_keys(good + broken)


def test_a_file_gone_bad_keeps_its_last_good_keys_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "keys.pem"
    a, b = generate_key(), generate_key()
    path.write_bytes(public_key_pem(a) + public_key_pem(b))
    state = TrustState([path])
    state.update(read_source(path))
    for bad in (b"garbage", b""):
        path.write_bytes(bad)
        state.update(read_source(path))
        assert state.key_ids == {key_id(a), key_id(b)}
        assert not state.waiting
        (source,) = state.document()["sources"]
        assert source["problem"].startswith(str(path)) and source["keyIds"]
    path.unlink()
    state.update(read_source(path))
    assert state.key_ids == {key_id(a), key_id(b)}
    assert "does not exist" in state.problems[path]
    # A good reading replaces the set: the end of a rotation drops the old key.
    path.write_bytes(public_key_pem(b))
    state.update(read_source(path))
    assert state.key_ids == {key_id(b)} and not state.problems


def test_no_key_yet_means_waiting_for_the_distributors_signing_key(tmp_path: Path) -> None:
    volume = tmp_path / "trusted"
    volume.mkdir()  # an optional ConfigMap that does not exist yet: an empty volume
    state = TrustState([volume])
    state.update(read_source(volume))
    doc = state.document()
    assert doc["waiting"] is True and doc["keyIds"] == []
    assert "waiting for the distributor's signing key" in doc["message"]
    assert doc["sources"][0]["problem"] == f"{volume}: no *.pem file yet"
    assert len(state.keys) == 0
    with pytest.raises(BundleError, match="no trusted keys"):
        verify_bundle(sign_bundle(from_document(DOC), [generate_key()], 1), state.keys)


async def test_a_kubelet_symlink_swap_is_seen_and_the_new_keys_applied(tmp_path: Path) -> None:
    volume = tmp_path / "trusted"
    volume.mkdir()
    applied: list[TrustedKeys] = []

    async def apply(keys: TrustedKeys) -> None:
        applied.append(keys)

    watcher = TrustWatcher([volume], poll_s=0)
    assert len(watcher.load()) == 0 and watcher.document()["waiting"]
    await watcher.start(apply)
    assert await watcher.check() is False and applied == []

    first = generate_key()
    kubelet_publish(volume, {"keys.pem": public_key_pem(first)})
    assert await watcher.check() is True
    assert applied[-1].key_ids == (key_id(first),)
    assert await watcher.check() is False, "an unchanged volume applies nothing"
    assert len(applied) == 1

    kubelet_publish(volume, {"keys.pem": b"-----BEGIN PUBLIC KEY-----\n"})
    assert await watcher.check() is False, "garbage keeps the last good key"
    doc = watcher.document()
    assert doc["keyIds"] == [key_id(first)] and not doc["waiting"]
    assert "no PEM public key" in doc["sources"][0]["problem"]

    second = generate_key()
    kubelet_publish(volume, {"keys.pem": public_key_pem(first) + public_key_pem(second)})
    assert await watcher.check() is True
    assert set(applied[-1].key_ids) == {key_id(first), key_id(second)}
    assert watcher.document()["sources"][0]["problem"] == ""
    await watcher.stop()


async def test_the_watch_polls_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "keys.pem"
    seen: list[TrustedKeys] = []

    async def apply(keys: TrustedKeys) -> None:
        seen.append(keys)

    watcher = TrustWatcher([path], poll_s=0.05)
    watcher.load()
    await watcher.start(apply)
    try:
        path.write_bytes(public_key_pem(generate_key()))
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen and len(seen[0]) == 1
    finally:
        await watcher.stop()
