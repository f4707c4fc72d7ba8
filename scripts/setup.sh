#!/usr/bin/env bash
# Create .venv (if needed) and install diffusionlab into it.
# torch==2.13.0 goes first: it is the CPU build, and installing it before the project stops
# pip from resolving torch to a CUDA build with several GB of extra packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip_install() {  # keep pip's exit status; drop the machine's noisy find-links warnings
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
pip_install torch==2.13.0
pip_install -e ".${EXTRAS:-[test,text,serve,tensorboard]}"
.venv/bin/python -c "import diffusionlab, torch; print(f'diffusionlab {diffusionlab.__version__} ready (torch {torch.__version__})')"
