"""``palisade keys generate --out DIR [-o json|yaml]``: a fresh Ed25519 key pair for signing.

Writes ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub`` (PEM) and
prints the key id; never prints the private key. Refuses to overwrite.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from palisade.bundle.signing import generate_key, key_id, private_key_pem, public_key_pem
from palisade.cli.output import add_output_flag, emit


def cmd_generate(ns: argparse.Namespace) -> int:
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{ns.name}.key"
    public_path = out / f"{ns.name}.pub"
    for p in (private_path, public_path):
        if p.exists():
            print(f"palisade keys generate: {p} exists; not overwriting", file=sys.stderr)
            return 2
    key = generate_key()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    public_path.write_bytes(public_key_pem(key))
    if ns.output in ("json", "yaml"):
        doc = {"keyId": key_id(key), "private": str(private_path), "public": str(public_path)}
        emit(ns.output, doc)
    else:
        print(f"key id {key_id(key)}: private {private_path}, public {public_path}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("generate", help="generate an Ed25519 key pair")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the key files")
    p.add_argument("--name", default="bundle-signing", help="file name stem (default: %(default)s)")
    add_output_flag(p)
    p.set_defaults(func=cmd_generate)
