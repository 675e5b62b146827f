#!/usr/bin/env bash
# The quick start: install spool into .venv, then run `spool run` in ./demo, on its default
# spool ./spool (demo/spool), created with example jobs and a schedule on first run.
# Ctrl-C stops it; in another terminal: cd demo && ../.venv/bin/spool status
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e . >/dev/null
mkdir -p demo
cd demo
exec ../.venv/bin/spool run "$@"
