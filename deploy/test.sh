#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian/Ubuntu machine, then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-system-packages.sh
bash deploy/ensure-venv.sh test
# The suite runs twice: on the embedded SQLite file, then with the node's state in a real
# PostgreSQL server (tests/conftest.py starts it; tests about the SQLite file itself, and
# tests that open no database, are deselected on that pass). Both passes always run.
status=0
.venv/bin/python -m pytest "$@" || status=$?
HEMEX_TEST_DATABASE=postgresql .venv/bin/python -m pytest "$@" || status=$?
exit "$status"
