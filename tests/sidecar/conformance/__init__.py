"""The official MCP conformance suite, run direct and through the sidecar."""
