#!/usr/bin/env bash
# The quick start: install spool into .venv and run it on the embedded demo spool ./spool-data
# (created with example jobs and a schedule on first run). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e . >/dev/null
exec .venv/bin/spool --spool spool-data run "$@"
