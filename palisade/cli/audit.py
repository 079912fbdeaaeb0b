"""``palisade audit``: verify signed audit logs, generate audit signing keys.

  palisade audit verify FILE|DIR... [--trusted KEY]... [--expect-head HASH] [--partial]
  palisade audit verify --distributor URL [--source S]... [--token-file F] [--partial]
  palisade audit show FILE|DIR... [--agent A] [--tool T] [--decision D] [--session S]
      [--last N] [-o table|wide|json|yaml|jsonl]
  palisade audit query ...   (the distributor's store: palisade/cli/audit_query.py)
  palisade audit keygen --out PATH [-o ...]

Every command takes ``-o``. ``verify`` prints, by default, its report: one line
per problem (``file:line (seq N): what``) and one per chain (``OK ...`` or
``FAILED ...``); ``-o wide`` adds each chain's signing key ids; ``-o json|yaml``
is one document ``{"ok", "chains": [...]}`` with the same facts. ``show -o
json`` is one JSON list; ``-o jsonl`` one record per line (``--json``, the older
flag, means ``-o jsonl``).

``verify`` exits 0 when every chain is intact, 1 with one line per problem
(``file:line (seq N): what``) otherwise, 2 on bad usage. A directory stands
for the audit files in it (``*.jsonl`` and their rotated ``.NNNNNN``
siblings); each ``x.jsonl`` with its siblings is one chain, verified alone.
Without ``--trusted``, signatures are checked against the keys named in the
records, which proves integrity but not authorship.

With ``--distributor`` the central copy is verified instead: every chain the
distributor stores (``GET /v1/audit/chains``, with the admin token), each
against the keys registered for its source (``/v1/audit/keys``), its records as
the writer wrote them (``/v1/audit/chain``). This works after the client that
wrote them is gone: the distributor keeps records and keys.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import deque
from pathlib import Path
from typing import Any

from palisade.audit import AuditKeyError, Signer, load_public_key, verify_files
from palisade.audit import keys as keys_mod
from palisade.audit.verify import Finding, Result, order_files, verify_records
from palisade.cli.output import Column, add_output_flag, emit
from palisade.distribution.api import ApiError, FleetApi

_AUDIT_NAME = re.compile(r".*\.jsonl(\.\d+)?$")
_ROTATED = re.compile(r"\.\d+$")


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if _AUDIT_NAME.match(f.name)))
        else:
            out.append(p)
    return out


def _chains(files: list[Path]) -> dict[Path, list[Path]]:
    """Files grouped by chain: ``x.jsonl`` and its rotated ``x.jsonl.NNNNNN`` siblings."""
    groups: dict[Path, list[Path]] = {}
    for f in files:
        base = f.with_name(_ROTATED.sub("", f.name))
        groups.setdefault(base, []).append(f)
    return groups


def _central(ns: argparse.Namespace, page: int = 1000) -> int:
    """Verify the distributor's copy: each chain against its source's registered keys."""
    token = os.environ.get("PALISADE_ADMIN_TOKEN", "")
    if ns.token_file:
        token = Path(ns.token_file).read_text().strip()
    api = FleetApi(ns.distributor, token)
    try:
        chains = api.request("GET", "/v1/audit/chains")["chains"]
        wanted = set(ns.source)
        chains = [c for c in chains if not wanted or c["source"] in wanted]
        if not chains:
            print("palisade audit verify: the distributor holds no such chain", file=sys.stderr)
            return 1
        report = _Report(ns.output)
        for c in chains:
            source, chain = str(c["source"]), int(c["chain"])
            keys = api.request("GET", "/v1/audit/keys", source=source)["keys"]
            trusted = [keys_mod.public_key_from_id(k["key_id"]) for k in keys]
            records: list[dict[str, Any]] = []
            after = 0
            while True:
                got = api.request(
                    "GET", "/v1/audit/chain", source=source, chain=chain, after=after, limit=page
                )["records"]
                records.extend(got)
                if len(got) < page:
                    break
                after = int(got[-1]["seq"])
            name = f"{ns.distributor.rstrip('/')}/{source}#{chain}"
            result = verify_records(
                records,
                name=name,
                trusted=trusted,
                allow_partial_start=ns.partial,
            )
            if not trusted:
                result.findings.append(
                    Finding(name, 0, None, "no audit key is registered for this source")
                )
            report.add(name, result, detail=f"{len(trusted)} registered key(s)")
    except ApiError as exc:
        print(f"palisade audit verify: {exc}", file=sys.stderr)
        return 1
    return report.finish()


def _verify(ns: argparse.Namespace) -> int:
    if ns.distributor:
        if ns.files or ns.trusted or ns.expect_head:
            print(
                "palisade audit verify: --distributor verifies the central copy against the"
                " registered keys; give no FILE, --trusted or --expect-head with it",
                file=sys.stderr,
            )
            return 2
        return _central(ns)
    if not ns.files:
        print("palisade audit verify: give FILE|DIR... or --distributor URL", file=sys.stderr)
        return 2
    try:
        trusted = [load_public_key(k) for k in ns.trusted]
    except (AuditKeyError, OSError) as exc:
        print(f"palisade audit verify: {exc}", file=sys.stderr)
        return 2
    files = _expand(ns.files)
    if not files:
        print("palisade audit verify: no audit files found", file=sys.stderr)
        return 2
    chains = _chains(files)
    if ns.expect_head and len(chains) > 1:
        print("palisade audit verify: --expect-head needs the files of one chain", file=sys.stderr)
        return 2
    report = _Report(ns.output)
    for base, group in chains.items():
        result = verify_files(
            group, trusted=trusted, allow_partial_start=ns.partial, expect_head=ns.expect_head
        )
        report.add(str(base), result, detail=f"{len(group)} file(s)", files=[str(f) for f in group])
    note = ""
    if not trusted:
        note = (
            "signatures were checked against the keys named in the records; "
            "pass --trusted KEY to pin the signer"
        )
    return report.finish(note)


class _Report:
    """``verify``'s findings: printed as they come (table, wide), or one document at the end."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.chains: list[dict[str, Any]] = []

    def add(
        self, name: str, result: Result, *, detail: str, files: list[str] | None = None
    ) -> None:
        entry: dict[str, Any] = {
            "chain": name,
            "ok": result.ok,
            "records": result.records,
            "firstSeq": result.first_seq,
            "lastSeq": result.last_seq,
            "head": result.head,
            "keyIds": sorted(result.key_ids),
            "problems": [
                {"file": f.file, "line": f.line, "seq": f.seq, "message": f.message}
                for f in result.findings
            ],
        }
        if files is not None:
            entry["files"] = files
        self.chains.append(entry)
        if self.fmt not in ("table", "wide"):
            return
        for finding in result.findings:
            print(finding)
        if not result.ok:
            print(f"FAILED {name}: {len(result.findings)} problem(s) in {result.records} record(s)")
        else:
            print(
                f"OK {name}: {result.records} record(s), seq {result.first_seq}..{result.last_seq},"
                f" {detail}, head {result.head}"
            )
        if self.fmt == "wide":
            print(f"   signed by: {', '.join(entry['keyIds']) or '-'}")

    def finish(self, note: str = "") -> int:
        ok = all(c["ok"] for c in self.chains)
        if self.fmt in ("json", "yaml"):
            doc: dict[str, Any] = {"ok": ok, "chains": self.chains}
            if note:
                doc["note"] = note
            emit(self.fmt, doc)
        elif note and ok:
            print(f"note: {note}")
        return 0 if ok else 1


