#!/usr/bin/env bash
# Quick start: set up .venv, train the `digits` preset on the embedded 8x8 digits (no network needed),
# sample 100 images, check them with an independent classifier, and say where the pictures are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN="runs/digits-$(date +%Y%m%d-%H%M%S)"
.venv/bin/diffusionlab train --preset digits --out "$RUN" "$@"
.venv/bin/diffusionlab sample "$RUN" --n 100 --sampler ddim --steps 50 --trajectory --out "$RUN/samples.npz"
.venv/bin/diffusionlab classify "$RUN/samples.npz"
echo
echo "Sample grid:     $RUN/samples.png"
echo "Denoising GIF:   $RUN/samples.gif"
echo "Loss curve:      $RUN/loss.png"
echo "Grids in training: $RUN/samples/"
