"""The JSON Schema for bundle files agrees with the validator, and the files are fresh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from palisade.bundle import BundleValidationError
from palisade.bundle.openapi import (
    CRD_CHART_FILE,
    CRD_PATH,
    FIELDS,
    JSON_SCHEMA_PATH,
    crd,
    generated_files,
)
from palisade.bundle.validate import build_bundle
from palisade.bundle.yamlpos import Positions
from tests.crd.corpus import INVALID, ROOT, Invalid, accepted_documents, base, edge

SCHEMA: dict[str, Any] = json.loads((ROOT / JSON_SCHEMA_PATH).read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
ACCEPTED = [*accepted_documents(), edge(), ("tests/crd/corpus.py:BASE", base())]


def test_the_schema_is_itself_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_corpus_holds_the_repositorys_bundles() -> None:
    wheres = {w.split(":")[0].split("#")[0] for w, _ in ACCEPTED}
    assert "examples/payments-bundle.yaml" in wheres
    assert "docs/bundle-format.md" in wheres
    assert len(ACCEPTED) >= 15, wheres


@pytest.mark.parametrize(("where", "doc"), ACCEPTED, ids=[w for w, _ in ACCEPTED])
def test_every_bundle_the_validator_accepts_the_json_schema_accepts(
    where: str, doc: dict[str, Any]
) -> None:
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)
    ]
    assert errors == []


def test_the_hand_made_bundles_are_valid() -> None:
    build_bundle(base(), Positions("base.yaml", {}))
    build_bundle(edge()[1], Positions("edge.yaml", {}))


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_a_broken_bundle_is_refused_by_both(case: Invalid) -> None:
    doc = case.document()
    with pytest.raises(BundleValidationError) as info:
        build_bundle(doc, Positions("broken.yaml", {}))
    fields = [i.field for i in info.value.issues]
    assert any(f.startswith(case.field) for f in fields), fields
    assert list(VALIDATOR.iter_errors(doc)), "the JSON Schema accepted it"


def test_the_generated_files_are_fresh() -> None:
    for path, text in generated_files().items():
        assert (ROOT / path).read_text() == text, f"{path} is stale: run scripts/gen-schemas"
    assert (ROOT / CRD_CHART_FILE).read_text() == (ROOT / CRD_PATH).read_text()


def test_gen_schemas_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    # A copy of the repository's generated files, one of them edited.
    script = ROOT / "scripts/gen-schemas"
    ok = subprocess.run([script, "--check"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    target = ROOT / JSON_SCHEMA_PATH
    original = target.read_text()
    try:
        target.write_text(original.replace('"description"', '"descriptio"', 1))
        stale = subprocess.run([script, "--check"], capture_output=True, text=True, check=False)
    finally:
        target.write_text(original)
    assert stale.returncode == 1
    assert JSON_SCHEMA_PATH in stale.stderr


def test_every_spec_field_has_a_description_for_kubectl_explain() -> None:
    def walk(node: dict[str, Any], path: str) -> list[str]:
        missing = [] if node.get("description") or path.endswith("]") else [path]
        for key, child in (node.get("properties") or {}).items():
            missing += walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict) and node["items"].get("type") == "object":
            missing += walk(node["items"], f"{path}[]")
        return missing

    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert walk(spec, "spec") == []
    assert "mode" in FIELDS["Rule"]
