"""`diffusionlab explain` (explain/: the papers' figures from a run) and `diffusionlab report` (pages/report.py).

Each figure's data is checked against the maths it claims to draw: the forward strip is x_t = alpha(t) x0 + sigma(t)
eps with the run's own alpha_bar (column 0 the image itself), the schedule curves are schedules.py's closed forms,
the progressive figure ends in the samples `Run.sample` draws, the guidance rows are `Run.sample` at each scale, and
the learned-variance curve is the network's own output. The pages embed every image and reference no URL; bad input
is one line and exit 2 before any work.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusionlab as dl
from diffusionlab.cli import main
from diffusionlab.errors import ConfigError
from diffusionlab.evaluation.evaluate import load_split
from diffusionlab.explain import ExplainOptions, explain, plan_explain
from diffusionlab.explain.fid_nfe import fid_nfe
from diffusionlab.explain.forward import forward_strip
from diffusionlab.explain.progressive import progressive
from diffusionlab.explain.schedules import log_snr, schedule_curves
from diffusionlab.explain.sweep import guidance_sweep
from diffusionlab.explain.variance import variance_interpolation, variance_times
from diffusionlab.pages.eval_results import read_eval_results
from diffusionlab.paths import END_CLIP
from diffusionlab.processes.ddpm import q_sample
from diffusionlab.schedules import make_schedule

from helpers import TINY, TINY_NET, run_cli

URL = re.compile(r"https?://", re.IGNORECASE)


def _train(config: dict, path: Path, preset: str | None = None) -> dl.Run:
    return dl.train(config, path, preset=preset, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dl.Run]:
    """Tiny digits runs, 4 steps each: DDPM (fixed variance; preview grids at steps 2 and 4), class-conditional,
    Improved DDPM with a learned variance, flow matching, and a VAE."""
    root = tmp_path_factory.mktemp("explain")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    steps = {"steps": 4}
    out = {
        "uncond": _train({**TINY, "train": {**TINY["train"], **steps, "sample_every": 2}}, root / "uncond"),
        "cond": _train({**TINY, "train": {**TINY["train"], **steps, "class_conditional": True}}, root / "cond"),
        "learned": _train({**TINY, "process": {"T": 100, "variance": "learned", "loss": "hybrid"},
                           "train": {**TINY["train"], **steps}}, root / "learned"),
        "flow": _train({**TINY_NET, "train": {**TINY["train"], **steps}}, root / "flow", preset="digits-flow"),
        "vae": _train({"train": {"steps": 2, "checkpoint_every": 2}, "model": {"base_channels": 8, "latent_dim": 4}},
                      root / "vae", preset="digits-vae"),
    }
    yield out
    torch.set_num_threads(before)


def _test_images(run: dl.Run, n: int) -> torch.Tensor:
    return load_split(run.loaded.config.data, "test").images[:n]


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err
    assert needle in err, (needle, err)


# --- a. the forward process ---------------------------------------------------------------------------------------

def test_forward_strip_starts_at_the_image_and_adds_sigma_eps(runs: dict[str, dl.Run]):
    run = runs["uncond"]
    images = _test_images(run, 4)
    strip = forward_strip(run.loaded.process, run.loaded.codec, images, columns=10, seed=3)
    T = run.loaded.process.T
    assert strip.labels[0] == "t=0" and strip.labels[-1] == f"t={T}" and len(strip.labels) == 10
    assert torch.equal(strip.images[:, 0], images)  # column t = 0 is the image, exactly
    # DDPM: alpha(t)^2 is the discrete alpha_bar_t of the run's schedule (index 0: alpha_bar_0 = 1)
    abar = run.loaded.process.schedule.alpha_bar.numpy()[strip.t.astype(int)]
    assert np.allclose(strip.alpha**2, abar, rtol=0, atol=1e-12) and np.allclose(strip.sigma**2, 1 - abar, atol=1e-12)
    noise = strip.x_t - torch.as_tensor(strip.alpha, dtype=torch.float32).view(1, -1, 1, 1, 1) * strip.x0.unsqueeze(1)
    assert torch.equal(strip.x_t[:, 0], strip.x0) and float(noise[:, 0].abs().max()) == 0
    stds = noise.transpose(0, 1).flatten(1).std(dim=1).numpy()  # per column, over images and pixels
    # the pixel std of x_t - alpha x0 is sigma(t) within 25% (4 images x 64 pixels of eps ~ N(0, 1) per column)
    assert np.all(np.abs(stds[1:] / strip.sigma[1:] - 1) < 0.25)
    assert np.all(np.diff(strip.sigma) > 0) and np.all(np.diff(stds) > 0)  # the noise level grows with t
    for k in range(1, 10):
        assert torch.allclose(noise[:, k] / float(strip.sigma[k]), strip.eps, atol=1e-4)


def test_forward_strip_of_a_continuous_path_runs_from_data_to_noise(runs: dict[str, dl.Run]):
    run = runs["flow"]
    path = run.loaded.process.path
    images = _test_images(run, 3)
    strip = forward_strip(run.loaded.process, run.loaded.codec, images, columns=6, seed=0)
    assert strip.labels[0] == "data" and torch.equal(strip.images[:, 0], images)
    assert strip.t[0] == path.t_data and strip.t[-1] == path.t_noise  # flow matching: t = 1 (data) to 0 (noise)
    t = torch.as_tensor(strip.t[1:], dtype=torch.float64)
    assert np.allclose(strip.alpha[1:], path.alpha(t).numpy()) and np.allclose(strip.sigma[1:], path.sigma(t).numpy())
    assert np.all(np.diff(strip.sigma) > 0) and strip.alpha[-1] == 0
    assert torch.allclose(strip.x_t[:, -1], strip.eps)  # alpha(0) = 0, sigma(0) = 1: pure noise


def test_forward_strip_of_a_latent_run_noises_latents_and_decodes(tmp_path: Path):
    from test_latent import TINY_AE, TINY_LDM, ae_config  # noqa: F401 - the tiny autoencoder of the latent tests

    from diffusionlab.training.trainer import train_autoencoder

    torch.set_num_threads(1)
    ae = tmp_path / "ae"
    train_autoencoder(ae_config(4), ae, progress=False)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_LDM))
    assert main(["train", "--preset", "digits", "--latent", str(ae), "--config", str(tmp_path / "tiny.json"),
                 "--steps", "4", "--out", str(tmp_path / "ldm"), "--progress", "lines"]) == 0
    run = dl.load_run(tmp_path / "ldm")
    images = _test_images(run, 2)
    strip = forward_strip(run.loaded.process, run.loaded.codec, images, columns=5, seed=1)
    assert strip.latent and tuple(strip.x0.shape[1:]) == run.loaded.model_shape != run.image_shape
    assert torch.equal(strip.images[:, 0], images) and tuple(strip.images.shape[2:]) == run.image_shape
    assert torch.allclose(strip.x0, run.loaded.codec.encode(images.float() / 127.5 - 1))
    alpha = torch.as_tensor(strip.alpha[1:], dtype=torch.float32).view(1, -1, 1, 1, 1)
    noise = strip.x_t[:, 1:] - alpha * strip.x0[:, None]
    assert torch.allclose(noise / torch.as_tensor(strip.sigma[1:], dtype=torch.float32).view(1, -1, 1, 1, 1),
                          strip.eps[:, None].expand_as(noise), atol=1e-4)
    figures, html = explain(run, ExplainOptions(n=2, frames=3, steps=3, figures=("forward", "progressive")))
    assert [f.key for f in figures if f.png is not None] == ["forward", "progressive"]
    assert "latent space" in html and not URL.search(html)
    assert main(["report", str(ae)]) == 0 and (ae / "report.html").is_file()  # report takes an autoencoder run


# --- b. the schedules ----------------------------------------------------------------------------------------------

def test_schedule_curves_are_the_closed_forms(runs: dict[str, dl.Run]):
    process = runs["uncond"].loaded.process
    curves = schedule_curves(process)
    T = process.T
    t = np.arange(1, T + 1)
    assert curves.T == T and np.allclose(curves.u, t / T)
    # Ho et al.: beta linear from 1e-4 to 0.02 at T = 1000, both ends scaled by 1000 / T; alpha_bar = prod (1 - beta)
    betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
    assert np.allclose(curves.alpha_bar["linear"], np.cumprod(1 - betas), rtol=1e-12)
    # Nichol & Dhariwal eq. 17: f(t) / f(0), f = cos^2(pi/2 (t/T + s) / (1 + s)); beta clipped at 0.999 only at t = T
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * math.pi / 2) ** 2
    assert np.allclose(curves.alpha_bar["cosine"][:-1], (f / f[0])[1:-1], rtol=1e-9)
    assert np.array_equal(curves.alpha_bar["linear"], make_schedule("linear", T).alpha_bar[1:].numpy())
    assert curves.own_schedule == "cosine" and np.array_equal(curves.own_alpha_bar, curves.alpha_bar["cosine"])
    ab = curves.alpha_bar["linear"]
    assert np.allclose(log_snr(ab), np.log(ab / (1 - ab))) and np.all(np.diff(log_snr(ab)) < 0)


def test_a_continuous_runs_own_curve_is_its_path(runs: dict[str, dl.Run]):
    process = runs["flow"].loaded.process
    curves = schedule_curves(process)
    assert curves.T == 1000 and curves.own_schedule is None and "flow" in curves.own_label
    # flow matching in the VP view: alpha_bar = t^2 / (t^2 + (1 - (1 - sigma_min) t)^2), t from 1 (data) down
    t = 1 - curves.own_u * (1 - END_CLIP)  # paths.time_range: END_CLIP inside the noise end (sigma / alpha = inf)
    s = 1 - (1 - process.path.sigma_min) * t
    assert np.allclose(curves.own_alpha_bar, t**2 / (t**2 + s**2), rtol=1e-6)
    assert np.all(np.diff(curves.own_alpha_bar) < 0)


# --- c. progressive generation -------------------------------------------------------------------------------------

def test_progressive_frames_end_in_the_samples_run_sample_draws(runs: dict[str, dl.Run]):
    run = runs["uncond"]
    prog = progressive(run.loaded, "ddim", 5, frames=5, n=3, seed=2)
    ts = [int(label[2:]) for label in prog.labels]  # where x is after each of DDIM's 5 respaced steps of T = 100
    assert len(ts) == 5 and ts == sorted(ts, reverse=True) and ts[-1] == 0
    assert prog.x_t.dtype == torch.uint8 and tuple(prog.x_t.shape) == (5, 3, 1, 8, 8) == tuple(prog.x0_hat.shape)
    assert torch.equal(prog.samples, run.sample(3, sampler="ddim", steps=5, seed=2)) and prog.nfe == 5
    cond = runs["cond"]
    y = torch.tensor([0, 4, 9])
    prog = progressive(cond.loaded, "ddim", 3, frames=3, n=3, seed=1, y=y)
    assert torch.equal(prog.samples, cond.sample(3, sampler="ddim", steps=3, seed=1, classes=[0, 4, 9]))


def test_an_ode_solver_shows_no_x0_hat_and_flow_matching_is_drawn_with_euler(runs: dict[str, dl.Run]):
    flow = runs["flow"]
    prog = progressive(flow.loaded, "ode-euler", 4, frames=4, n=2, seed=0)  # integrates x_t: no x0_hat to show
    assert prog.x0_hat is None and prog.x_t.shape[:2] == (4, 2)
    assert torch.equal(prog.samples, flow.sample(2, sampler="ode-euler", steps=4, seed=0))
    plan = plan_explain(flow, ExplainOptions())  # flow matching's default is ode-euler
    assert (plan.sampler, plan.progressive_sampler) == ("ode-euler", "euler") and "euler" in plan.notes["progressive"][0]
    plan = plan_explain(flow, ExplainOptions(sampler="ode-rk4", steps=3))
    assert plan.progressive_sampler == "ode-rk4" and "only x_t is shown" in plan.notes["progressive"][0]
    figures, html = explain(flow, ExplainOptions(n=2, frames=3, steps=3, figures=("progressive",)))
    assert figures[2].data.x0_hat is not None and figures[2].data.sampler == "euler" and "x0_hat" in html


# --- d. the learned variance ---------------------------------------------------------------------------------------

def test_variance_curve_is_the_networks_output(runs: dict[str, dl.Run]):
    run = runs["learned"]
    loaded = run.loaded
    x0 = _test_images(run, 6).float() / 127.5 - 1
    curve = variance_interpolation(loaded, x0, None, points=7, seed=3)
    t_all = variance_times(100, 7).numpy()
    assert np.array_equal(curve.t, t_all) and t_all[0] == 1 and t_all[-1] == 100 and len(t_all) <= 7
    assert np.array_equal(t_all, np.unique(t_all.round())) and np.array_equal(variance_times(5, 50).numpy(),
                                                                                np.arange(1, 6))
    schedule = loaded.process.schedule
    for i in range(len(curve.t)):
        t = torch.full((6,), float(curve.t[i]))
        x_t = q_sample(schedule, x0, t.long(), curve.eps)  # the training loss's own x_t
        with torch.no_grad():
            v = (loaded.net(x_t, t.float())[:, 1:] + 1) / 2  # the second C = 1 channels, mapped to [0, 1]
        assert np.allclose(curve.v[i], v.flatten(1).mean(1).numpy(), atol=1e-6)
        assert curve.q10[i] <= curve.q90[i]
    k = curve.t.astype(int)  # the ends of eq. 15: log beta_t, and log beta~_t (log beta~_2 at t = 1, where beta~_1 = 0)
    assert np.allclose(curve.log_beta, np.log(schedule.betas.numpy()[k]), rtol=1e-6)
    assert np.allclose(curve.log_beta_tilde[1:], np.log(schedule.posterior_variance.numpy()[k[1:]]), rtol=1e-6)
    assert np.isclose(curve.log_beta_tilde[0], np.log(schedule.posterior_variance.numpy()[2]), rtol=1e-6)
    lo, hi = np.minimum(curve.log_beta, curve.log_beta_tilde), np.maximum(curve.log_beta, curve.log_beta_tilde)
    inside = (curve.v.min(1) >= 0) & (curve.v.max(1) <= 1)  # eq. 15 interpolates only while v stays in [0, 1]
    assert np.all((curve.log_sigma >= lo - 1e-6)[inside] & (curve.log_sigma <= hi + 1e-6)[inside])
    figures, html = explain(run, ExplainOptions(n=2, frames=3, steps=3, v_images=4, figures=("variance",)))
    assert figures[3].key == "variance" and figures[3].png is not None and html.count("data:image/png;base64,") == 1


def test_a_fixed_variance_run_has_no_variance_figure(runs: dict[str, dl.Run]):
    plan = plan_explain(runs["uncond"], ExplainOptions(steps=3))
    assert "variance" not in plan.draw and "fixed (beta_tilde)" in plan.omitted["variance"]
    assert "unconditional" in plan.omitted["guidance"]
    with pytest.raises(ConfigError, match="variance"):
        plan_explain(runs["uncond"], ExplainOptions(figures=("variance",)))


# --- e. the guidance sweep -----------------------------------------------------------------------------------------

def test_guidance_rows_are_run_sample_at_each_scale(runs: dict[str, dl.Run]):
    run = runs["cond"]
    sweep = guidance_sweep(run, [0, 1, 2], classes=[0, 3, 7], sampler="ddim", steps=3, seed=5)
    assert sweep.images.shape == (3, 3, 1, 8, 8) and sweep.columns == ["0", "3", "7"]
    for row, scale in enumerate([0.0, 1.0, 2.0]):
        same = run.sample(3, classes=[0, 3, 7], guidance_scale=scale, sampler="ddim", steps=3, seed=5)
        assert torch.equal(sweep.images[row], same), scale
    # S = 0 is the unconditional model: the same images as drawing without classes
    assert torch.equal(sweep.images[0], run.sample(3, sampler="ddim", steps=3, seed=5)) and sweep.nfe == [3, 3, 3]
    plan = plan_explain(run, ExplainOptions())
    assert plan.scales == (0.0, 1.0, 2.0, 4.0) and plan.classes == list(range(10))


# --- f. FID against NFE, and the report --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(runs: dict[str, dl.Run], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unconditional run scored by `evaluate --fid` (16 samples, DDIM-3), plus two more settings made from that
    file (DDIM-10, DDIM-20), one at another extractor, and one corrupt file."""
    path = runs["uncond"].path
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFUSIONLAB_CACHE", str(cache))
        assert main(["evaluate", str(path), "--fid", "--n", "16", "--sampler", "ddim", "--steps", "3",
                     "--json", str(path / "eval" / "eval-ddim3.json")]) == 0
    real = json.loads((path / "eval" / "eval-ddim3.json").read_text())
    for steps, fid in ((10, 50.0), (20, 40.0)):
        row = json.loads(json.dumps(real))
        row["sampling"].update(steps=steps, nfe=steps)
        row["quality"]["fid"] = fid
        (path / "eval" / "fid_nfe").mkdir(exist_ok=True)
        (path / "eval" / "fid_nfe" / f"ddim-{steps}-eta0-n16.json").write_text(json.dumps(row))
    other = json.loads(json.dumps(real))
    other["quality"]["extractor"] = "inception-v3 (pool3, 2048-d)"
    (path / "eval" / "eval-inception.json").write_text(json.dumps(other))
    (path / "eval" / "torn.json").write_text('{"quality": {"fid": 1')
    return path


