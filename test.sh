#!/usr/bin/env bash
# The whole test suite: installs spool and its test dependencies into .venv (install.sh: only
# when pyproject.toml changed), then runs pytest (the slow chaos test included). Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh test
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
fi
exit "$status"
