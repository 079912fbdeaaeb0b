"""The CEL engine is loaded without the package's command line (about 12 MB per daemon)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import palisade.policy.engine, palisade.bundle.validate
roots = ('cel', 'typer', 'rich', 'prompt_toolkit')
loaded = sorted(m for m in sys.modules if m.split('.')[0] in roots)
print(loaded)
from palisade.bundle import cel_ext
assert cel_ext.compile('args.n > 1').execute({'args': {'n': 2}}) is True
import cel  # the whole package still imports, reusing the loaded extension
assert cel.compile is cel_ext.compile, 'the extension was initialised twice'
print('ok')
"""


def test_policy_imports_only_the_cel_extension() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["['cel.cel']", "ok"]