def test_fid_against_nfe_comes_from_the_eval_files(runs: dict[str, dl.Run], evaluated: Path):
    results = read_eval_results(evaluated)
    assert [r.name for r in results] == ["eval-ddim3.json", "eval-inception.json", "fid_nfe/ddim-10-eta0-n16.json",
                                         "fid_nfe/ddim-20-eta0-n16.json", "torn.json"]
    assert results[-1].error is not None and results[-1].fid_point() is None
    real = json.loads((evaluated / "eval" / "eval-ddim3.json").read_text())
    data = fid_nfe(results)
    assert [(p.label, p.nfe, p.fid) for p in data.points] == [("ddim", 3, real["quality"]["fid"]), ("ddim", 10, 50.0),
                                                               ("ddim", 20, 40.0)]
    assert data.floor == real["quality"]["floor"]["fid"]
    assert [p.source for p in data.left_out] == ["eval-inception.json"]
    figures, html = explain(runs["uncond"], ExplainOptions(figures=("fid",)))
    fid = figures[-1]
    assert fid.png is not None and len(fid.table[1]) == 3 and "eval-inception.json" in fid.notes[-1]
    assert fid.png and base64.b64encode(fid.png).decode() in html


def test_without_eval_results_the_page_says_how_to_make_them(runs: dict[str, dl.Run]):
    figures, html = explain(runs["cond"], ExplainOptions(figures=("fid",)))
    assert figures[-1].png is None
    assert f"diffusionlab evaluate {runs['cond'].path} --fid --n 1000 --sampler ddim --steps 10" in figures[-1].commands
    assert "diffusionlab evaluate" in html and "--sampler ddim --steps 50" in html


