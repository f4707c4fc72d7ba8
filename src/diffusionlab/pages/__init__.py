"""Self-contained HTML pages about a run: the building blocks (html.py), the evaluation results a run keeps
(eval_results.py) and the run report (report.py, `diffusionlab report`). `explain/` draws its page with these."""

from .eval_results import EvalResult, read_eval_results
from .html import Page
from .report import build_report

__all__ = ["EvalResult", "Page", "build_report", "read_eval_results"]
