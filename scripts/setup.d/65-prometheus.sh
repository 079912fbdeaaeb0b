#!/usr/bin/env bash
# Prometheus and promtool for the monitoring tests (tests/monitoring): promtool
# checks and unit-tests the chart's alerts, and a real Prometheus scrapes the real
# daemons and runs every dashboard query and alert expression.
#
# Looks for both in $PALISADE_PROMETHEUS_BINDIR, then on PATH; returns at once when
# found. Otherwise, on a Debian-like machine, installs the distribution's
# `prometheus` package (it ships both) with apt-get, as root or through sudo when
# it needs no password. Nothing is started here: the tests start their own
# Prometheus on a random loopback port.
#
# Environment:
#   PALISADE_SKIP_PROMETHEUS=1  skip this step (the monitoring tests then fail with a
#                               "run make setup" message)
#   PALISADE_PROMETHEUS_BINDIR  directory holding prometheus and promtool (tests read it too)
set -euo pipefail

if [ "${PALISADE_SKIP_PROMETHEUS:-0}" = "1" ]; then
  echo "setup: prometheus skipped (PALISADE_SKIP_PROMETHEUS=1)"
  exit 0
fi

found() {
  local dir="${PALISADE_PROMETHEUS_BINDIR:-}"
  if [ -n "$dir" ]; then
    [ -x "$dir/prometheus" ] && [ -x "$dir/promtool" ]
    return
  fi
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1
}

if found; then
  exit 0
fi

# shellcheck source=../lib-apt.sh
. "$(dirname "$0")/../lib-apt.sh"
start=$(date +%s)
apt_install "prometheus/promtool" \
  "install Prometheus and set PALISADE_PROMETHEUS_BINDIR" prometheus
if ! found; then
  echo "setup: apt-get installed prometheus but prometheus/promtool were not found" >&2
  exit 1
fi
echo "setup: Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') installed in $(($(date +%s) - start))s"