def _matches(record: dict[str, Any], ns: argparse.Namespace) -> bool:
    return all(
        not want or str(record.get(name, "")) == want
        for name, want in (
            ("agent", ns.agent),
            ("tool", ns.tool),
            ("decision", ns.decision),
            ("session", ns.session),
        )
    )


def _show(ns: argparse.Namespace) -> int:
    files = order_files(_expand(ns.files))
    if not files:
        print("palisade audit show: no audit files found", file=sys.stderr)
        return 2
    selected: deque[dict[str, Any]] = deque(maxlen=ns.last or None)
    for path in files:
        with path.open("rb") as f:
            for raw in f:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # `verify` is the tool that reports bad lines
                if isinstance(record, dict) and _matches(record, ns):
                    selected.append(record)
    fmt = "jsonl" if ns.json else ns.output
    rows = list(selected)
    emit(fmt, rows, columns=SHOW_COLUMNS, title=f"{len(rows)} audit record(s)")
    return 0


SHOW_COLUMNS = (
    Column("SEQ", "seq"),
    Column("TIME", "time"),
    Column("AGENT", "agent"),
    Column("TOOL", "tool"),
    Column("DECISION", "decision"),
    Column("RULE", "rule_id"),
    Column("REASON", "reason"),
    Column("KIND", "kind", wide=True),
    Column("SERVER", "server", wide=True),
    Column("SESSION", "session", wide=True),
    Column("TENANT", "tenant", wide=True),
    Column("REVISION", "bundle_revision", wide=True),
    Column("HASH", "hash", wide=True),
)


