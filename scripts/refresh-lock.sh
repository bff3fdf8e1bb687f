#!/usr/bin/env bash
# Move the locks to the newest releases pyproject.toml's ranges allow, install them and run the
# whole suite: upgrades are this deliberate step, reviewed as a diff of requirements/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
TOOLS=$(mktemp -d)
trap 'rm -rf "$TOOLS"' EXIT
python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
"$TOOLS/venv/bin/python" scripts/lock.py "$TOOLS/venv/bin/uv" --upgrade
bash scripts/setup.sh
bash scripts/test.sh
