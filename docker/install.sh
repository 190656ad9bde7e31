#!/bin/sh
# Install studio-sink from a source tree into a new virtualenv.
#
#   usage: docker/install.sh SOURCE_DIR VENV_DIR
#   env:   PYTHON  interpreter that creates the venv (default: python3)
#
# The Dockerfile's builder stage runs exactly this, and tests/deploy/test_dockerfile.py
# runs it on a copy of the build context, so the image and the test install alike.
# If SOURCE_DIR/constraints.txt exists (exact pins, e.g. from `pip-compile`), every
# dependency is installed at the version it names.
set -eu

src=${1:?usage: install.sh SOURCE_DIR VENV_DIR}
venv=${2:?usage: install.sh SOURCE_DIR VENV_DIR}
python=${PYTHON:-python3}

if [ ! -f "$src/pyproject.toml" ]; then
    echo "install.sh: no pyproject.toml in $src: nothing to install" >&2
    exit 2
fi

"$python" -m venv "$venv"

set -- --no-cache-dir --disable-pip-version-check --no-input
if [ -f "$src/constraints.txt" ]; then
    set -- "$@" --constraint "$src/constraints.txt"
fi
"$venv/bin/python" -m pip install "$@" "$src"

# Smoke test: the console script starts and imports the package.
"$venv/bin/studio-sink" --help >/dev/null
