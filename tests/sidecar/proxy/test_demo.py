"""``make demo``'s MCP part runs end to end and checks itself (exit status 0)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_mcp_demo_passes_and_verifies_its_audit_log() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mcp_servers" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo passed" in out.stdout
    assert "records verified" in out.stdout
    for decision in ("allow", "deny", "require_approval", "throttle"):
        assert decision in out.stdout
