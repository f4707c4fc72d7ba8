"""`diffusionlab report`: everything a run directory records, on one self-contained HTML page.

The run's config (config.json), its training curves (metrics.jsonl: the loss and the other logged terms, the learning
rate, the speed), the preview grids drawn during training (samples/step_N.png, in step order), every evaluation result
(eval/**/*.json, with its extractor, sample count and real-data floor), the post-hoc EMA reconstructions and their
scores (posthoc_ema/: `diffusionlab posthoc-ema`) and its history (history.jsonl: started,
resumed, config changes, rollbacks, interrupts). It reads files only, so it works for every kind of run (diffusion,
autoencoder, GAN, VAE, flow) and loads no model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..runs import read_config_json
from ..training.checkpoint import list_checkpoints
from ..training.posthoc_ema import OUTPUT_DIR as POSTHOC_DIR
from ..training.posthoc_ema import SNAPSHOT_DIR
from ..training.rundir import HISTORY, METRICS, read_jsonl
from ..viz import metrics_png
from .eval_results import read_eval_results
from .html import Page

_GRID = re.compile(r"^step_(\d+)\.png$")


def run_kind(config: dict[str, Any]) -> str:
    """What a run is, from its config: 'diffusion (ddpm)', 'autoencoder', 'gan', ..."""
    kind = config.get("kind")
    if isinstance(kind, str):
        return kind
    process = config.get("process") if isinstance(config.get("process"), dict) else {}
    return f"diffusion ({process.get('method', '?')})"


def preview_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """RUN/samples/step_N.png as (N, path), in step order."""
    folder = Path(run_dir) / "samples"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _GRID.match(p.name)) and p.is_file()]
    return sorted(found)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    h, rest = divmod(int(seconds), 3600)
    return f"{h} h {rest // 60} min" if h else f"{rest // 60} min {rest % 60} s"


def _summary(run_dir: Path, config: dict[str, Any], metrics: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The run at a glance: kind, data, checkpoints, steps, images seen, training time."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    ckpts = list_checkpoints(run_dir)
    last = metrics[-1] if metrics else {}
    return [("run directory", str(run_dir)), ("kind", run_kind(config)),
            ("data", f"{data.get('source', '-')} (split {data.get('split', '-')})"),
            ("checkpoints", f"{len(ckpts)}, newest at step {ckpts[-1][0]}" if ckpts else "none"),
            ("last logged step", str(last.get("step", "-"))), ("images seen", str(last.get("images_seen", "-"))),
            ("training time", _duration(last.get("elapsed_s")))]


def _json_or_none(path: Path) -> Any:
    """The parsed JSON file, or None when it is unreadable (the page shows what it can)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _posthoc_section(page: Page, run_dir: Path) -> None:
    """The reconstructed EMA lengths (state.json of each folder), their profile plots and their FID tables."""
    page.heading("Post-hoc EMA", anchor="posthoc")
    out = run_dir / POSTHOC_DIR
    if not out.is_dir():
        how = (f"`diffusionlab posthoc-ema {run_dir} --sigma-rel 0.05,0.1,0.2 --fid 2000` rebuilds and scores "
               "averaging lengths" if (run_dir / SNAPSHOT_DIR).is_dir() else
               "Train with --posthoc-ema 0.05,0.1 to choose the EMA length after training (README)")
        page.note(f"No reconstructions in {out}. {how}.")
        return
    rows = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        state = _json_or_none(folder / "state.json")
        rec = state.get("posthoc_ema") if isinstance(state, dict) else None
        rec = rec if isinstance(rec, dict) else {}  # an edited or foreign state.json shows dashes, not a traceback
        rows.append([folder.name, rec.get("sigma_rel", "-"), rec.get("step", "-"),
                     "-" if rec.get("fit_error") is None else f"{100 * rec['fit_error']:.2f}%",
                     rec.get("snapshots", "-"), ", ".join(map(str, rec.get("tracked_sigma_rels", [])))])
    if rows:
        page.paragraph(f"Checkpoint folders in {out} (use one with --checkpoint); the fit error bounds how far the "
                       "rebuilt average can be from the exact one (docs/maths.md section 13).")
        page.table(["folder", "sigma_rel", "step", "profile fit error", "snapshots", "tracked sigma_rel"], rows)
    for png in sorted(out.glob("profiles-step_*.png")):
        page.image(png.read_bytes(), f"{png.name}: each target profile against its least-squares reconstruction")
    for path in sorted(out.glob("fid-step_*.json")):
        scores = _json_or_none(path)
        if not isinstance(scores, dict) or not isinstance(scores.get("results"), list):
            page.note(f"{path.name}: unreadable")
            continue
        page.paragraph(f"{path.name}: {scores.get('n')} samples, {scores.get('sampler')} with {scores.get('steps')} "
                       f"steps, seed {scores.get('seed')}.")
        page.table(["weights", "FID", "real-data floor", "precision", "recall"],
                   [[r.get("weights", "-"), _fmt(r.get("fid")), _fmt((r.get("floor") or {}).get("fid")),
                     _fmt(r.get("precision"), ".3f"), _fmt(r.get("recall"), ".3f")] for r in scores["results"]])


