"""Benchmark: does a text-to-image run follow its prompts? (issue 15: digits-text, mnist-text and the pairs)

For each guidance scale, one image per held-out caption of the run's data (its test split; the first --n captions)
is drawn with DDIM from the same seed at every scale, and checked by an independent judge of the digit: the RBF-SVM
on the real UCI digits (evaluation/digits.py) for 8x8 digits, the domain CNN trained on the real MNIST training
split for 28x28. On the compositional sets (digits-pairs, mnist-pairs) each canvas half is judged against the digit
its caption puts there, and a canvas counts only when both halves are right. On the single-digit sets the attribute
words are checked with the measurements that wrote the captions (data/captioned_digits.py): among samples whose
caption says thick (thin), the fraction whose measured thickness is above (below) the median of the real test
digits of that class; the same for slant. Chance: 10% per digit, 1% for both halves, 50% per attribute.

Beside it, the FID of the same samples against the test split with the domain extractor, and the real-data floor
at the same count (train vs test images).

    python benchmarks/bench_text.py RUN_DIR [--scales 0,1,2,3,5] [--steps 50] [--n 300] [--write]
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
from diffusionlab.data.captioned_digits import compose_pairs, measure_attributes  # noqa: E402
from diffusionlab.data.registry import CAPTIONED, PAIR_SEEDS  # noqa: E402
from diffusionlab.evaluation.digits import predict_digits  # noqa: E402
from diffusionlab.evaluation.evaluate import build_extractor, quality_with_floor  # noqa: E402
from diffusionlab.guidance import ClassifierFreeGuidance  # noqa: E402
from diffusionlab.runs import load_run  # noqa: E402
from diffusionlab.sampling import generate  # noqa: E402

WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
THICK, THIN = {"thick", "bold"}, {"thin", "light", "fine"}


def heading(source: str) -> str:
    """The BENCHMARKS.md section of one dataset."""
    return f"## Text-to-image: prompt following ({source})"


def caption_digit(caption: str) -> int:
    """The digit a single-digit caption asks for (its numeral or number word)."""
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


def orderings(captions: list[str]) -> dict[str, np.ndarray]:
    """Which of compose_pairs' three phrasings each caption uses: left named first, right named first, or "on the
    left X, on the right Y" (the position words before the digits)."""
    lead = np.array([c.startswith("on the left") for c in captions])
    right_first = np.array([c.find("on the right") < c.find("on the left") for c in captions]) & ~lead
    return {"left_first": ~lead & ~right_first, "right_first": right_first, "position_first": lead}


class Judge:
    """The independent digit classifier of the base data: predictions for uint8 (N, 1, H, W) single digits."""

    def __init__(self, base: str, data_dir: str | None):
        self.base = base
        if base != "digits":  # MNIST: the domain CNN trained on the real training split (cached after the first run)
            train, test = load_dataset(base, data_dir, "train"), load_dataset(base, data_dir, "test")
            self.cnn = build_extractor("domain", train, test, progress=True)
            self.name = self.cnn.name
        else:
            self.name = "RBF-SVM on the real UCI digits (evaluation/digits.py)"

    def __call__(self, u8: torch.Tensor) -> np.ndarray:
        if self.base == "digits":
            return predict_digits(u8[:, 0].numpy())[0]
        return self.cnn(u8)[1].argmax(1)


