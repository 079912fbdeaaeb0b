"""Bundle intake in process: what is activated, what is refused, what is kept on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from palisade.bundle.load import load_file
from palisade.bundle.signing import TrustedKeys, generate_key, sign_bundle, to_bytes
from palisade.policy.types import Call, Decision
from sidecar.intake import BundleIntake
from sidecar.policy import PolicyHolder, PolicySnapshot

from .conftest import BUNDLE, SERVER


def read_call() -> Call:
    return Call(agent="busy-agent", server=SERVER, tool="pods_list", server_version="1.4.2")


class Harness:
    def __init__(self, path: Path, state: Path, **kw: object) -> None:
        self.holder = PolicyHolder()
        self.activated: list[PolicySnapshot] = []
        self.errors: list[str] = []

        def activate(snap: PolicySnapshot) -> None:
            self.activated.append(snap)
            self.holder.activate(snap)

        self.intake = BundleIntake(
            path,
            server_name=SERVER,
            activate=activate,
            state_dir=state,
            on_error=self.errors.append,
            **kw,  # type: ignore[arg-type]
        )


def test_neither_keys_nor_explicit_unsigned_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="explicitly"):
        BundleIntake(tmp_path, server_name=SERVER, activate=lambda s: None)


def test_an_unchanged_file_is_not_activated_twice(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text(BUNDLE.read_text())
    h = Harness(f, tmp_path / "state", allow_unsigned=True)
    assert h.intake.start()
    assert not h.intake.poll()
    f.write_text(BUNDLE.read_text() + "\n# a comment only\n")
    h.intake.poll()
    assert [s.revision for s in h.activated] == [1]  # same canonical digest: nothing new


def test_budgets_survive_a_new_revision(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text(BUNDLE.read_text())
    h = Harness(f, tmp_path / "state", allow_unsigned=True)
    h.intake.start()
    assert [h.holder.decide(read_call()).decision for _ in range(2)] == [Decision.ALLOW] * 2
    f.write_text(BUNDLE.read_text().replace("reads are allowed for payments", "reads, v2"))
    assert h.intake.poll()
    assert h.holder.snapshot is not None and h.holder.snapshot.revision == 2
    # busy-agent's burst of 2 was spent under revision 1; revision 2 does not refill it
    assert h.holder.decide(read_call()).decision is Decision.THROTTLE


def test_a_signed_bundle_older_than_the_active_one_is_refused(tmp_path: Path) -> None:
    key = generate_key()
    d = tmp_path / "signed"
    d.mkdir()
    bundle = load_file(BUNDLE)
    (d / "b.signed").write_bytes(to_bytes(sign_bundle(bundle, [key], 5)))
    h = Harness(d, tmp_path / "state", trusted=TrustedKeys([key.public_key()]))
    assert h.intake.start()
    (d / "b.signed").write_bytes(to_bytes(sign_bundle(bundle, [key], 4)))
    assert not h.intake.poll()
    assert "older" in h.errors[-1]
    assert h.intake.active_revision == 5
    assert (tmp_path / "state" / "last-good.signed").is_file()


def test_two_signed_bundles_in_one_directory_are_ambiguous(tmp_path: Path) -> None:
    key = generate_key()
    d = tmp_path / "signed"
    d.mkdir()
    for n in (1, 2):
        (d / f"b{n}.signed").write_bytes(to_bytes(sign_bundle(load_file(BUNDLE), [key], n)))
    h = Harness(d, tmp_path / "state", trusted=TrustedKeys([key.public_key()]))
    assert not h.intake.start()
    assert "more than one" in h.errors[-1]
    assert h.holder.decide(read_call()).decision is Decision.DENY  # fail closed


def test_a_missing_path_with_no_last_good_leaves_every_call_denied(tmp_path: Path) -> None:
    h = Harness(tmp_path / "nowhere.yaml", tmp_path / "state", allow_unsigned=True)
    assert not h.intake.start()
    verdict = h.holder.decide(read_call())
    assert verdict.decision is Decision.DENY and verdict.rule_id == "no-bundle"
