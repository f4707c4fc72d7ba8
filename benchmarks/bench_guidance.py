"""Benchmark: the fidelity/diversity trade-off of classifier-free and classifier guidance on MNIST.

For each guidance scale, class-balanced samples (classes 0..9 in turn) are drawn with DDIM from one
class-conditional checkpoint and scored by an independent judge, the domain CNN of
evaluation/extractors.py (trained on the MNIST train split; not the noisy classifier used for guidance):
its accuracy on the requested classes, and FID, precision and recall (k-NN, k = 3) of its features
against the test split. Classifier-free guidance uses eps_null + S (eps_c - eps_null); classifier
guidance uses the unconditional (null-label) model with eps - W sigma_t grad log f_phi(y | x_t, t).

    python benchmarks/bench_guidance.py RUN_DIR --classifier CLF_DIR --data-dir MNIST_DIR --n 200 --steps 20 --write

Every setting has the same seed and count, so rows compare with each other (FID at a few hundred
samples is biased upwards: compare rows, not papers). Results are cached per setting (resumable).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, machine, publish  # noqa: E402

from diffusionlab.data import from_model_range, load_dataset  # noqa: E402
from diffusionlab.evaluation.extractors import domain_extractor, reference_features  # noqa: E402
from diffusionlab.evaluation.quality import quality_report, real_floor  # noqa: E402
from diffusionlab.guidance import ClassifierFreeGuidance, ClassifierGuidance  # noqa: E402
from diffusionlab.runs import load_run  # noqa: E402
from diffusionlab.sampling import generate  # noqa: E402
from diffusionlab.training.classifier import guidance_classifier, load_classifier  # noqa: E402
from diffusionlab.viz import save_grid  # noqa: E402

HEADING = "## Guidance sweep: fidelity against diversity (MNIST)"


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v]


def main() -> None:
    """Sweep the scales, score every setting, plot, and optionally write BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--classifier", help="noisy classifier folder (train-classifier); omit to skip classifier guidance")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg-scales", type=_floats, default=[0, 1, 2, 3, 5, 8])
    ap.add_argument("--clf-scales", type=_floats, default=[0, 1, 2, 5, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = load_run(Path(args.run_dir))
    K = run.config.model["num_classes"]
    out_dir = Path(args.run_dir) / "eval" / "guidance"
    out_dir.mkdir(parents=True, exist_ok=True)
    train = load_dataset("mnist", args.data_dir, "train")
    test = load_dataset("mnist", args.data_dir, "test")
    judge = domain_extractor(train, test, progress=True)
    ref = reference_features(judge, test, args.n, args.seed)
    floor = real_floor(judge, train, test, args.n, args.seed)
    y = torch.arange(args.n) % K
    settings = [("cfg", S) for S in args.cfg_scales]
    clf = None
    if args.classifier:
        loaded = load_classifier(Path(args.classifier))
        clf = guidance_classifier(loaded, run.config.process["schedule"], run.process.T, K, run.model_shape)
        settings += [("classifier", W) for W in args.clf_scales]
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for kind, scale in settings:
        path = out_dir / f"{kind}-{scale:g}-n{args.n}-ddim{args.steps}-seed{args.seed}.json"
        if not path.exists():
            if kind == "cfg":
                model = ClassifierFreeGuidance(run.denoiser, scale, null_label=K)
            else:  # the unconditional (null-label) model steered by the classifier
                model = ClassifierGuidance(run.denoiser, clf, scale, pass_label=False)
            t0 = time.perf_counter()
            res = generate(model, run.process, run.model_shape, args.n, "ddim", args.steps, seed=args.seed, y=y,
                           codec=run.codec)
            seconds = time.perf_counter() - t0
            fake = from_model_range(res.images)
            save_grid(fake[:100], path.with_suffix(".png"), nrow=10)
            q = quality_report(judge, fake, ref, k=3)
            _, logits = judge(fake)
            acc = float((torch.from_numpy(logits).argmax(1) == y).double().mean())
            rep = {"kind": kind, "scale": scale, "accuracy": acc, "fid": q["fid"], "precision": q["precision"],
                   "recall": q["recall"], "nfe": res.nfe, "seconds": seconds, "n": args.n, "steps": args.steps}
            path.write_text(json.dumps(rep, indent=1))
            print(f"{kind} {scale:g}: acc {acc:.3f} FID {q['fid']:.2f} P {q['precision']:.3f} R {q['recall']:.3f} "
                  f"({seconds:.0f} s)", flush=True)
        rows.append(json.loads(path.read_text()))
    plot = _plot(rows, ROOT / "docs" / "guidance_tradeoff.png")
    body = [f"Run `{args.run_dir}` (step {run.step}, EMA weights), DDIM {args.steps} steps, {args.n} class-balanced samples "
            f"per setting, seed {args.seed}. Judge: {judge.name}, independent of the guidance classifier. "
            f"Real-data floor at this count (train vs test): FID {floor['fid']:.2f}, precision {floor['precision']:.3f}, "
            f"recall {floor['recall']:.3f}.",
            "",
            "| guidance | scale | class accuracy | FID | precision | recall | NFE | network passes / image | s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        passes = r["nfe"] * (2 if r["kind"] == "cfg" and r["scale"] not in (0, 1) else 1)
        name = "classifier-free S" if r["kind"] == "cfg" else "classifier W"
        body.append(f"| {name} | {r['scale']:g} | {r['accuracy']:.3f} | {r['fid']:.2f} | {r['precision']:.3f} | "
                    f"{r['recall']:.3f} | {r['nfe']} | {passes}{' + grad' if r['kind'] == 'classifier' and r['scale'] else ''} "
                    f"| {r['seconds']:.0f} |")
    body += ["", f"![guidance trade-off]({plot.relative_to(ROOT)})", "",
             f"Machine: {machine()}. Started {started}. Command: `python benchmarks/bench_guidance.py {' '.join(sys.argv[1:])}`"]
    publish(HEADING, "\n".join(body), args.write)


def _plot(rows: list[dict], path: Path) -> Path:
    """Accuracy and FID against the scale, and precision against recall, for both kinds of guidance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for kind, label, marker in (("cfg", "classifier-free (S)", "o"), ("classifier", "classifier (W)", "s")):
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        s = [r["scale"] for r in rs]
        axes[0].plot(s, [r["accuracy"] for r in rs], marker=marker, label=label)
        axes[1].plot(s, [r["fid"] for r in rs], marker=marker, label=label)
        axes[2].plot([r["recall"] for r in rs], [r["precision"] for r in rs], marker=marker, label=label)
        for r in rs:
            axes[2].annotate(f"{r['scale']:g}", (r["recall"], r["precision"]), fontsize=7)
    axes[0].set(xlabel="guidance scale", ylabel="class accuracy (independent CNN)")
    axes[1].set(xlabel="guidance scale", ylabel="FID (domain CNN features)")
    axes[2].set(xlabel="recall (diversity)", ylabel="precision (fidelity)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main()
