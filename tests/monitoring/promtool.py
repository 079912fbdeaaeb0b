"""Debian's Prometheus and promtool (scripts/setup.d/65-prometheus.sh installs them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "charts" / "palisade" / "files" / "alerts.yaml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
DASHBOARDS = sorted((ROOT / "charts" / "palisade" / "dashboards").glob("*.json"))


def binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; a clear failure when setup did not run."""
    bindir = os.environ.get("PALISADE_PROMETHEUS_BINDIR", "")
    found = shutil.which(name, path=bindir or None)
    if not found:
        raise AssertionError(
            f"{name} not found: run `make setup` (scripts/setup.d/65-prometheus.sh)"
        )
    return found
