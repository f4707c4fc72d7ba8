#!/usr/bin/env bash
# Set up .venv and run the whole test suite (about 10 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --timeout 900 "$@"
