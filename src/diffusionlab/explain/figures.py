"""Each explain figure of a planned run: its data (the modules beside this one), its drawing (draw.py), its caption
with the paper it reproduces, and its remarks. Figures the plan leaves out carry the reason instead."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from ..data import to_model_range
from ..evaluation.evaluate import nll_images
from ..pages.eval_results import read_eval_results
from .draw import (
    draw_fid_nfe,
    draw_forward,
    draw_progressive,
    draw_schedules,
    draw_sweep,
    draw_variance,
)
from .fid_nfe import fid_nfe, how_to_measure
from .forward import forward_strip
from .plan import FIGURES, Plan
from .progressive import progressive
from .schedules import schedule_curves
from .sweep import guidance_sweep
from .variance import variance_interpolation

if TYPE_CHECKING:
    from ..api import Run


@dataclass
class Figure:
    """One section of the page: title, PNG (None when not drawn), caption, remarks, an optional table and commands,
    and the data it was drawn from (ForwardStrip, ScheduleCurves, ...; None when not drawn)."""

    key: str
    title: str
    png: bytes | None = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] | None = None
    commands: list[str] = field(default_factory=list)
    data: Any = None


@dataclass
class Inputs:
    """What the figures share: the run, the plan, and n seeded test images with their conditions (labels or token
    ids of their captions; None for an unconditional run)."""

    run: Run
    plan: Plan
    images: Tensor | None
    y: Tensor | None

    def condition(self, n: int) -> Tensor | None:
        """The condition of the first n images."""
        return None if self.y is None else self.y[:n]

    def described(self, n: int) -> str:
        """What the first n images' conditions are, in words (for a caption)."""
        if self.y is None:
            return ""
        if self.y.ndim == 1:
            classes = ", ".join(str(int(c)) for c in self.y[:n])
            return f", for the classes of the forward strip's test images ({classes})"
        return ", for the captions of the forward strip's test images"


def _forward(fig: Figure, inp: Inputs) -> None:
    o, loaded = inp.plan.options, inp.run.loaded
    process = loaded.process
    strip = forward_strip(process, loaded.codec, inp.images[: o.n], o.frames, o.seed)
    fig.data, fig.png = strip, draw_forward(strip)
    if process.T is not None:
        how = (f"DDPM's closed form q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I) (Ho et al. 2020, eq. 4) "
               f"with this run's {process.config().get('schedule', '')} alpha_bar_t, at steps t = 0..{process.T}")
    else:
        how = (f"the {process.method} path x_t = alpha(t) x0 + sigma(t) eps from its data end (t = "
               f"{float(process.path.t_data):g}) to its noise end (t = {float(process.path.t_noise):g}); column 0 is "
               "the data itself, and each column is shown at the VP scale x_t / sqrt(alpha^2 + sigma^2)")
    latent = (" Noised in the autoencoder's latent space and decoded (Rombach et al. 2022); column 0 is the image "
              "itself, which the decoder reconstructs up to the autoencoder's error.") if strip.latent else ""
    fig.caption = (f"{len(strip.images)} test images (seed {o.seed}), each with one eps shared by all columns: "
                   f"{how}. sigma(t) is printed above each column.{latent}")


def _schedules(fig: Figure, inp: Inputs) -> None:
    curves = schedule_curves(inp.run.loaded.process)
    fig.data, fig.png = curves, draw_schedules(curves)
    fig.caption = ("Improved DDPM (Nichol & Dhariwal 2021), Fig. 5: under the linear schedule (Ho et al. 2020) "
                   "alpha_bar_t is near zero for the last part of the chain, whose steps then add little; the cosine "
                   "schedule falls linearly in the middle and changes slowly at both ends. log-SNR is "
                   "log(alpha_bar / (1 - alpha_bar)). The wide grey line is " + curves.own_label + ".")


def _progressive(fig: Figure, inp: Inputs) -> None:
    o, plan, loaded = inp.plan.options, inp.plan, inp.run.loaded
    prog = progressive(loaded, plan.progressive_sampler, plan.progressive_steps, o.frames, o.n, o.seed,
                       y=inp.condition(o.n), images=inp.images[: o.n])
    fig.data, fig.png = prog, draw_progressive(prog)
    what = (f"the forward strip's {o.n} test images, degraded x{loaded.superres.factor} and upsampled"
            if loaded.superres is not None else f"{o.n} samples{inp.described(o.n)}")
    fig.caption = (f"DDPM (Ho et al. 2020), Fig. 6: {what}, drawn with {prog.sampler} in {prog.steps} steps (NFE "
                   f"{prog.nfe}), seed {o.seed}. " + ("Top: x_t at the recorded steps; bottom: the model's x0_hat there. "
                   if prog.x0_hat is not None else "x_t at the recorded steps. ") +
                   "Large-scale features are decided first, details last; the last column's x_t is the sample.")


