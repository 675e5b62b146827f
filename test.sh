#!/usr/bin/env bash
# The whole test suite: installs spool and its test dependencies into .venv (install.sh: only
# when pyproject.toml changed), runs pytest (the slow chaos test included; extra arguments go
# to pytest), then ruff and mypy --strict (settings in pyproject.toml). Any failure fails it.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh test
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
fi
lint_failed() { if [ "$status" -eq 0 ]; then status=1; fi; }  # pytest's own code wins
echo "test.sh: ruff check" >&2
.venv/bin/ruff check . || lint_failed
echo "test.sh: mypy (strict, spool/)" >&2
.venv/bin/mypy || lint_failed
exit "$status"
