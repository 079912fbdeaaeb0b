"""gRPC ``palisade.v1.PolicyService``: the servicer, request conversion, server wiring.

* :mod:`palisade.service.convert`: pure CheckRequest -> Call and Verdict ->
  CheckResponse, with request bounds (:class:`BadRequest`).
* :mod:`palisade.service.servicer`: :class:`PolicyServicer` decides, audits and
  counts every call, failing closed.
* :mod:`palisade.service.server`: a grpc.aio server on a Unix socket (and
  optional loopback TCP) with health and reflection.
"""

from palisade.service.convert import BadRequest, Limits
from palisade.service.server import ServerSettings, start_server
from palisade.service.servicer import EngineHolder, PolicyServicer

__all__ = [
    "BadRequest",
    "EngineHolder",
    "Limits",
    "PolicyServicer",
    "ServerSettings",
    "start_server",
]
