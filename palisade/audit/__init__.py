"""Audit records: redaction, hash chain, Ed25519 signatures, rotating files, verification.

Public surface:
  * :class:`Entry`: what a caller knows about a decision.
  * :class:`AuditWriter`: seals entries into a signed hash chain on local disk
    (rotation, restart, shipping cursor); :class:`AuditError` when it cannot.
  * :class:`Signer`, :func:`load_signer`, :func:`load_public_key`: Ed25519 keys.
  * :class:`Redactor`: secret-marked fields out of arguments.
  * :func:`verify_files` -> :class:`Result` of :class:`Finding`: checks a chain.
  * :func:`to_proto`: a record as ``palisade.v1.AuditRecord`` for shipping.
"""

from palisade.audit.canonical import CanonicalError, digest
from palisade.audit.keys import AuditKeyError, Signer, load_public_key, load_signer
from palisade.audit.proto import to_proto
from palisade.audit.record import Entry
from palisade.audit.redact import REDACTED, Redactor
from palisade.audit.verify import Finding, Result, verify_files
from palisade.audit.writer import AuditError, AuditWriter, FsyncPolicy

__all__ = [
    "REDACTED",
    "AuditError",
    "AuditKeyError",
    "AuditWriter",
    "CanonicalError",
    "Entry",
    "Finding",
    "FsyncPolicy",
    "Redactor",
    "Result",
    "Signer",
    "digest",
    "load_public_key",
    "load_signer",
    "to_proto",
    "verify_files",
]
