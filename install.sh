#!/usr/bin/env bash
# Install spool into .venv, with the extras named in the arguments (`./install.sh test`), as
# run.sh and test.sh do. Does nothing when .venv already holds this install: a stamp in .venv
# records a hash of pyproject.toml (dependencies, entry points, packages) and of this script.
#
# The install is editable (edits to spool/ and cli/ take effect at once), plus one sys.path
# entry, .venv/spool-package, holding a link `spool` to the sources. Without it, any directory
# named `spool` in the current directory (a spool!) shadowed the install: setuptools' editable
# finder runs after Python's path finder, which takes such a directory for a namespace package,
# so `from spool import Spool` failed beside one. A regular package found anywhere on sys.path
# beats a namespace portion; `spool.cli` (the cli/ directory) still comes from the finder.
set -euo pipefail
cd "$(dirname "$0")"
extras=$(IFS=,; echo "$*")
stamp=.venv/.spool-installed
want="$(cat pyproject.toml install.sh | sha256sum | cut -d' ' -f1) ${extras}"
if [ -x .venv/bin/python ] && [ -f "$stamp" ]; then
    have=$(cat "$stamp")
    # an install with more extras (test.sh's) serves run.sh too
    if [ "$have" = "$want" ] || { [ -z "$extras" ] && [ "${have%% *}" = "${want%% *}" ]; }; then
        exit 0
    fi
fi

quiet=--quiet
if [ ! -x .venv/bin/python ]; then
    quiet=
    echo "install.sh: creating .venv (the first run takes a minute, mostly downloads)" >&2
    python3 -m venv .venv
fi
rm -f "$stamp"
# the build runs in .venv, not in an isolated environment downloaded on every install: it needs
# a setuptools that reads `license = "MIT"` (PEP 639)
if ! .venv/bin/python -c 'import sys, setuptools
sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
    echo "install.sh: installing pip and setuptools into .venv" >&2
    .venv/bin/python -m pip install $quiet --progress-bar off --upgrade pip 'setuptools>=77' >&2
fi
echo "install.sh: installing spool${extras:+ with $extras} and its dependencies into .venv" >&2
# (setuptools' warning box about folders named like the package: the link below handles them)
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install $quiet \
    --progress-bar off --no-build-isolation --editable ".${extras:+[$extras]}" >&2
mkdir -p .venv/spool-package
ln -sfn "$PWD/spool" .venv/spool-package/spool
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
echo "$PWD/.venv/spool-package" >"$site/spool-package.pth"
echo "$want" >"$stamp"
