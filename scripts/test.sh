#!/usr/bin/env bash
# Set up .venv and run the whole test suite (255 tests, about 7 minutes on 2 idle CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --timeout 900 "$@"
