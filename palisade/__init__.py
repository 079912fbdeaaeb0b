"""Palisade: governance for AI agents' MCP tool calls and GPU use on Kubernetes.

The ``palisade`` package is the shared core; daemons (``sidecar``, ``injector``,
``nodeagent``, ``distributor``) import it and never each other.
"""

__version__ = "0.1.0"
