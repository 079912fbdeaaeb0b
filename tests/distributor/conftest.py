"""Fixtures: keys, a policy directory, a shared store, and replicas that are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from palisade.distribution import TrustedKeys
from tests.distributor.helpers import Replica, bundle_yaml, start_replica, write_key


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.policy_dir = tmp / "policies"
        self.policy_dir.mkdir()
        (self.policy_dir / "payments.yaml").write_text(bundle_yaml())
        self.store = tmp / "distributor.db"
        self.key_path = tmp / "signing.pem"
        self.key: Ed25519PrivateKey = write_key(self.key_path)
        self.trusted = TrustedKeys([self.key.public_key()])
        self.replicas: list[Replica] = []

    def start(self, name: str, **kw: object) -> Replica:
        kw.setdefault("policy_dir", self.policy_dir)
        kw.setdefault("store", self.store)
        kw.setdefault("keys", [self.key_path])
        replica = start_replica(self.tmp, name, **kw)  # type: ignore[arg-type]
        self.replicas.append(replica)
        return replica

    def write_policy(self, text: str, name: str = "payments.yaml") -> None:
        path = self.policy_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def close(self) -> None:
        for r in self.replicas:
            r.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()
