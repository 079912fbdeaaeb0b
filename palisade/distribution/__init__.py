"""The distribution client library shared by the sidecar and the node agent.

Public surface::

    DistributionClient, ClientSettings, ActiveBundle   # the client (client.py)
    Status, State                                      # readiness state machine
    TrustedKeys                                        # re-exported from palisade.bundle
    AuditSpool                                         # audit waiting on disk
    ApprovalBook, call_digest                          # approvals bound to one call
    Backoff                                            # reconnect delays
"""

from palisade.bundle import TrustedKeys
from palisade.distribution.approvals import ApprovalBook, call_digest
from palisade.distribution.backoff import Backoff
from palisade.distribution.client import ActiveBundle, ClientSettings, DistributionClient
from palisade.distribution.spool import AuditSpool
from palisade.distribution.status import State, Status

__all__ = [
    "ActiveBundle",
    "ApprovalBook",
    "AuditSpool",
    "Backoff",
    "ClientSettings",
    "DistributionClient",
    "State",
    "Status",
    "TrustedKeys",
    "call_digest",
]
