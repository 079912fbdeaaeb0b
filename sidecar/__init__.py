"""The MCP governance sidecar (``palisade sidecar``)."""
