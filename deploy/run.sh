#!/usr/bin/env bash
# Install the node in a virtual environment (first run, or after pyproject.toml changed)
# and run it: embedded defaults unless a config file is given
# (deploy/run.sh --config config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/ensure-venv.sh
exec .venv/bin/hemex serve "$@"
