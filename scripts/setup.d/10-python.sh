#!/usr/bin/env bash
# Python virtualenv with the project installed editable, plus dev tools.
set -euo pipefail
stamp=.venv/.palisade-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
touch "$stamp"
echo "setup: python environment ready (.venv)"
