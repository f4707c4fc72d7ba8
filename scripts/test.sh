#!/usr/bin/env bash
# Set up .venv and run the whole test suite (444 tests; 6.5 minutes on 2 idle cores, measured in a fresh clone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --timeout 900 "$@"
