"""What `explain` will draw for a run, decided and checked before any work: which figures apply (and why the others
do not), the sampler and step count, the guidance scales and the sweep's columns. Every bad option is one
ConfigError line; a figure asked for by name that cannot apply to the run is one too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .sweep import DEFAULT_SCALES, MAX_COLUMNS

if TYPE_CHECKING:
    from ..api import Run

# The figures, in page order: key -> (file name, title)
FIGURES = {
    "forward": ("forward.png", "The forward process on a real image"),
    "schedules": ("schedules.png", "Noise schedules: alpha_bar and log-SNR"),
    "progressive": ("progressive.png", "Progressive generation: x_t and x0_hat"),
    "variance": ("variance.png", "The learned variance: v over t"),
    "guidance": ("guidance.png", "Classifier-free guidance sweep"),
    "fid": ("fid_nfe.png", "FID against NFE"),
}
OWNED = ("index.html", *(name for name, _ in FIGURES.values()))  # what an explain folder holds
MAX_N, MAX_FRAMES, MAX_SCALES, MAX_V_IMAGES = 16, 50, 8, 10_000


@dataclass(frozen=True)
class ExplainOptions:
    """What the user asks of `explain` (the command's flags)."""

    n: int = 4  # real images in the forward strip, samples in the progressive figure, captions in a text sweep
    frames: int = 10  # columns of the forward strip and of the progressive figure
    seed: int = 0
    sampler: str | None = None  # progressive figure and guidance sweep (default: the family's own)
    steps: int | None = None
    scales: tuple[float, ...] | None = None  # the sweep's rows (default 0, 1, 2, 4)
    classes: tuple[int, ...] | None = None  # the sweep's columns for a class-conditional run (default: all, <= 10)
    prompts: tuple[str, ...] | None = None  # the sweep's columns for a text run (default: test captions)
    v_images: int = 64  # real images averaged in the learned-variance figure
    figures: tuple[str, ...] | None = None  # None: every figure that applies


@dataclass
class Plan:
    """The checked, resolved request: the figures to draw and why the others are left out."""

    options: ExplainOptions
    sampler: str  # the guidance sweep's (and by default the progressive figure's)
    steps: int
    draw: list[str]
    progressive_sampler: str = ""
    progressive_steps: int = 0
    omitted: dict[str, str] = field(default_factory=dict)
    scales: tuple[float, ...] = DEFAULT_SCALES
    classes: list[int] | None = None
    prompts: list[str] | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)  # figure -> remarks shown under it


