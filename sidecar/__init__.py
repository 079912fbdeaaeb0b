"""The MCP governance sidecar (``palisade sidecar``)."""

import sys
import types

# The ``cel`` package imports its interactive command line (prompt_toolkit, rich:
# about 22 MB resident) whenever it is imported; the sidecar only compiles and
# evaluates expressions (``cel.compile``), which never touch it. An empty
# ``cel.cli`` keeps the daemon inside its memory budget. Nothing happens when
# ``cel`` (with its CLI) was already imported by someone else.
if "cel" not in sys.modules:
    sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
