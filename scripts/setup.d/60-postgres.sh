#!/usr/bin/env bash
# A PostgreSQL server binary set (initdb, pg_ctl, postgres) for the distributor's
# PostgreSQL audit store tests (tests/distributor/test_postgres_store.py). The
# tests start their own throwaway cluster (initdb into a temp dir, pg_ctl on a
# random loopback port); nothing here creates or starts a cluster.
#
# Looks for the binaries in $PALISADE_PG_BINDIR, `pg_config --bindir`, then
# /usr/lib/postgresql/<newest>/bin (Debian/Ubuntu); returns at once when found.
# Otherwise, on a Debian-like machine, installs the distribution's `postgresql`
# package with apt-get (as root, or through sudo when it needs no password).
#
# Environment:
#   PALISADE_SKIP_POSTGRES=1  skip this step (the PostgreSQL tests then fail with
#                             a "run make setup" message)
#   PALISADE_PG_BINDIR        directory holding initdb and pg_ctl (tests read it too)
set -euo pipefail

if [ "${PALISADE_SKIP_POSTGRES:-0}" = "1" ]; then
  echo "setup: postgres skipped (PALISADE_SKIP_POSTGRES=1)"
  exit 0
fi

found() {
  if [ -n "${PALISADE_PG_BINDIR:-}" ] && [ -x "$PALISADE_PG_BINDIR/initdb" ]; then return 0; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then return 0; fi
  done
  return 1
}

if found; then
  exit 0
fi

# shellcheck source=../lib-apt.sh
. "$(dirname "$0")/../lib-apt.sh"
start=$(date +%s)
apt_install "PostgreSQL server binaries (initdb)" \
  "install PostgreSQL and set PALISADE_PG_BINDIR" postgresql
if ! found; then
  echo "setup: apt-get installed postgresql but initdb was not found" >&2
  exit 1
fi
echo "setup: PostgreSQL server installed in $(($(date +%s) - start))s"