def _check_counts(o: ExplainOptions) -> None:
    for name, value, lo, hi in (("--n", o.n, 1, MAX_N), ("--frames", o.frames, 2, MAX_FRAMES),
                                ("--v-images", o.v_images, 2, MAX_V_IMAGES)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{name} must be a whole number in {lo}..{hi:,}, got {value!r}")
    unknown = [f for f in (o.figures or ()) if f not in FIGURES]
    if unknown:
        raise ConfigError(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    if o.figures is not None and not o.figures:
        raise ConfigError("--figures names no figure")
    if o.scales is not None:
        if not o.scales or len(o.scales) > MAX_SCALES:
            raise ConfigError(f"--scales takes 1 to {MAX_SCALES} guidance scales, got {len(o.scales)}")
        bad = [s for s in o.scales if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0)]
        if bad:
            raise ConfigError(f"a guidance scale must be a finite number >= 0, got {bad[0]}")


def _guidance(run: Run, o: ExplainOptions, plan: Plan) -> str | None:
    """Resolve the sweep's rows and columns; None when it applies, else why it does not."""
    text = run.loaded.tokenizer is not None
    k = run.num_classes
    if run.loaded.superres is not None:
        why = "this run is an upsampler: its condition is a low-resolution image, which guidance does not sweep"
    elif not text and not k:
        why = ("this run is unconditional: guidance needs a class-conditional (--class-conditional) or text "
               "(--text-conditional) run")
    else:
        why = None
    asked = [flag for flag, value in (("--scales", o.scales), ("--classes", o.classes), ("--prompt", o.prompts))
             if value is not None]
    if why is not None:
        if asked:
            raise ConfigError(f"{asked[0]} sets the guidance sweep, which does not apply: {why}")
        return why
    plan.scales = tuple(float(s) for s in (o.scales or DEFAULT_SCALES))
    if text:
        if o.classes is not None:
            raise ConfigError("--classes is for a class-conditional run; this is a text run: use --prompt")
        prompts = list(o.prompts) if o.prompts is not None else _test_captions(run, o.n)
        if not prompts and o.prompts is None:
            raise ConfigError("the run's test split has no captions to sweep: give --prompt TEXT (repeat it)")
        if not prompts or any(not p.strip() for p in prompts) or len(prompts) > MAX_COLUMNS:
            raise ConfigError(f"--prompt: give 1 to {MAX_COLUMNS} non-empty prompts")
        plan.prompts = prompts
    else:
        if o.prompts is not None:
            raise ConfigError("--prompt is for a text run; this run is class-conditional: use --classes")
        classes = list(o.classes) if o.classes is not None else list(range(min(k, MAX_COLUMNS)))
        if not classes or len(classes) > MAX_COLUMNS:
            raise ConfigError(f"--classes: give 1 to {MAX_COLUMNS} classes")
        bad = [c for c in classes if not 0 <= c < k]
        if bad:
            raise ConfigError(f"--classes: class {bad[0]} is out of range: the model has classes 0..{k - 1}")
        plan.classes = classes
    dropout = run.config.get("train", {}).get("label_dropout")
    if dropout == 0:
        plan.notes.setdefault("guidance", []).append(
            "This run was trained with label_dropout 0: it never saw the null condition, so the unconditional model "
            "(S = 0) and every S != 1 row are extrapolations it was not trained for.")
    return None


def _test_captions(run: Run, n: int) -> list[str]:
    """The first n distinct captions of the run's test split (the default columns of a text sweep)."""
    from ..evaluation.evaluate import load_split

    captions = load_split(run.loaded.config.data, "test").captions or []
    return list(dict.fromkeys(captions))[: min(n, MAX_COLUMNS)]


def _progressive_sampler(run: Run, o: ExplainOptions, plan: Plan) -> None:
    """The progressive figure shows x0_hat, which a time-space ode-* solver does not report: unless the user chose
    one, a family whose default is one (flow matching) is drawn with euler, the same probability-flow ODE in sigma
    space (Karras et al. 2022)."""
    from ..sampling.spec import sampler_and_steps
    from .progressive import reports_x0

    if reports_x0(plan.sampler):
        return
    if o.sampler is None:
        plan.progressive_sampler, plan.progressive_steps = sampler_and_steps(run.loaded.process, "euler", o.steps)
        note = (f"The run's default sampler {plan.sampler} integrates x_t in the path's time and reports no x0_hat; "
                "this figure is drawn with euler, the same probability-flow ODE in sigma space (Karras et al. 2022). "
                "--sampler chooses another.")
    else:
        note = (f"{plan.sampler} integrates x_t in the path's time and reports no x0_hat, so only x_t is shown; a "
                "sigma-space sampler (euler, heun, dpmpp2m) shows both.")
    plan.notes.setdefault("progressive", []).append(note)


def plan_explain(run: Run, options: ExplainOptions) -> Plan:
    """Check `options` against the run and decide the figures; one-line ConfigErrors, before any work."""
    if run.baseline:
        raise ConfigError(f"explain draws the diffusion papers' figures; {run.path} is a {run.family} run: use "
                          f"`diffusionlab report {run.path}`")
    _check_counts(options)
    sampler, steps = run.loaded.sampler_and_steps(options.sampler, options.steps)
    wanted = list(options.figures) if options.figures is not None else list(FIGURES)
    plan = Plan(options, sampler, steps, [], sampler, steps)
    process = run.loaded.process
    _progressive_sampler(run, options, plan)
    why_not = {"variance": None if process.learned_variance else
               f"this run's reverse variance is fixed ({process.variance}); only an Improved DDPM run trained with "
               "variance 'learned' (--variance learned, loss hybrid or vlb) outputs v",
               "guidance": _guidance(run, options, plan)}
    for key in FIGURES:
        if key not in wanted:
            plan.omitted[key] = "not asked for (--figures)"
        elif why_not.get(key) is not None:
            if options.figures is not None:
                raise ConfigError(f"--figures {key}: {why_not[key]}")
            plan.omitted[key] = why_not[key]  # type: ignore[assignment]
        else:
            plan.draw.append(key)
    return plan


__all__ = ["ExplainOptions", "FIGURES", "MAX_FRAMES", "MAX_N", "MAX_SCALES", "MAX_V_IMAGES", "OWNED", "Plan",
           "plan_explain"]
