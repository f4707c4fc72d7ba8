"""The evaluation results a run keeps: every JSON under RUN/eval/ (`diffusionlab evaluate` writes
eval-stepN-TIME.json there, benchmarks/bench_fid_nfe.py one file per sampler setting in RUN/eval/fid_nfe/), read
without trusting them (a hand-edited or truncated file is listed as unreadable, not fatal), and summarised in the
words `evaluate` prints: what was measured, with which extractor, on how many samples, beside which real-data floor
(docs/maths.md section 10)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


def _num(x: Any, fmt: str = ".3f") -> str:
    """A number formatted, or '-' for anything else (a missing or hand-edited field)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "-"
    return format(x, fmt) if math.isfinite(x) else str(x)


def quality_line(q: dict[str, Any]) -> str:
    """FID, KID, precision and recall of one quality report, as `evaluate` prints them."""
    return (f"FID {_num(q.get('fid'))}, KID {_num(q.get('kid_mean'), '.4f')}, precision {_num(q.get('precision'))}, "
            f"recall {_num(q.get('recall'))}")


@dataclass(frozen=True)
class FidPoint:
    """One FID measurement of one sampler setting: what FID-against-NFE plots."""

    label: str  # the sampler and its options, e.g. "ddim", "ddim eta 1", "dpmpp2m sigma_spacing time"
    nfe: int
    fid: float
    floor: float | None  # the real-data floor FID at the same count (train vs test)
    extractor: str
    n: int  # generated samples scored
    step: int | None  # the checkpoint's training step
    reference: str
    source: str  # the file it came from, relative to RUN/eval

    @property
    def group(self) -> tuple[Any, ...]:
        """What must agree for two points to be comparable: checkpoint, extractor, sample count, reference set."""
        return (self.step, self.extractor, self.n, self.reference)


def sampler_label(sampling: dict[str, Any]) -> str:
    """The sampler of an `evaluate --fid` report and the options it ran with that differ from the defaults."""
    from ..sampling import SamplerOptions

    name = str(sampling.get("sampler") or "one network pass")
    defaults = {f.name: f.default for f in fields(SamplerOptions)}
    shown = [f"{k} {sampling[k]:g}" if isinstance(sampling[k], float) else f"{k} {sampling[k]}"
             for k in ("eta", "variance", "spacing", "sigma_spacing") if k in sampling and sampling[k] != defaults[k]]
    scale = sampling.get("guidance_scale")
    if isinstance(scale, (int, float)) and scale != 1:
        shown.append(f"guidance {scale:g}")
    return " ".join([name, *shown])


@dataclass
class EvalResult:
    """One JSON file of RUN/eval: its name (relative to RUN/eval), its contents, or why it cannot be read."""

    name: str
    data: dict[str, Any] | None
    error: str | None = None

    @property
    def step(self) -> int | None:
        """The training step of the checkpoint it evaluated."""
        step = (self.data or {}).get("checkpoint_step")
        return step if isinstance(step, int) else None

    def measures(self) -> list[dict[str, str]]:
        """One row per measurement in the file: what, the result, the extractor, the sample count, the floor."""
        d = self.data or {}
        rows: list[dict[str, str]] = []

        def quality(what: str, q: Any, prefix: str = "") -> None:
            if isinstance(q, dict):
                floor = q.get("floor") if isinstance(q.get("floor"), dict) else {}
                rows.append({"what": what, "result": prefix + quality_line(q),
                             "extractor": str(q.get("extractor", "-")),
                             "samples": f"{q.get('n_fake', '-')} vs {q.get('n_real', '-')} real",
                             "floor": f"FID {_num(floor.get('fid'))}" if floor else "not recorded"})

        for key, what in (("nll", "NLL bound"), ("nll_ode", "NLL (probability-flow ODE)")):
            r = d.get(key)
            if isinstance(r, dict):
                how = ", ".join(str(r[k]) for k in ("what", "method", "variance") if k in r)
                rows.append({"what": what, "result": f"{_num(r.get('bits_per_dim'), '.4f')} ± "
                             f"{_num(r.get('std_error'), '.4f')} bits/dim" + (f" ({how})" if how else ""),
                             "extractor": "-", "samples": f"{r.get('n_images', '-')} {r.get('split', '')} images",
                             "floor": "-"})
        if isinstance(d.get("quality"), dict):
            s = d.get("sampling") if isinstance(d.get("sampling"), dict) else None
            how = (f"{sampler_label(s)}, {s.get('steps', '-')} steps, NFE {s.get('nfe', '-')}: " if s
                   else "samples from a file: ")
            quality("sample quality", d["quality"], how)
        r = d.get("reconstruction")
        if isinstance(r, dict):
            quality("reconstruction", r.get("quality"), f"PSNR {_num(r.get('psnr_mean'), '.2f')} dB, r")
        r = d.get("superres")
        if isinstance(r, dict):
            for name in ("model", "bicubic"):
                part = r.get(name) if isinstance(r.get(name), dict) else {}
                quality(f"super-resolution x{r.get('factor', '?')}: {name}", part.get("quality"),
                        f"PSNR {_num(part.get('psnr_mean'), '.2f')} dB, SSIM {_num(part.get('ssim_mean'), '.4f')}, ")
        return rows

    def fid_point(self) -> FidPoint | None:
        """The (sampler, NFE, FID) of a file that scored generated samples, else None."""
        d = self.data or {}
        q, s = d.get("quality"), d.get("sampling")
        if not (isinstance(q, dict) and isinstance(s, dict)):
            return None
        nfe, fid = s.get("nfe"), q.get("fid")
        if not isinstance(nfe, int) or isinstance(fid, bool) or not isinstance(fid, (int, float)):
            return None
        floor = q.get("floor", {}).get("fid") if isinstance(q.get("floor"), dict) else None
        return FidPoint(sampler_label(s), nfe, float(fid), floor if isinstance(floor, (int, float)) else None,
                        str(q.get("extractor", "?")), int(q.get("n_fake") or 0), self.step,
                        str(q.get("reference", "")), self.name)


def read_eval_results(run_dir: str | Path) -> list[EvalResult]:
    """Every *.json under RUN/eval (sub-folders too), by name; an unreadable one carries its error instead."""
    root = Path(run_dir) / "eval"
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.rglob("*.json") if p.is_file() and not p.name.startswith(".")):
        name = path.relative_to(root).as_posix()
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            out.append(EvalResult(name, None, f"unreadable ({type(e).__name__})"))
            continue
        out.append(EvalResult(name, data, None) if isinstance(data, dict) else
                   EvalResult(name, None, "not a JSON object"))
    return out


__all__ = ["EvalResult", "FidPoint", "quality_line", "read_eval_results", "sampler_label"]
