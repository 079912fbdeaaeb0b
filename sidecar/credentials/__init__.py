"""The upstream credential the sidecar sends in place of the client's: one family.

The client's ``Authorization`` (and ``Proxy-Authorization``) header is *always*
removed before a request goes upstream; when the upstream needs a credential of
its own, one :class:`CredentialSource` supplies it (``--upstream-credential``):

=========================  ===============================  ==========================
source                     module                           what the upstream gets
=========================  ===============================  ==========================
:class:`NoCredential`      :mod:`.base`                     nothing
:class:`FileCredential`    :mod:`.file`                     a mounted Secret's value
``VaultCredential``        :mod:`.vault` (hvac, imported    one field of a Vault /
                           only when used)                  OpenBao KV v2 secret
``KubeTokenCredential``    :mod:`.kube_token`               a short-lived TokenRequest
                                                            token of the *calling
                                                            agent's* ServiceAccount
=========================  ===============================  ==========================

All of them fail closed with :class:`CredentialUnavailable`: the call is refused,
not forwarded without the credential. A source that depends on the caller reads
it from :mod:`.caller`, which the authenticator binds for every request.

``sidecar.credentials_vault`` is the old name of :mod:`.vault` (the same module).
docs/credentials.md describes every source.
"""

from sidecar.credentials.base import (
    CLIENT_CREDENTIAL_HEADERS,
    MAX_CREDENTIAL_BYTES,
    CredentialSource,
    CredentialUnavailable,
    NoCredential,
    strip_client_credentials,
    upstream_headers,
)
from sidecar.credentials.file import FileCredential

__all__ = [
    "CLIENT_CREDENTIAL_HEADERS",
    "MAX_CREDENTIAL_BYTES",
    "CredentialSource",
    "CredentialUnavailable",
    "FileCredential",
    "NoCredential",
    "strip_client_credentials",
    "upstream_headers",
]
