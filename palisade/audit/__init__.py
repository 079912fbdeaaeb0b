"""Audit records: redaction, hash chain, Ed25519 signatures, rotating files, verification."""
