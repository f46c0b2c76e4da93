#!/usr/bin/env bash
# Make .venv and install the project into it (editable) with the given extras, unless it
# was done already for this pyproject.toml: a pip run costs seconds and registry round
# trips, so deploy/run.sh and deploy/test.sh must not pay it at every start. Code changes
# need no reinstall (editable); dependency, entry-point or package-list changes are all in
# pyproject.toml, whose hash each stamp in .venv records.
#   bash deploy/ensure-venv.sh          the node's dependencies
#   bash deploy/ensure-venv.sh test     and the test extra
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
base_stamp=.venv/.hemex-installed
stamp="$base_stamp${extra:+-$extra}"
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ -x .venv/bin/hemex ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
# pip and the build backend talk a lot even with --quiet (setuptools' notes on editable
# installs, the machine's index warnings): keep it in a log, show it when pip fails.
log=.venv/pip-install.log
echo "hemex: installing into .venv (first run, or pyproject.toml changed); log: $log" >&2
pip=(.venv/bin/python -m pip --quiet --disable-pip-version-check)
if ! { "${pip[@]}" install --upgrade pip && "${pip[@]}" install -e ".${extra:+[$extra]}"; } > "$log" 2>&1; then
    cat "$log" >&2
    echo "hemex: pip install failed (above, and in $log)" >&2
    exit 1
fi
# An install with an extra is also the base install.
printf '%s\n' "$want" > "$base_stamp"
printf '%s\n' "$want" > "$stamp"