def _keygen(ns: argparse.Namespace) -> int:
    out = Path(ns.out)
    if out.exists() and not ns.force:
        print(f"palisade audit keygen: {out} exists (use --force)", file=sys.stderr)
        return 2
    signer = Signer.generate()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_bytes(signer.private_pem())
    pub = out.with_name(out.name + ".pub")
    pub.write_bytes(signer.public_pem())
    if ns.output in ("json", "yaml"):
        emit(ns.output, {"keyId": signer.key_id, "private": str(out), "public": str(pub)})
    else:
        print(f"wrote {out} (private) and {pub}; key id {signer.key_id}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    v = sub.add_parser("verify", help="verify the hash chain and signatures of audit files")
    v.add_argument("files", nargs="*", metavar="FILE", help="audit files or directories")
    v.add_argument(
        "--distributor",
        default="",
        metavar="URL",
        help="verify the distributor's central copy (its HTTP API) instead of files",
    )
    v.add_argument(
        "--source", action="append", default=[], help="with --distributor: only this source"
    )
    v.add_argument(
        "--token-file", default="", help="admin bearer token file (else env PALISADE_ADMIN_TOKEN)"
    )
    v.add_argument(
        "--trusted",
        action="append",
        default=[],
        metavar="KEY",
        help="trusted public key: PEM file or key id (ed25519:...); repeatable",
    )
    v.add_argument("--expect-head", default="", metavar="HASH", help="hash the chain must end at")
    v.add_argument(
        "--partial", action="store_true", help="accept a chain that does not start at seq 1"
    )
    add_output_flag(v)
    v.set_defaults(func=_verify)
    from palisade.cli.audit_query import add_query_parser  # the distributor's audit store

    add_query_parser(sub)
    q = sub.add_parser("show", help="list audit records, filtered (no verification)")
    q.add_argument("files", nargs="+", metavar="FILE", help="audit files or directories")
    q.add_argument("--agent", default="")
    q.add_argument("--tool", default="")
    q.add_argument("--decision", default="", help="allow, deny, require_approval or throttle")
    q.add_argument("--session", default="")
    q.add_argument("--last", type=int, default=0, metavar="N", help="only the last N matches")
    add_output_flag(q, extra=("jsonl",))
    q.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # = -o jsonl
    q.set_defaults(func=_show)
    k = sub.add_parser("keygen", help="generate an Ed25519 audit signing key (PKCS#8 PEM)")
    k.add_argument("--out", required=True, help="private key path; the public key gets .pub")
    k.add_argument("--force", action="store_true", help="overwrite an existing key")
    add_output_flag(k)
    k.set_defaults(func=_keygen)
