"""Policy bundles: the YAML format, parsing with positions, validation, canonical form, signing.

Public surface (see docs/bundle-format.md, "Python API")::

    load_file(path) / load_dir(path) / load_bytes(data, source) -> Bundle
    to_document(bundle), from_document(doc), canonical_bytes(bundle), bundle_digest(bundle)
    sign_bundle(bundle, keys, revision) -> palisade.v1.SignedBundle
    verify_bundle(signed, TrustedKeys) -> VerifiedBundle
    BundleError > BundleValidationError, BundleVerificationError
"""

from palisade.bundle.canonical import (
    bundle_digest,
    canonical_bytes,
    canonical_json,
    digest_of,
    from_document,
    to_document,
)
from palisade.bundle.errors import (
    BundleError,
    BundleValidationError,
    BundleVerificationError,
    Issue,
    Position,
)
from palisade.bundle.load import load_bytes, load_dir, load_file, load_files
from palisade.bundle.schema import (
    API_VERSION,
    KIND,
    Agent,
    Budgets,
    Bundle,
    BundleTest,
    FailureMode,
    GpuQuota,
    Identity,
    Match,
    RateLimit,
    Rule,
    Server,
    SpendCap,
    Tenant,
    Tool,
)
from palisade.bundle.signing import (
    TrustedKeys,
    VerifiedBundle,
    from_bytes,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign_bundle,
    sign_document,
    signing_payload,
    to_bytes,
    verify_bundle,
    verify_envelope,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "Agent",
    "Budgets",
    "Bundle",
    "BundleError",
    "BundleTest",
    "BundleValidationError",
    "BundleVerificationError",
    "FailureMode",
    "GpuQuota",
    "Identity",
    "Issue",
    "Match",
    "Position",
    "RateLimit",
    "Rule",
    "Server",
    "SpendCap",
    "Tenant",
    "Tool",
    "TrustedKeys",
    "VerifiedBundle",
    "bundle_digest",
    "canonical_bytes",
    "canonical_json",
    "digest_of",
    "from_bytes",
    "from_document",
    "generate_key",
    "key_id",
    "load_bytes",
    "load_dir",
    "load_file",
    "load_files",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "sign_bundle",
    "sign_document",
    "signing_payload",
    "to_bytes",
    "to_document",
    "verify_bundle",
    "verify_envelope",
]
