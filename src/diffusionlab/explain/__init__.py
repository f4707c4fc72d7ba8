"""`diffusionlab explain`: the figures of the source papers, drawn from the user's own trained diffusion run.

    forward.py      the forward process on a real image (DDPM eq. 4; any family's path, latents decoded)
    schedules.py    alpha_bar and log-SNR of the linear and cosine schedules and the run's own (iDDPM Fig. 5)
    progressive.py  x_t and x0_hat along one sampling run (DDPM Fig. 6)
    variance.py     the learned interpolation v over t (iDDPM eq. 15), for a learned-variance run
    sweep.py        a classifier-free guidance sweep (Ho & Salimans 2022), for a conditional run
    fid_nfe.py      FID against NFE from the run's evaluation results (or the commands that make them)
    draw.py         the drawings (matplotlib, Agg); the modules above compute only data
    plan.py         what to draw, checked before any work (ExplainOptions -> Plan)
    figures.py      data + drawing + caption of each figure;  page.py: the HTML page and its folder

    import diffusionlab as dl
    from diffusionlab.explain import ExplainOptions, explain
    figures, html = explain(dl.load_run("runs/digits"), ExplainOptions(seed=0))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .figures import Figure, render_figures
from .page import explain_page, write_explain
from .plan import FIGURES, OWNED, ExplainOptions, Plan, plan_explain

if TYPE_CHECKING:
    from ..api import Run


def explain(run: Run, options: ExplainOptions | None = None) -> tuple[list[Figure], str]:
    """The figures of a run (checked first: one-line ConfigErrors) and the HTML page that shows them."""
    plan = plan_explain(run, options or ExplainOptions())
    figures = render_figures(run, plan)
    return figures, explain_page(run, plan, figures)


__all__ = ["FIGURES", "OWNED", "ExplainOptions", "Figure", "Plan", "explain", "explain_page", "plan_explain",
           "render_figures", "write_explain"]
