"""The sidecar in the fleet: bundles pushed by the distributor, audit shipped to it, approvals.

With ``--distributor`` the sidecar opens the shared
:class:`palisade.distribution.DistributionClient` (the one the node agent uses)
and this package wires it in. Four parts, one module each, plus a public
surface pinned by ``tests/sidecar/fleet/test_fleet_parts.py``:

- ``identity``: :func:`identity_of` (pure): who this sidecar says it is in its ``Hello``
  (kind sidecar, client id, pod, namespace, node, tenant, MCP server);
- ``link`` (:class:`SidecarFleet`, the background tasks): the client verifies a
  push with the trusted keys and calls :meth:`SidecarFleet.activate`, which hands
  it to the *same* :class:`~sidecar.intake.BundleIntake` path a bundle file takes
  (compile, refuse an older revision, atomic swap, last good on disk); an
  exception there NACKs and the previous bundle keeps enforcing;
- ``audit``: :class:`ShippingWriter` is the core's :class:`~palisade.audit.AuditWriter`
  that also hands each written record to :class:`AuditShipper`, which moves
  records, in chain order, into the client's on-disk spool and advances the
  writer's shipping cursor; the client ships the spool and drops it only once the
  distributor stored it. Records the tap missed (written before a restart, or
  while the spool was full) are read back from the audit log itself, so the
  cursor never skips a record;
- ``approvals``: :class:`Approvals` settles ``require_approval`` verdicts (the
  proxy's :class:`~sidecar.core.ApprovalDesk`): an unexpired human approval of
  this exact call (same agent, server, tool, arguments digest, session) lets it
  through once; a human's denial is answered as a denial for
  ``denial_window_s``; otherwise an ``ApprovalRequest`` is queued and sent over
  the stream (again after every reconnect; the distributor stores it once).

Nothing here raises into the proxy: a distributor that is down leaves calls
decided by the active bundle, audited on disk, and delivered on its return.
"""

from sidecar.fleet.approvals import Approvals, check_request_of
from sidecar.fleet.audit import AuditShipper, ShippingWriter
from sidecar.fleet.identity import default_client_id, identity_of, key_files, load_trusted
from sidecar.fleet.link import SidecarFleet

__all__ = [
    "Approvals",
    "AuditShipper",
    "ShippingWriter",
    "SidecarFleet",
    "check_request_of",
    "default_client_id",
    "identity_of",
    "key_files",
    "load_trusted",
]
