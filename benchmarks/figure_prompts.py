"""Figure: a text run's samples, one row per prompt, the prompt written beside its row (for README/BENCHMARKS).

    python benchmarks/figure_prompts.py RUN_DIR --prompt "a thin 3 on the left and a 7 on the right" ... \
        [--per-prompt 8] [--scale 5] [--steps 50] [--seed 0] --out docs/t2i_pairs.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffusionlab.data import from_model_range  # noqa: E402
from diffusionlab.guidance import ClassifierFreeGuidance  # noqa: E402
from diffusionlab.runs import load_run  # noqa: E402
from diffusionlab.sampling import generate  # noqa: E402


def main() -> None:
    """Draw --per-prompt samples of each prompt with DDIM and save the labelled grid."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--per-prompt", type=int, default=8)
    p.add_argument("--scale", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    run = load_run(Path(args.run_dir))
    k = args.per_prompt
    prompts = [q for q in args.prompt for _ in range(k)]
    model = ClassifierFreeGuidance(run.denoiser, args.scale, null_label=run.tokenizer.encode([""])[0])
    res = generate(model, run.process, run.model_shape, len(prompts), "ddim", args.steps, seed=args.seed,
                   y=run.tokenizer.encode(prompts), codec=run.codec)
    images = from_model_range(res.images)[:, 0].numpy()
    h, w = images.shape[1:]
    fig, axes = plt.subplots(len(args.prompt), k, figsize=(k * 0.45 * w / h + 3.2, len(args.prompt) * 0.5),
                             squeeze=False)
    for i, prompt in enumerate(args.prompt):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(images[i * k + j], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(f'"{prompt}"', rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{Path(args.run_dir).name}: guidance scale S = {args.scale:g}, DDIM {args.steps}, seed {args.seed}",
                 fontsize=8)
    fig.subplots_adjust(left=0.45, wspace=0.05, hspace=0.08)
    fig.savefig(args.out, dpi=150, bbox_inches="tight")
    print(args.out)


if __name__ == "__main__":
    main()
