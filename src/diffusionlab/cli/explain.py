"""`diffusionlab explain` (the source papers' figures drawn from a trained diffusion run: PNGs and one self-contained
HTML page, explain/) and `diffusionlab report` (everything a run directory records on one page, pages/report.py)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .args import add_precision_flag, int_in, int_list, positive_int, seed
from .outputs import add_overwrite_flag, check_output_file, check_output_folder


def scale_list(s: str) -> list[float]:
    """Comma-separated guidance scales: finite numbers >= 0, e.g. 0,1,2,4."""
    from ..explain.plan import MAX_SCALES

    try:
        values = [float(x) for x in s.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0,1,2,4, got {s!r}") from None
    if not values or len(values) > MAX_SCALES:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_SCALES} guidance scales, got {s!r}")
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise argparse.ArgumentTypeError(f"a guidance scale must be a finite number >= 0, got {bad[0]}")
    return values


def figure_list(s: str) -> list[str]:
    """Comma-separated names of explain figures."""
    from ..explain.plan import FIGURES

    names = [x for x in s.replace(" ", "").split(",") if x]
    bad = [x for x in names if x not in FIGURES]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected figures from {','.join(FIGURES)}, got {s!r}")
    return names


def add_parsers(sub: Any) -> None:
    """The `explain` and `report` sub-commands."""
    from ..explain.plan import FIGURES, MAX_FRAMES, MAX_N, MAX_V_IMAGES
    from ..sampling import SAMPLER_NAMES

    e = sub.add_parser("explain", help="the papers' figures drawn from your own run (PNGs + one HTML page)",
                       description="Draw the figures of the source papers from a trained diffusion run: the forward "
                                   "process on a real image, the noise schedules, progressive generation, the learned "
                                   "variance, a guidance sweep and FID against NFE; PNGs and one self-contained "
                                   "index.html in RUN_DIR/explain/.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/explain)")
    add_overwrite_flag(e, "the figures and page of an earlier explain in that folder")
    e.add_argument("--seed", type=seed, default=0, help="seed of the images, the noise and the samples (default 0)")
    e.add_argument("--n", type=int_in(1, MAX_N), default=4,
                   help=f"test images in the forward strip and samples in the progressive figure (1..{MAX_N}, "
                        "default 4)")
    e.add_argument("--frames", type=int_in(2, MAX_FRAMES), default=10,
                   help=f"columns of the forward strip and of the progressive figure (2..{MAX_FRAMES}, default 10)")
    e.add_argument("--sampler", choices=SAMPLER_NAMES, default=None, metavar="NAME",
                   help="sampler of the progressive figure and the guidance sweep (default: the model's own)")
    e.add_argument("--steps", type=positive_int, default=None, help="its steps (default: the model's own)")
    e.add_argument("--scales", type=scale_list, default=None, metavar="S,S,...",
                   help="guidance scales of the sweep, one row each (default 0,1,2,4; 1 is plain conditional)")
    e.add_argument("--classes", type=int_list, default=None, metavar="K,K,...",
                   help="the sweep's columns for a class-conditional run (default: classes 0..9)")
    e.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a column of a text run's sweep (repeat; default: the first --n captions of the test split)")
    e.add_argument("--v-images", type=int_in(2, MAX_V_IMAGES), default=64,
                   help=f"test images averaged in the learned-variance figure (2..{MAX_V_IMAGES:,}, default 64)")
    e.add_argument("--figures", type=figure_list, default=None, metavar="NAME,...",
                   help=f"draw only these ({','.join(FIGURES)}; default: every one that applies)")
    e.add_argument("--checkpoint", metavar="DIR", help="a specific checkpoint folder (default: the newest)")
    e.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    add_precision_flag(e)

    r = sub.add_parser("report", help="one HTML page of a run: config, curves, preview grids, evaluations, history",
                       description="Write one self-contained HTML page of everything a run directory records: its "
                                   "config, training curves, preview grids, evaluation results and history. Any run "
                                   "kind (diffusion, autoencoder, GAN, VAE, flow).")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--out", metavar="FILE.html", help="where to write the page (default: RUN_DIR/report.html)")
    add_overwrite_flag(r, "the page")


def _refuse_non_diffusion(run_dir: Path) -> None:
    """One line for a run explain cannot draw: a GAN, VAE or flow, or an autoencoder."""
    from ..runs import read_config_json

    kind = read_config_json(run_dir).get("kind")  # also: not a run directory, corrupt config.json
    if kind is not None:
        article = "an" if str(kind)[:1] in "aeiou" else "a"
        raise ConfigError(f"explain draws the diffusion papers' figures; {run_dir} is {article} {kind} run: use "
                          f"`diffusionlab report {run_dir}` for its curves, grids and scores")


def run_explain(args: argparse.Namespace) -> int:
    """`diffusionlab explain`."""
    from ..api import load_run
    from ..explain import (
        OWNED,
        ExplainOptions,
        explain_page,
        plan_explain,
        render_figures,
        write_explain,
    )

    run_dir = Path(args.run_dir)
    _refuse_non_diffusion(run_dir)
    out = check_output_folder(Path(args.out) if args.out else run_dir / "explain", "--out", args.overwrite, OWNED)
    options = ExplainOptions(n=args.n, frames=args.frames, seed=args.seed, sampler=args.sampler, steps=args.steps,
                             scales=None if args.scales is None else tuple(args.scales),
                             classes=None if args.classes is None else tuple(args.classes),
                             prompts=None if args.prompt is None else tuple(args.prompt), v_images=args.v_images,
                             figures=None if args.figures is None else tuple(args.figures))
    run = load_run(run_dir, args.checkpoint, ema=not args.no_ema, mixed_precision=args.mixed_precision)
    plan = plan_explain(run, options)  # every option checked against the run before any figure is drawn
    figures = render_figures(run, plan)
    written = write_explain(out, figures, explain_page(run, plan, figures), args.overwrite)
    for f in figures:
        print(f"{f.title}: " + ("drawn" if f.png is not None else (f.notes[0] if f.notes else "not drawn")))
    print(f"page:    {written[-1]} ({len(written) - 1} figures embedded; also written beside it)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """`diffusionlab report`."""
    from ..atomic import atomic_write_text
    from ..pages import build_report
    from ..runs import read_config_json

    run_dir = Path(args.run_dir)
    read_config_json(run_dir)  # not a run directory, or a corrupt config: one line, before anything
    out = Path(args.out) if args.out else run_dir / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out must end in .html, got {out}")
    check_output_file(out, "--out", args.overwrite, make_parents=True)
    atomic_write_text(out, build_report(run_dir))
    print(f"report: {out}")
    return 0


__all__ = ["add_parsers", "figure_list", "run_explain", "run_report", "scale_list"]
