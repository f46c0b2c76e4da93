#!/usr/bin/env bash
# Install the node in a virtual environment and run it (embedded defaults unless a
# config file is given: deploy/run.sh --config config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/hemex serve "$@"