def _fmt(x: Any, spec: str = ".2f") -> str:
    """A number with `spec`, or '-'."""
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def build_report(run_dir: str | Path) -> str:
    """The report page of a run directory, as HTML (one-line errors for a path that is not a run)."""
    run_dir = Path(run_dir)
    config = read_config_json(run_dir)
    metrics = read_jsonl(run_dir / METRICS)
    history = read_jsonl(run_dir / HISTORY)
    grids = preview_grids(run_dir)
    results = read_eval_results(run_dir)
    page = Page(f"Run report: {run_dir.name}")
    page.contents([("summary", "Summary"), ("config", "Config"), ("training", "Training curves"),
                   ("grids", f"Preview grids ({len(grids)})"), ("eval", f"Evaluation results ({len(results)})"),
                   ("posthoc", "Post-hoc EMA"), ("history", f"History ({len(history)} events)")])

    page.heading("Summary", anchor="summary")
    page.table(["", ""], _summary(run_dir, config, metrics))

    page.heading("Config", anchor="config")
    page.paragraph(f"{run_dir / 'config.json'}: the settings the run was trained with.")
    page.code(json.dumps(config, indent=2, sort_keys=False))

    page.heading("Training curves", anchor="training")
    png = metrics_png(metrics, detail=True)
    if png is None:
        page.note(f"{run_dir / METRICS} holds no loss rows yet: the curves appear after the first log_every steps.")
    else:
        page.image(png, f"From {METRICS} ({len(metrics)} rows): the loss per logged step (and its running mean), "
                        "the other logged terms, the learning rate (with warm-up) and the speed in iterations/s.")

    page.heading("Preview grids", anchor="grids")
    if not grids:
        page.note("No preview grids in samples/: training draws one every sample_every steps and at the end.")
    for step, path in grids:
        page.image(path.read_bytes(), f"step {step} ({path.name}): samples of the EMA weights")

    page.heading("Evaluation results", anchor="eval")
    if not results:
        page.note(f"No results in {run_dir / 'eval'}: produce them with `diffusionlab evaluate {run_dir} --fid` "
                  "(and --nll for a likelihood).")
    rows = []
    for r in results:
        if r.error is not None:
            rows.append([r.name, "-", "-", r.error, "-", "-", "-"])
            continue
        measures = r.measures() or [{"what": "-", "result": "no measurement recognised", "extractor": "-",
                                     "samples": "-", "floor": "-"}]
        for m in measures:
            rows.append([r.name, "-" if r.step is None else str(r.step), m["what"], m["result"], m["extractor"],
                         m["samples"], m["floor"]])
    if rows:
        page.table(["file (in eval/)", "checkpoint step", "what", "result", "extractor", "samples",
                    "real-data floor"], rows)

    _posthoc_section(page, run_dir)

    page.heading("History", anchor="history")
    if not history:
        page.note(f"No events in {run_dir / HISTORY}.")
    else:
        page.table(["time", "event", "step", "details"],
                   [[e.get("time", "-"), e.get("event", "-"), e.get("step", "-"),
                     "; ".join(f"{k}: {v}" for k, v in e.items() if k not in ("time", "event", "step"))]
                    for e in history])
    return page.html()


__all__ = ["build_report", "preview_grids", "run_kind"]
