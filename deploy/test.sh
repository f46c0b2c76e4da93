#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian/Ubuntu machine, then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-system-packages.sh
bash deploy/ensure-venv.sh test
exec .venv/bin/python -m pytest "$@"
