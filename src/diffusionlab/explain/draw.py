"""Drawing the explain figures (matplotlib, Agg) from the data the other modules of explain/ compute: each function
takes that data and returns PNG bytes, and draws nothing it was not given."""

from __future__ import annotations

import math
import textwrap
from typing import Any, Sequence

import numpy as np
from torch import Tensor

from ..viz import figure_png, grid_array, pyplot
from .fid_nfe import FidNfe
from .forward import ForwardStrip
from .progressive import Progressive
from .schedules import ScheduleCurves, log_snr
from .sweep import GuidanceSweep
from .variance import VarianceCurve

MAX_WIDTH_IN = 14.0
PX_PER_IN = 40.0  # grid pixels per inch of figure: 32-pixel tiles come out about 80 pixels wide at 100 dpi
LABEL_IN = 0.55  # the narrowest column (inches) that gets its own label; denser grids label every k-th column


def _grid_size(arr: np.ndarray, ncols: int, min_col_in: float = 0.0) -> tuple[float, float]:
    """Inches (width, height) of an image grid: tiles large enough to see (columns at least `min_col_in` wide, for
    long labels), the page width at most."""
    h, w = arr.shape[:2]
    width = min(MAX_WIDTH_IN, max(3.0, w / PX_PER_IN, min_col_in * ncols))
    return width, width * h / w


def _show_grid(ax: Any, arr: np.ndarray, count: int, ncols: int, col_labels: Sequence[str], row_labels: Sequence[str],
               title: str, stride: int) -> None:
    """A `grid_array` of `count` images in rows of `ncols` on `ax`, labelled above every `stride`-th column and left
    of the rows."""
    gray = arr.shape[-1] == 1
    ax.imshow(arr[..., 0] if gray else arr, cmap="gray" if gray else None, vmin=0, vmax=255,
              interpolation="nearest")
    rows = math.ceil(count / ncols)
    tile_w, tile_h = (arr.shape[1] - 1) / ncols, (arr.shape[0] - 1) / rows  # grid_array's tile plus its padding
    shown = [i for i in range(len(col_labels)) if i % stride == 0 or i == len(col_labels) - 1]
    ax.set_xticks([(i + 0.5) * tile_w for i in shown], [col_labels[i] for i in shown], fontsize=8)
    ax.set_yticks([(i + 0.5) * tile_h for i in range(len(row_labels))], list(row_labels), fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        lines = max((label.count("\n") + 1 for label in col_labels), default=0)
        ax.set_title(title, fontsize=10, pad=6 + 11 * lines)


def _grid_figure(blocks: Sequence[tuple[Tensor, int, Sequence[str], Sequence[str], str]],
                 min_col_in: float = 0.0) -> bytes:
    """One figure of image grids stacked vertically: (uint8 images row by row, ncols, column labels, row labels,
    title) each."""
    plt = pyplot()
    arrays = [grid_array(b[0], nrow=b[1]) for b in blocks]
    sizes = [_grid_size(a, b[1], min_col_in) for a, b in zip(arrays, blocks)]
    label_rows = [max((c.count("\n") + 1 for c in b[2]), default=0) for b in blocks]
    width = max(s[0] for s in sizes) + 1.2
    heights = [s[1] + 0.5 + 0.18 * n for s, n in zip(sizes, label_rows)]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(width, sum(heights)), height_ratios=heights, squeeze=False)
    for ax, arr, (w, _), (images, ncols, cols, rows, title) in zip(axes[:, 0], arrays, sizes, blocks):
        _show_grid(ax, arr, len(images), ncols, cols, rows, title, stride=math.ceil(LABEL_IN / (w / ncols)))
    fig.tight_layout()
    return figure_png(fig)


def _finish(fig: Any, axes: Sequence[Any], xlabel: str) -> bytes:
    """The common end of a plot: x label, grid and legend on each axis, tight layout, PNG bytes."""
    for a in axes:
        a.set_xlabel(xlabel)
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def draw_forward(strip: ForwardStrip) -> bytes:
    """The forward strip: one row per image, one column per t, labelled with t and sigma(t)."""
    k = strip.images.shape[1]
    cols = [f"{label}\nσ={s:.2g}" for label, s in zip(strip.labels, strip.sigma)]
    space = "latent space, decoded" if strip.latent else "pixel space"
    return _grid_figure([(strip.images.flatten(0, 1), k, cols, [], f"x_t = alpha(t) x0 + sigma(t) eps ({space})")])


