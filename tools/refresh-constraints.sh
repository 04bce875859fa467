#!/usr/bin/env bash
# Refresh requirements/constraints.txt, the versions CI installs (.ci/run).
#
# It installs the project with every extra into a new venv, taking the newest release
# each range in pyproject.toml allows, and writes down what was installed, with pip and
# the build backend. Run it with the oldest Python the project supports (3.11), then run
# `bash .ci/run` and commit both files together:
#
#     bash tools/refresh-constraints.sh && bash .ci/run
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet -e '.[test,docs,bench]' hatchling
{
    echo "# The versions CI installs: pip install -c requirements/constraints.txt -e '.[test,docs]'."
    echo "# Made by tools/refresh-constraints.sh on $("$work/venv/bin/python" -c 'import platform; print("CPython", platform.python_version())') $(date -u +%Y-%m-%d); do not edit by hand."
    "$work/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v '^cardmill' | LC_ALL=C sort -f
} > requirements/constraints.txt
echo "requirements/constraints.txt: $(grep -vc '^#' requirements/constraints.txt) pins"