def _variance(fig: Figure, inp: Inputs) -> None:
    o, loaded = inp.plan.options, inp.run.loaded
    images = inp.images[: o.v_images]
    with torch.no_grad():
        x0 = loaded.codec.encode(to_model_range(images))  # the images' own latents for a latent run
    curve = variance_interpolation(loaded, x0, inp.condition(o.v_images), seed=o.seed)
    fig.data, fig.png = curve, draw_variance(curve)
    fig.caption = (f"Improved DDPM (Nichol & Dhariwal 2021), section 3.1 and eq. 15: the network's v at x_t of "
                   f"{len(images)} test images over {len(curve.t)} steps of the {loaded.process.T}-step chain "
                   "(v = 0: beta~_t, v = 1: beta_t). Left: the mean v and its spread; right: the learned Sigma_t between "
                   "its two bounds, each divided by beta_t (their Fig. 1): the bounds part only over the first steps, "
                   "which is where a learned variance matters for the likelihood. At t = 1 the lower bound is beta~_2, "
                   "since beta~_1 = 0 (docs/maths.md section 2).")


def _guidance(fig: Figure, inp: Inputs) -> None:
    o, plan, run = inp.plan.options, inp.plan, inp.run
    sweep = guidance_sweep(run, plan.scales, classes=plan.classes, prompts=plan.prompts, sampler=plan.sampler,
                           steps=plan.steps, seed=o.seed)
    fig.data, fig.png = sweep, draw_sweep(sweep)
    columns = "classes " + ", ".join(sweep.columns) if plan.classes is not None else "captions: " + " | ".join(
        sweep.columns)
    fig.caption = ("Classifier-free guidance (Ho & Salimans 2022): eps_bar = eps(x_t, null) + S (eps(x_t, y) - "
                   "eps(x_t, null)); S = 0 is the unconditional model, S = 1 plain conditional sampling. Rows: S = "
                   f"{', '.join(f'{s:g}' for s in sweep.scales)}; columns: {columns}. Every row starts from the same "
                   f"x_T (seed {o.seed}); {plan.sampler}, {plan.steps} steps, NFE {max(sweep.nfe)} per image (two "
                   "network passes per step when S is neither 0 nor 1).")


def _fid(fig: Figure, inp: Inputs) -> None:
    run = inp.run
    data = fid_nfe(read_eval_results(run.path))
    if data is None:
        fig.notes.append(f"No FID result in {run.path / 'eval'} yet. Measure the run's samplers (repeat with other "
                         "--sampler and --steps values for more lines), then run explain again with --overwrite; "
                         "benchmarks/bench_fid_nfe.py RUN --n 200 scores every sampler into RUN/eval/fid_nfe/.")
        fig.commands = how_to_measure(run.path, run.loaded.process)
        return
    fig.data, fig.png = data, draw_fid_nfe(data)
    p0 = data.points[0]
    fig.caption = (f"Sample quality against cost from {len(data.points)} evaluation results of this run (checkpoint "
                   f"step {p0.step}, {p0.n} samples, {p0.extractor} features, against "
                   f"{p0.reference or 'the test split'}): FID (lower is better) against network evaluations per "
                   "sample. The grey line is the real-data floor, train against test images at the same count: about "
                   "what a perfect generator would score here, since FID is biased upwards at small counts.")
    fig.table = (["sampler", "NFE", "FID", "real-data floor", "file (in eval/)"],
                 [[p.label, str(p.nfe), f"{p.fid:.3f}", "-" if p.floor is None else f"{p.floor:.3f}", p.source]
                  for p in data.points])
    if data.left_out:
        fig.notes.append(f"{len(data.left_out)} other result(s) were measured at another checkpoint, extractor, "
                         "sample count or reference set; their FIDs are not comparable with these and are left out: "
                         + ", ".join(p.source for p in data.left_out) + ".")


BUILDERS: dict[str, Callable[[Figure, Inputs], None]] = {
    "forward": _forward, "schedules": _schedules, "progressive": _progressive, "variance": _variance,
    "guidance": _guidance, "fid": _fid}


def render_figures(run: Run, plan: Plan) -> list[Figure]:
    """Every figure of the page in order: the planned ones drawn, the others with the reason they are not."""
    o = plan.options
    images = y = None
    if {"forward", "progressive", "variance"} & set(plan.draw):
        count = max(o.n, o.v_images if "variance" in plan.draw else 0)
        _, images, y = nll_images(run.loaded, "test", count, o.seed)  # a seeded subset, with labels or captions
    inputs = Inputs(run, plan, images, y)
    figures = []
    for key, (_, title) in FIGURES.items():
        fig = Figure(key, title, notes=list(plan.notes.get(key, [])))
        if key in plan.omitted:
            fig.notes.insert(0, f"Not drawn: {plan.omitted[key]}.")
        else:
            BUILDERS[key](fig, inputs)
        figures.append(fig)
    return figures


__all__ = ["BUILDERS", "Figure", "Inputs", "render_figures"]
