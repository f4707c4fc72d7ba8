"""The explain page (one self-contained HTML file, pages/html.py) and the folder it is written to: index.html and
one PNG per drawn figure, each written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .. import __version__
from ..atomic import atomic_write_bytes, atomic_write_text
from ..pages.html import Page
from .figures import Figure
from .plan import FIGURES, OWNED, Plan

if TYPE_CHECKING:
    from ..api import Run


def describe_run(run: Run) -> str:
    """One sentence: what the run is (family, space, condition, size) and the checkpoint drawn from."""
    loaded = run.loaded
    space = "" if loaded.codec.pixel_space else f" in the latent space of an autoencoder ({loaded.codec.kind} codec)"
    if loaded.superres is not None:
        condition = f", an x{loaded.superres.factor} upsampler"
    elif loaded.tokenizer is not None:
        condition = ", text-conditional"
    elif run.num_classes:
        condition = f", class-conditional ({run.num_classes} classes)"
    else:
        condition = ", unconditional"
    shape = "x".join(map(str, run.image_shape))
    return f"{run.path}: a {run.family} model{space}{condition}, {shape} images, checkpoint of step {run.step}."


def explain_page(run: Run, plan: Plan, figures: Sequence[Figure]) -> str:
    """The HTML page of the figures: each drawn one embedded with its caption, each other one with its reason."""
    page = Page(f"diffusionlab explain: {run.path.name}")
    page.paragraph(describe_run(run) + " Every figure below is drawn from this run's own process and network, the "
                   "way the papers that introduced them drew theirs.")
    page.contents([(f.key, f.title) for f in figures])
    for f in figures:
        page.heading(f.title, anchor=f.key)
        if f.png is not None:
            page.image(f.png, f.caption, alt=f.title)
        elif f.caption:
            page.paragraph(f.caption)
        for note in f.notes:
            page.note(note)
        if f.table is not None:
            page.table(*f.table)
        if f.commands:
            page.code("\n".join(f.commands))
    o = plan.options
    page.paragraph(f"Made by diffusionlab {__version__}: explain with seed {o.seed}, --n {o.n}, --frames {o.frames}, "
                   f"sampler {plan.sampler} with {plan.steps} steps" + (
                       "." if plan.progressive_sampler == plan.sampler else
                       f" ({plan.progressive_sampler} with {plan.progressive_steps} for the progressive figure)."))
    return page.html()


def write_explain(out: Path, figures: Sequence[Figure], html: str, overwrite: bool = False) -> list[Path]:
    """Write the drawn figures' PNGs and index.html into `out` (atomically, each); with `overwrite`, remove the
    figures an earlier explain left there that this one did not draw, so the folder matches its page."""
    out = Path(out)
    written = [atomic_write_bytes(out / FIGURES[f.key][0], f.png) for f in figures if f.png is not None]
    written.append(atomic_write_text(out / "index.html", html))
    if overwrite:
        for name in OWNED:
            if out / name not in written:
                (out / name).unlink(missing_ok=True)
    return written


__all__ = ["describe_run", "explain_page", "write_explain"]