def main() -> None:
    """Sweep the guidance scale and print (and with --write, publish) the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--scales", default="0,1,2,3,5")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=300, help="held-out captions (the first n of the test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="the MNIST folder (default: the run's)")
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--write", action="store_true", help="publish the table into BENCHMARKS.md")
    args = p.parse_args()
    run = load_run(Path(args.run_dir))
    cfg = run.config
    source, data_dir = cfg.data.source, args.data_dir or cfg.data.data_dir
    if source not in CAPTIONED:
        sys.exit(f"{source} is not one of the captioned digit sets {', '.join(CAPTIONED)}")
    if cfg.data.split != "train":
        print(f"warning: the run trained on split {cfg.data.split!r}, which holds the test captions: they are "
              "not held out (train with --split train)", file=sys.stderr)
    base, pairs = CAPTIONED[source], source.endswith("-pairs")
    train, test = load_dataset(source, data_dir, "train"), load_dataset(source, data_dir, "test")
    n = min(args.n, len(test))
    captions = test.captions[:n]
    if pairs:  # the two digits of each canvas, from the same seeded composition the data loader made
        base_test = load_dataset(base, data_dir, "test")
        asked = compose_pairs(base_test, len(base_test), seed=PAIR_SEEDS["test"])[2][:n]
    else:
        asked = np.array([caption_digit(c) for c in captions])
    judge = Judge(base, data_dir)
    extractor = None if args.no_fid else build_extractor("domain", train, test, progress=True)
    y = run.tokenizer.encode(captions)
    null = run.tokenizer.encode([""])[0]
    rows = []
    for S in [float(s) for s in args.scales.split(",")]:
        t0 = time.perf_counter()
        res = generate(ClassifierFreeGuidance(run.denoiser, S, null_label=null), run.process, run.model_shape,
                       n, "ddim", args.steps, seed=args.seed, y=y, codec=run.codec)
        seconds = time.perf_counter() - t0
        u8 = from_model_range(res.images)
        row: dict = {"scale": S, "seconds": seconds}
        if pairs:
            w = u8.shape[3] // 2
            left, right = judge(u8[..., :w]) == asked[:, 0], judge(u8[..., w:]) == asked[:, 1]
            both = left & right
            row.update(both=float(both.mean()), left=float(left.mean()), right=float(right.mean()))
            for name, pick in orderings(captions).items():  # does the model just put the first-named digit left?
                row[f"both_{name}"] = float(both[pick].mean())
        else:
            row["digit_accuracy"] = float((judge(u8) == asked).mean())
            base_test = load_dataset(base, data_dir, "test")
            row.update(attribute_hits(captions, u8, base_test.images, base_test.labels.numpy(), asked))
        if extractor is not None:
            q = quality_with_floor(u8, train, test, extractor, seed=args.seed)
            row.update(fid=q["fid"], fid_floor=q["floor"]["fid"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    te = cfg.model["text_encoder"]
    encoder = ("frozen MiniLM (all-MiniLM-L6-v2, 22.7M parameters outside the run)" if te.get("kind") == "minilm"
               else f"jointly trained ({te['layers']} layers, width {te['dim']}, vocabulary {te['vocab_size']})")
    space = "pixel space" if run.codec.pixel_space else f"{run.codec.kind} space {run.model_shape}"
    lines = [f"Run `{args.run_dir}` (step {run.step}, {cfg.process.method}, {space}, text encoder: {encoder}), "
             f"trained on {source} split {cfg.data.split}. {n} {'held-out ' if cfg.data.split == 'train' else ''}"
             f"test captions, one sample each, DDIM {args.steps}, seed {args.seed}; judge: {judge.name}"
             f"{'' if extractor is None else f'; FID extractor: {extractor.name}'}. Command: `python "
             f"benchmarks/bench_text.py {args.run_dir} --scales {args.scales} --steps {args.steps} --n {args.n}`. "
             f"Machine: {machine()}. Date: {dt.date.today()}.", ""]
    if pairs:
        columns = [("both halves right", "both", ".1%"), ("left half", "left", ".1%"), ("right half", "right", ".1%"),
                   ('both, "X on the left and Y on the right"', "both_left_first", ".0%"),
                   ('both, "Y on the right, X on the left"', "both_right_first", ".0%"),
                   ('both, "on the left X, on the right Y"', "both_position_first", ".0%")]
        chance = ("Chance: 1% for both halves, 10% for each half. A model that drew the two named digits in the order "
                  "they are named would score about 100% / 0% / 100% on the three phrasings.")
    else:
        columns = [("digit accuracy", "digit_accuracy", ".1%"), ("thick", "thick", ".0%"), ("thin", "thin", ".0%"),
                   ("leaning right", "right", ".0%"), ("leaning left", "left", ".0%")]
        chance = ("Chance: 10% for the digit, 50% for each attribute column (the fraction of samples on the asked side "
                  "of the real class median).")
    if extractor is not None:
        columns += [("FID", "fid", ".2f"), ("real floor", "fid_floor", ".2f")]
    columns.append(("s", "seconds", ".0f"))
    lines += ["| guidance scale S | " + " | ".join(name for name, _, _ in columns) + " |",
              "|---|" + "---|" * len(columns)]
    for r in rows:
        lines.append(f"| {r['scale']:g} | " + " | ".join(format(r.get(key, 0), spec) for _, key, spec in columns) + " |")
    lines += ["", chance]
    tag = "" if te.get("kind") != "minilm" else " minilm"
    tag += "" if run.codec.pixel_space else " latent"
    publish(heading(source + tag), "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
