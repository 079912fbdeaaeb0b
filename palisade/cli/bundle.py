"""``palisade bundle lint|test|decide|sign|verify``: policy bundles on files.

Exit codes: 0 fine, 1 the bundle is wrong (lint errors, failing tests, bad
signature), 2 the command was used wrongly (missing key file, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from palisade.bundle import (
    BundleError,
    BundleValidationError,
    TrustedKeys,
    from_bytes,
    load_file,
    load_private_key,
    sign_bundle,
    to_bytes,
    verify_bundle,
)
from palisade.bundle.canonical import bundle_digest
from palisade.bundle.codes import DESCRIPTIONS, Code
from palisade.bundle.lint import lint_warnings
from palisade.cli.output import Column, add_output_flag, emit


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _lint_one(path: str) -> dict[str, Any]:
    """One file's lint result as a document: errors, warnings, and what it holds."""
    doc: dict[str, Any] = {"file": path, "errors": [], "warnings": []}
    try:
        bundle = load_file(path)
    except BundleValidationError as exc:
        doc["errors"] = [i.as_dict() for i in exc.issues]
        doc["text"] = [str(i) for i in exc.issues]
        return doc
    warnings = lint_warnings(bundle)
    doc["warnings"] = [w.as_dict() for w in warnings]
    doc["text"] = [f"{path}: {w}" for w in warnings]
    doc.update(
        name=bundle.name,
        digest=bundle_digest(bundle),
        rules=len(bundle.rules),
        servers=len(bundle.servers),
        agents=len(bundle.agents),
        tests=len(bundle.tests),
    )
    return doc


def cmd_lint(ns: argparse.Namespace) -> int:
    results = [_lint_one(str(path)) for path in ns.files]
    bad = sum(1 for r in results if r["errors"] or (ns.strict and r["warnings"]))
    if ns.output in ("json", "yaml"):
        for r in results:
            r.pop("text")
        emit(ns.output, {"files": results, "ok": not bad})
        return 1 if bad else 0
    for r in results:
        problems = [*r["errors"], *r["warnings"]]
        for line, problem in zip(r.pop("text"), problems, strict=True):
            print(line)
            if ns.output == "wide":
                print(f"    {problem['code']}: {DESCRIPTIONS[Code(problem['code'])]}")
        if not r["errors"] and not ns.quiet and not (ns.strict and r["warnings"]):
            print(
                f"{r['file']}: ok ({r['rules']} rules, {r['servers']} servers,"
                f" {r['agents']} agents, {r['tests']} tests) {r['digest']}"
            )
    return 1 if bad else 0


TEST_COLUMNS = (
    Column("RESULT", "result", style=lambda v: "green" if v == "PASS" else "red"),
    Column("TEST", "test"),
    Column("OUTCOME", "outcome"),
    Column("RULE", "rule"),
    Column("PROBLEM", "problem"),
)


def cmd_test(ns: argparse.Namespace) -> int:
    from palisade.policy.bundletests import run_tests

    try:
        bundle = load_file(ns.file)
    except BundleValidationError as exc:
        if ns.output in ("json", "yaml"):
            emit(ns.output, {"file": str(ns.file), "errors": [i.as_dict() for i in exc.issues]})
        else:
            for issue in exc.issues:
                print(issue)
        return 1
    results = run_tests(bundle)
    rows = [
        {
            "result": "PASS" if r.passed else "FAIL",
            "test": r.test.name,
            "passed": r.passed,
            "outcome": r.outcome,
            "rule": r.rule,
            "problem": r.problem,
        }
        for r in results
    ]
    failed = sum(1 for r in results if not r.passed)
    doc = {
        "file": str(ns.file),
        "bundle": bundle.name,
        "passed": len(results) - failed,
        "failed": failed,
        "results": rows,
    }
    emit(ns.output, doc, rows=rows, columns=TEST_COLUMNS, title=f"{ns.file}: {bundle.name}")
    if ns.output not in ("json", "yaml"):
        print(f"{len(results) - failed} passed, {failed} failed")
        if not results:
            print("the bundle has no tests (spec.tests)")
    return 1 if failed else 0


def cmd_sign(ns: argparse.Namespace) -> int:
    try:
        keys = [load_private_key(k) for k in ns.key]
    except (OSError, BundleError) as exc:
        _err(f"palisade bundle sign: cannot load signing key: {exc}")
        return 2
    try:
        bundle = load_file(ns.file)
    except BundleValidationError as exc:
        for issue in exc.issues:
            print(issue)
        return 1
    signed = sign_bundle(bundle, keys, ns.revision)
    Path(ns.out).write_bytes(to_bytes(signed))
    kids = ", ".join(s.key_id for s in signed.signatures)
    print(f"{ns.out}: revision {signed.revision} {signed.digest} signed by {kids}")
    return 0


