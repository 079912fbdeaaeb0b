"""The old import path of :mod:`sidecar.credentials.vault` (the same module object)."""

import sys

from sidecar.credentials import vault as _vault
from sidecar.credentials.vault import *  # noqa: F403 (the names, for type checkers)

sys.modules[__name__] = _vault
