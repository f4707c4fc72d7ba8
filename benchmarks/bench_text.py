"""Benchmark: does a text-to-image run follow its prompts? (issue 15; the embedded digits-text data)

For each guidance scale, one image per held-out caption of the digits-text test split (the same seed for every
scale) is drawn with DDIM and checked by the independent digit judge (an RBF-SVM on the real UCI digits,
evaluation/digits.py): the digit accuracy against the caption's digit. The attribute words are checked with the
measurements that wrote the captions (data/captioned_digits.py): among samples whose caption says thick (thin), the
fraction whose measured thickness is above (below) the median of the real test digits of that class; the same for
slant. A model that ignored the text would score 10% on digits and 50% on attributes.

    python benchmarks/bench_text.py RUN_DIR [--scales 0,1,2,3,5] [--steps 50] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

from diffusionlab.data import from_model_range, load_dataset  # noqa: E402
from diffusionlab.data.captioned_digits import measure_attributes  # noqa: E402
from diffusionlab.evaluation.digits import predict_digits  # noqa: E402
from diffusionlab.guidance import ClassifierFreeGuidance  # noqa: E402
from diffusionlab.runs import load_run  # noqa: E402
from diffusionlab.sampling import generate  # noqa: E402

HEADING = "## Text-to-image: prompt following (digits-text)"
WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
THICK, THIN = {"thick", "bold"}, {"thin", "light", "fine"}


def caption_digit(caption: str) -> int:
    """The digit a caption asks for (its numeral or number word)."""
    for w in re.findall(r"[a-z0-9]+", caption.lower()):
        if w.isdigit():
            return int(w)
        if w in WORDS:
            return WORDS[w]
    raise ValueError(caption)


def attribute_hits(captions: list[str], images: torch.Tensor, real: torch.Tensor, real_labels: np.ndarray,
                   digits: np.ndarray) -> dict[str, float]:
    """Fractions of thick/thin and left/right-slanted captions whose samples measure on the asked side of the real
    class median."""
    a, r = measure_attributes(images), measure_attributes(real)
    med = {k: np.array([np.median(r[k][real_labels == c]) for c in range(10)]) for k in ("thickness", "slant")}
    out = {}
    for name, key, words, above in (("thick", "thickness", THICK, True), ("thin", "thickness", THIN, False),
                                    ("right", "slant", {"right"}, True), ("left", "slant", {"left"}, False)):
        pick = np.array([bool(words & set(re.findall(r"[a-z]+", c.lower()))) for c in captions])
        if pick.any():
            side = a[key][pick] > med[key][digits[pick]]
            out[name] = float(side.mean() if above else (~side).mean())
    return out


def main() -> None:
    """Sweep the guidance scale and print (and with --write, publish) the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--scales", default="0,1,2,3,5")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true", help="publish the table into BENCHMARKS.md")
    args = p.parse_args()
    run = load_run(Path(args.run_dir))
    if run.config.data.split != "train":
        print(f"warning: the run trained on split {run.config.data.split!r}, which holds the test captions: they are "
              "not held out (train with --split train)", file=sys.stderr)
    test = load_dataset("digits-text", split="test")
    captions = test.captions
    digits = np.array([caption_digit(c) for c in captions])
    y = run.tokenizer.encode(captions)
    null = run.tokenizer.encode([""])[0]
    rows = []
    for S in [float(s) for s in args.scales.split(",")]:
        t0 = time.perf_counter()
        res = generate(ClassifierFreeGuidance(run.denoiser, S, null_label=null), run.process, run.model_shape,
                       len(captions), "ddim", args.steps, seed=args.seed, y=y, codec=run.codec)
        u8 = from_model_range(res.images)
        pred, conf = predict_digits(u8[:, 0].numpy())
        hits = attribute_hits(captions, u8, test.images, test.labels.numpy(), digits)
        rows.append({"scale": S, "digit_accuracy": float((pred == digits).mean()),
                     "confident": float((conf >= 0.8).mean()), **hits, "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    cfg = run.config
    lines = [HEADING, "",
             f"Run `{args.run_dir}`: {cfg.train.steps} steps of {cfg.preset or 'a custom config'} on digits-text "
             f"split {cfg.data.split} (text encoder {cfg.model['text_encoder']}), step {run.step}. {len(captions)} "
             f"{'held-out ' if cfg.data.split == 'train' else ''}test captions, "
             f"one sample each, DDIM {args.steps}, seed {args.seed}. Command: `python benchmarks/bench_text.py "
             f"{args.run_dir} --scales {args.scales} --steps {args.steps}`. Machine: {machine()}. "
             f"Date: {dt.date.today()}.", "",
             "| guidance scale S | digit accuracy | judge confident | thick | thin | leaning right | leaning left | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scale']:g} | {r['digit_accuracy']:.1%} | {r['confident']:.1%} | {r.get('thick', 0):.0%} | "
                     f"{r.get('thin', 0):.0%} | {r.get('right', 0):.0%} | {r.get('left', 0):.0%} | {r['seconds']:.0f} |")
    lines += ["", "Chance: 10% for the digit, 50% for each attribute column (the fraction of samples on the asked side "
                  "of the real class median)."]
    publish(HEADING, "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