def cmd_verify(ns: argparse.Namespace) -> int:
    if ns.file is None:
        # `--trusted A.pub B.pub SIGNED`: the greedy list took the signed file too.
        if len(ns.trusted) < 2:
            _err("palisade bundle verify: name the SIGNED bundle file")
            return 2
        ns.file = ns.trusted.pop()
    try:
        trusted = TrustedKeys.from_files(ns.trusted)
    except (OSError, BundleError, ValueError) as exc:
        _err(f"palisade bundle verify: cannot load trusted key: {exc}")
        return 2
    try:
        data = Path(ns.file).read_bytes()
    except OSError as exc:
        _err(f"palisade bundle verify: {exc}")
        return 2
    try:
        verified = verify_bundle(from_bytes(data), trusted)
    except BundleError as exc:
        print(f"{ns.file}: NOT VERIFIED: {exc}")
        return 1
    print(
        f"{ns.file}: verified: bundle {verified.bundle.name!r} revision {verified.revision}"
        f" {verified.digest} signed by {', '.join(verified.key_ids)}"
    )
    return 0


def cmd_decide(ns: argparse.Namespace) -> int:
    import json

    from palisade.policy.engine import compile_bundle
    from palisade.policy.types import Call, Risk

    try:
        arguments = json.loads(ns.args) if ns.args else {}
    except json.JSONDecodeError as exc:
        _err(f"palisade bundle decide: --args is not JSON: {exc}")
        return 2
    if not isinstance(arguments, dict):
        _err("palisade bundle decide: --args must be a JSON object")
        return 2
    labels: dict[str, str] = {}
    for item in ns.label or []:
        key, sep, value = item.partition("=")
        if not sep:
            _err(f"palisade bundle decide: --label {item!r} is not KEY=VALUE")
            return 2
        labels[key] = value
    try:
        bundle = load_file(ns.file)
    except BundleValidationError as exc:
        for issue in exc.issues:
            print(issue)
        return 1
    call = Call(
        agent=ns.agent,
        server=ns.server,
        tool=ns.tool,
        arguments=arguments,
        session=ns.session,
        server_version=ns.server_version,
        on_behalf_of=ns.on_behalf_of,
        labels=labels,
        server_declared_risk=Risk(ns.declared_risk) if ns.declared_risk else None,
    )
    verdict = compile_bundle(bundle).decide(call, dry_run=True, explain=True)
    fails = verdict.decision.value in (ns.fail_on or [])
    if ns.output in ("json", "yaml"):
        from palisade.cli.output import emit

        emit(ns.output, _verdict_doc(verdict))
        return 1 if fails else 0
    print(f"decision: {verdict.decision.value}")
    print(f"rule:     {verdict.rule_id}")
    print(f"reason:   {verdict.reason}")
    if verdict.approval_id:
        print(f"approval: {verdict.approval_id}")
    for w in verdict.would_be:
        print(f"would be: {w.decision.value} by {w.rule_id} (mode audit): {w.reason}")
    for t in verdict.explanation:
        print(f"  {'MATCH' if t.matched else 'skip '} {t.rule_id}: {t.detail}")
    return 1 if fails else 0


def _verdict_doc(verdict: Any) -> dict[str, Any]:
    return {
        "decision": verdict.decision.value,
        "rule": verdict.rule_id,
        "reason": verdict.reason,
        "bundleRevision": verdict.bundle_revision,
        "bundleDigest": verdict.bundle_digest,
        "approvalId": verdict.approval_id,
        "wouldBe": [
            {"rule": w.rule_id, "decision": w.decision.value, "reason": w.reason}
            for w in verdict.would_be
        ],
        "explanation": [
            {"rule": t.rule_id, "matched": t.matched, "detail": t.detail}
            for t in verdict.explanation
        ],
    }


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")

    p = sub.add_parser("lint", help="check bundle files; errors as file:line:col: field: message")
    p.add_argument("files", nargs="+", metavar="FILE", help="bundle file or directory")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and warnings")
    p.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    add_output_flag(p)
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("test", help="run the tests inside a bundle")
    p.add_argument("file", metavar="FILE")
    add_output_flag(p)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("decide", help="decide one call with a bundle and explain (dry run)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--agent", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="", help="arguments as a JSON object")
    p.add_argument("--session", default="cli")
    p.add_argument("--server-version", default="")
    p.add_argument("--on-behalf-of", default="")
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p.add_argument(
        "--declared-risk", choices=["read", "write", "destructive", "admin"], default=None
    )
    p.add_argument(
        "--fail-on",
        action="append",
        choices=["deny", "require_approval", "throttle", "allow"],
        metavar="DECISION",
        help="exit 1 when the decision is this one (repeatable): deny, require_approval,"
        " throttle or allow",
    )
    add_output_flag(p)
    p.set_defaults(func=cmd_decide)

    from palisade.cli.replay import add_parser as add_replay_parser

    add_replay_parser(sub)

    p = sub.add_parser("sign", help="write a signed palisade.v1.SignedBundle")
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--key", action="append", required=True, help="Ed25519 private key PEM (repeatable)"
    )
    p.add_argument("--revision", type=int, default=1, help="monotonic revision (default 1)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the signed bundle")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("verify", help="verify a signed bundle against trusted public keys")
    p.add_argument("file", metavar="SIGNED", nargs="?")
    p.add_argument(
        "--trusted",
        nargs="+",
        action="extend",
        required=True,
        metavar="PUBKEY",
        help="trusted public key PEMs (repeatable; `--trusted A B SIGNED` also works)",
    )
    p.set_defaults(func=cmd_verify)

    from palisade.cli.fleet import add_rollback_parser  # talks to the distributor

    add_rollback_parser(sub)
