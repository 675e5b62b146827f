#!/usr/bin/env bash
# The quick start: install spool into .venv (install.sh: only when pyproject.toml changed), then
# run `spool run` in ./demo on its default spool ./spool (demo/spool), created with example
# jobs and a schedule on first run. Ctrl-C stops it. Extra arguments go to `spool run`.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
mkdir -p demo
cd demo
cat >&2 <<'BANNER'

  spool: worker, cron and reaper on the demo spool demo/spool (Ctrl-C stops them).
  Watch it from another terminal:
    cd demo && ../.venv/bin/spool status    # counts, this host and its slots, next fires
    ../.venv/bin/spool ls                   # every job, its state and outcome
    ../.venv/bin/spool logs <id>            # the output of each attempt

BANNER
exec ../.venv/bin/spool run "$@"