def draw_schedules(curves: ScheduleCurves) -> bytes:
    """alpha_bar and log-SNR over t / T: linear and cosine, and the run's own curve."""
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in (("linear", "--"), ("cosine", ":")):
        ab = curves.alpha_bar[name]
        ax[0].plot(curves.u, ab, style, lw=1.5, label=f"{name} (T = {curves.T})")
        ax[1].plot(curves.u, log_snr(ab), style, lw=1.5, label=name)
    ax[0].plot(curves.own_u, curves.own_alpha_bar, color="black", lw=3, alpha=0.35, label=curves.own_label)
    ax[1].plot(curves.own_u, log_snr(curves.own_alpha_bar), color="black", lw=3, alpha=0.35, label="this run")
    ax[0].set_ylabel("alpha_bar_t")
    ax[0].set_title("alpha_bar over diffusion time (iDDPM Fig. 5)")
    ax[1].set_ylabel("log SNR = log(alpha_bar / (1 - alpha_bar))")
    ax[1].set_title("log signal-to-noise ratio")
    return _finish(fig, ax, "t / T  (0: data, 1: noise)")


def draw_progressive(prog: Progressive) -> bytes:
    """x_t (top) and x0_hat (bottom, when the sampler reports it) at each recorded step, one row per sample."""
    k = prog.x_t.shape[0]
    where = f"{prog.sampler}, {prog.steps} steps, NFE {prog.nfe}"
    labels = [label.replace("sigma=", "σ=") for label in prog.labels]  # a sigma-space sampler's frames
    blocks = [(_by_sample(prog.x_t), k, labels, [], f"x_t ({where})")]
    if prog.x0_hat is not None:
        blocks.append((_by_sample(prog.x0_hat), k, labels, [], "x0_hat: the model's prediction of x0 at that step"))
    return _grid_figure(blocks)


def _by_sample(frames: Tensor) -> Tensor:
    """Frames (K, N, ...) as grid rows: one row per sample, one column per step."""
    return frames.transpose(0, 1).flatten(0, 1)


def draw_variance(curve: VarianceCurve) -> bytes:
    """v over t with its spread, and the learned log Sigma_t between its bounds."""
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    t, mean, std = curve.t, curve.mean, curve.v.std(axis=1)
    ax[0].fill_between(t, curve.q10, curve.q90, alpha=0.2, label="pixels: 10th-90th percentile")
    ax[0].fill_between(t, mean - std, mean + std, alpha=0.35, label="per-image means: ± 1 std")
    ax[0].plot(t, mean, lw=2, label=f"mean v ({curve.v.shape[1]} test images)")
    ax[0].axhline(0, color="grey", lw=0.8, ls="--")
    ax[0].axhline(1, color="grey", lw=0.8, ls="--")
    ax[0].set_ylabel("v   (0: beta~_t, 1: beta_t)")
    ax[0].set_title("learned interpolation v (iDDPM eq. 15)")
    # iDDPM Fig. 1's view: every variance over beta_t, so the two bounds part visibly only at the first steps
    ax[1].axhline(1, ls="--", lw=1, color="C0", label="beta_t / beta_t (upper bound)")
    ax[1].plot(t, np.exp(curve.log_beta_tilde - curve.log_beta), ":", lw=1.5, label="beta~_t / beta_t (lower bound)")
    ax[1].plot(t, np.exp(curve.log_sigma - curve.log_beta), lw=2, label="learned Sigma_t / beta_t (geometric mean)")
    ax[1].set_xscale("log")
    ax[1].set_title("reverse-process variance over beta_t (iDDPM Fig. 1)")
    return _finish(fig, ax, "t")


def draw_sweep(sweep: GuidanceSweep) -> bytes:
    """Rows: guidance scales; columns: classes or captions; one seed."""
    m = sweep.images.shape[1]
    cols = [textwrap.shorten(c, 42, placeholder="…") for c in sweep.columns]  # a caption: at most 3 lines of 14
    cols = ["\n".join(textwrap.wrap(c, 14)) for c in cols]
    rows = [f"S = {x:g}" for x in sweep.scales]
    return _grid_figure([(sweep.images.flatten(0, 1), m, cols, rows, "classifier-free guidance: one x_T per column")],
                        min_col_in=1.1 if any("\n" in c for c in cols) else 0.0)


def draw_fid_nfe(data: FidNfe) -> bytes:
    """FID against NFE (log-log), one line per sampler, and the real-data floor."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label in data.labels:
        pts = sorted((p.nfe, p.fid) for p in data.points if p.label == label)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    if data.floor is not None:
        ax.axhline(data.floor, color="grey", lw=0.8, label="real-data floor (train vs test)")
    p0 = data.points[0]
    ax.set_xscale("log")
    if all(p.fid > 0 for p in data.points):
        ax.set_yscale("log")
    ax.set_ylabel(f"FID ({p0.extractor})")
    ax.set_title(f"FID against NFE: step {p0.step}, {p0.n} samples", fontsize=10)
    return _finish(fig, [ax], "NFE per sample")


__all__ = ["draw_fid_nfe", "draw_forward", "draw_progressive", "draw_schedules", "draw_sweep", "draw_variance"]