def test_report_lists_config_curves_grids_evaluations_and_history(runs: dict[str, dl.Run], evaluated: Path,
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    res = run_cli("report", str(evaluated), "--out", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "r.html").read_text()
    for r in read_eval_results(evaluated):
        assert r.name in html
    assert "unreadable" in html and "inception-v3" in html and "real-data floor" in html
    grids = sorted((evaluated / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_00000002.png", "step_00000004.png"]
    positions = [html.index(base64.b64encode(g.read_bytes()).decode()) for g in grids]
    assert positions == sorted(positions)  # every grid embedded, in step order
    assert html.count("data:image/png;base64,") == len(grids) + 1  # and the training curves
    assert "started" in html and "class_conditional" in html and "label_dropout" in html  # history and config
    assert not URL.search(html) and "<script" not in html
    _one_line_error(capsys, ["report", str(evaluated), "--out", str(tmp_path / "r.html")], "--overwrite")
    assert main(["report", str(runs["vae"].path)]) == 0  # a baseline run too
    assert "vae" in (runs["vae"].path / "report.html").read_text()


# --- the command end to end, and bad input -------------------------------------------------------------------------

def test_explain_through_the_cli_writes_pngs_and_one_self_contained_page(runs: dict[str, dl.Run], tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]):
    run_dir = tmp_path / "cond"
    shutil.copytree(runs["cond"].path, run_dir)
    args = ("explain", str(run_dir), "--steps", "3", "--frames", "4", "--n", "2", "--scales", "0,1,3",
            "--classes", "0,1,2")
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    out = run_dir / "explain"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["forward.png", "guidance.png", "progressive.png", "schedules.png"]
    html = (out / "index.html").read_text()
    for name in pngs:  # each figure embedded byte for byte
        assert base64.b64encode((out / name).read_bytes()).decode() in html
    assert html.count("data:image/png;base64,") == len(pngs) and re.findall(r'src="([^"]{5})', html) == ["data:"] * 4
    assert not URL.search(html) and "<script" not in html and "<link" not in html
    assert "Not drawn: this run&#x27;s reverse variance is fixed" in html and "diffusionlab evaluate" in html
    _one_line_error(capsys, list(args), "--overwrite")  # an existing explain folder is kept
    (out / "variance.png").write_bytes(b"stale")  # an earlier explain's figure this one does not draw
    assert main([*args, "--overwrite", "--figures", "forward,schedules"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["forward.png", "schedules.png"]


@pytest.mark.parametrize("argv,needle", [
    (["explain", "{root}/no-such-run"], "not found"),
    (["explain", "{vae}"], "diffusionlab report"),
    (["explain", "{uncond}", "--scales", "1,-2"], "guidance scale"),
    (["explain", "{uncond}", "--scales", "a,b"], "comma-separated numbers"),
    (["explain", "{uncond}", "--scales", "nan"], "guidance scale"),
    (["explain", "{uncond}", "--scales", "0,1"], "unconditional"),
    (["explain", "{cond}", "--classes", "3,12"], "class 12 is out of range"),
    (["explain", "{cond}", "--prompt", "a two"], "--prompt is for a text run"),
    (["explain", "{uncond}", "--figures", "variance"], "reverse variance is fixed"),
    (["explain", "{uncond}", "--figures", "pie"], "expected figures"),
    (["explain", "{uncond}", "--sampler", "ddim", "--steps", "500"], "T = 100"),
    (["explain", "{uncond}", "--n", "0"], "--n"),
    (["explain", "{uncond}", "--out", "{uncond}/config.json"], "is a file"),
    (["report", "{root}/no-such-run"], "not found"),
    (["report", "{uncond}", "--out", "{root}/r.txt"], ".html"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(runs: dict[str, dl.Run], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], argv: list[str],
                                                          needle: str):
    paths = {"root": str(tmp_path), **{k: str(r.path) for k, r in runs.items()}}
    _one_line_error(capsys, [a.format(**paths) for a in argv], needle)
    assert not (runs["uncond"].path / "explain").exists() and not (runs["cond"].path / "explain").exists()
    assert not (tmp_path / "r.txt").exists()
