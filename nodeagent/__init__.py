"""The GPU node agent (``palisade nodeagent``)."""
