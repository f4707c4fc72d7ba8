"""Post-hoc EMA (EDM2, docs/maths.md section 13): the power-function EMA against its closed-form profile, the exact
profile inner products, the least-squares reconstruction against an average tracked directly, the snapshots a
training run writes (bit-exact across a resume), and the `posthoc-ema` command."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file
from torch import nn

from diffusionlab.errors import CheckpointError, ConfigError
from diffusionlab.training.ema import (
    EMA,
    SIGMA_REL_MAX,
    PowerEMA,
    gamma_to_sigma_rel,
    profile,
    sigma_rel_to_gamma,
)
from diffusionlab.training.posthoc_ema import (
    list_snapshots,
    profile_gram,
    reconstruct,
    set_aside_after,
    snapshot_path,
    solve,
    write_snapshot,
)


class Vector(nn.Module):
    """A 'model' whose weights are one float64 vector we set by hand: theta_tau after update tau."""

    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))


def trajectory(n: int, d: int = 5, seed: int = 0) -> torch.Tensor:
    """A random-walk weight trajectory theta_1..theta_n (rows), like SGD iterates."""
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.randn(n, d, generator=g, dtype=torch.float64), dim=0) / math.sqrt(n)


def test_sigma_rel_and_gamma_are_inverse_and_match_edm2():
    # EDM2 (Karras et al. 2024, section 3.1): sigma_rel 0.05 <-> gamma 16.97, sigma_rel 0.10 <-> gamma 6.94.
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for s in np.linspace(0.01, SIGMA_REL_MAX, 25):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(float(s))) == pytest.approx(s, rel=1e-9)
    assert sigma_rel_to_gamma(SIGMA_REL_MAX) == pytest.approx(0.0, abs=1e-9)  # the uniform average
    for bad in (0.0, -0.1, 0.3, float("nan")):
        with pytest.raises(ValueError):
            sigma_rel_to_gamma(bad)


def test_profile_sums_to_one_and_has_the_closed_form_width():
    for t, gamma in ((1, 3.0), (10, 0.0), (1000, 6.94), (5000, 16.97)):
        w = profile(t, gamma, np.arange(1, t + 1))
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w >= 0).all()
    # At large t the discrete tau^gamma has the continuous profile's relative std sqrt((g+1)/((g+2)^2 (g+3))).
    t = 20000
    taus = np.arange(1, t + 1)
    for s in (0.05, 0.1, 0.2):
        w = profile(t, sigma_rel_to_gamma(s), taus)
        mean = (w * taus / t).sum()
        assert math.sqrt((w * (taus / t) ** 2).sum() - mean**2) == pytest.approx(s, rel=1e-3)
    assert profile(5, 2.0, np.array([6, 7])).tolist() == [0.0, 0.0]


def test_power_ema_weighs_each_update_by_its_profile():
    """The recursion beta_t = (1 - 1/t)^(gamma+1) gives exactly sum_tau p_t(tau) theta_tau (the telescoping product)."""
    thetas = trajectory(300)
    model = Vector(thetas.shape[1])
    ema = PowerEMA(model, 0.1)
    for i, theta in enumerate(thetas):
        model.w.data.copy_(theta)
        model.count.fill_(i + 1)
        ema.update(model)
        if i + 1 in (1, 17, 300):
            t = i + 1
            expected = torch.from_numpy(profile(t, ema.gamma, np.arange(1, t + 1))) @ thetas[:t]
            assert torch.allclose(ema.shadow["w"], expected, rtol=0, atol=1e-12)
    assert ema.shadow["count"].item() == 300  # integer buffers are copied, not averaged


def test_the_warm_up_ema_is_a_power_profile_of_degree_8():
    """EMA's warm-up d_t = t / (t + 9) (update t, from 1) telescopes: after T updates theta_tau (tau = 0 the initial
    weights) weighs 9 (tau+1)...(tau+8) / ((T+1)...(T+9)), a discrete tau^8. So until d_t reaches `decay`, the preset's
    EMA is EDM2's power EMA with gamma = 8, sigma_rel 0.0905 (docs/maths.md section 13)."""
    T = 400
    thetas = trajectory(T + 1, seed=3)  # row 0: the initial weights
    model = Vector(thetas.shape[1])
    model.w.data.copy_(thetas[0])
    ema = EMA(model, decay=0.999)
    for theta in thetas[1:]:
        model.w.data.copy_(theta)
        ema.update(model)
    taus = np.arange(T + 1)
    rising = lambda x, k: np.prod([x + i for i in range(k)], axis=0)  # noqa: E731 - (x)(x+1)...(x+k-1)
    w = 9 * rising(taus + 1.0, 8) / rising(T + 1.0, 9)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(ema.shadow["w"], torch.from_numpy(w) @ thetas, rtol=0, atol=1e-12)
    # Its relative width tends to that of tau^8 (0.0905), which EDM2's sweep and ours put at the best length.
    t = 8000
    taus = np.arange(t + 1)
    w = 9 * rising(taus + 1.0, 8) / rising(t + 1.0, 9)
    mean = (w * taus / t).sum()
    assert math.sqrt((w * (taus / t) ** 2).sum() - mean**2) == pytest.approx(gamma_to_sigma_rel(8.0), rel=2e-3)
    assert gamma_to_sigma_rel(8.0) == pytest.approx(0.0905, abs=1e-4)
    # The warm-up ends once (1 + n) / (10 + n) >= decay: after 8,990 updates for decay 0.999.
    ema.num_updates = 8989
    assert ema.current_decay() < 0.999
    ema.num_updates = 8991
    assert ema.current_decay() == 0.999


def test_profile_gram_is_the_exact_sum_over_updates():
    sources = [(40, 16.97), (100, 6.94), (100, 16.97), (250, 6.94), (37, 0.0)]
    taus = np.arange(1, 251)
    vectors = np.stack([profile(t, g, taus) for t, g in sources])
    brute = vectors @ vectors.T
    assert np.allclose(profile_gram(sources, sources), brute, rtol=1e-10, atol=0)
    # Long runs neither overflow nor lose the small early weights: gamma 50 at t = 10^6.
    big = profile_gram([(10**6, 50.0), (500_000, 50.0)], [(10**6, 50.0)])
    assert np.isfinite(big).all() and big[0, 0] > 0 and big[1, 0] > 0


def test_a_target_that_is_a_snapshot_is_rebuilt_exactly():
    sources = [(t, g) for t in (50, 100, 150, 200) for g in (16.97, 6.94)]
    x, err = solve(sources, (200, 6.94))
    assert err < 1e-6
    assert x[-1] == pytest.approx(1.0, abs=1e-5) and np.abs(x[:-1]).max() < 1e-5


def test_reconstruction_is_within_its_fit_error_of_the_directly_tracked_average(tmp_path: Path):
    """Track sigma_rel 0.05 and 0.10 with snapshots every 25 updates, rebuild 0.07 and 0.15 at update 400, and
    compare with PowerEMAs of those lengths tracked directly. By Cauchy-Schwarz the error in each coordinate is at
    most ||p_rebuilt - p_target|| ||theta_1..theta_t|| = fit_error ||p_target|| ||theta||."""
    thetas = trajectory(400, d=7, seed=3)
    model = Vector(thetas.shape[1])
    tracked = [PowerEMA(model, 0.05), PowerEMA(model, 0.10)]
    direct = {s: PowerEMA(model, s) for s in (0.07, 0.15)}
    for i, theta in enumerate(thetas):
        model.w.data.copy_(theta)
        for e in (*tracked, *direct.values()):
            e.update(model)
        if (i + 1) % 25 == 0:
            write_snapshot(tmp_path, i + 1, tracked)
    for s, ema in direct.items():
        rec = reconstruct(tmp_path, s)
        assert rec.step == 400 and rec.t == 400 and rec.gamma == pytest.approx(ema.gamma)
        assert rec.fit_error < 0.05  # 0.15 lies outside [0.05, 0.10]: still a close fit from 32 averages
        target_norm = math.sqrt(float(profile_gram([(400, ema.gamma)], [(400, ema.gamma)])[0, 0]))
        bound = rec.fit_error * target_norm * float(thetas.norm(dim=0).max()) + 1e-9
        error = (rec.weights["w"] - ema.shadow["w"]).abs().max().item()
        assert error <= bound, (s, error, bound)
        # and the rebuilt average is much closer to the tracked one than the two tracked ends are to each other
        assert error < 0.2 * (tracked[0].shadow["w"] - tracked[1].shadow["w"]).abs().max().item()
    # An earlier step uses only the snapshots up to it.
    assert reconstruct(tmp_path, 0.1, step=200).weights["w"].allclose(
        load_file(str(snapshot_path(tmp_path, 200)))["1/w"], atol=1e-6)


def test_snapshots_list_set_aside_and_bad_files(tmp_path: Path):
    model = Vector(3)
    emas = [PowerEMA(model, 0.05)]
    for step in (2, 4, 6):
        emas[0].update(model)
        write_snapshot(tmp_path, step, emas)
    assert [s.step for s in list_snapshots(tmp_path)] == [2, 4, 6]
    assert list_snapshots(tmp_path)[1].profiles[0].t == 2
    moved = set_aside_after(tmp_path, 3)
    assert [p.name for p in moved] == ["step_00000004.safetensors", "step_00000006.safetensors"]
    assert [s.step for s in list_snapshots(tmp_path)] == [2]
    with pytest.raises(ConfigError, match="no EMA snapshot at step 4"):
        reconstruct(tmp_path, 0.05, step=4)
    with pytest.raises(ConfigError, match="sigma_rel"):
        reconstruct(tmp_path, 0.5)
    with pytest.raises(ConfigError, match="no EMA snapshots"):
        reconstruct(tmp_path / "empty", 0.05)
    snapshot_path(tmp_path, 8).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="step_00000008"):
        list_snapshots(tmp_path)


def _train(out: Path, tiny_config: Path, *extra: str) -> None:
    r = run_cli("train", "--config", str(tiny_config), "--out", str(out), "--posthoc-ema", "0.05,0.2",
                "--posthoc-ema-every", "2", "--checkpoint-every", "3", *extra)
    assert r.returncode == 0, r.stderr


def test_training_writes_snapshots_and_resumes_them_bit_for_bit(tmp_path: Path, tiny_config: Path):
    full, split = tmp_path / "full", tmp_path / "split"
    _train(full, tiny_config, "--steps", "7")
    # every posthoc_ema_every steps, at every checkpoint and at the end
    assert [s.step for s in list_snapshots(full)] == [2, 3, 4, 6, 7]
    assert [p.sigma_rel for p in list_snapshots(full)[-1].profiles] == [0.05, 0.2]
    _train(split, tiny_config, "--steps", "4")
    # a killed run's snapshot past its last checkpoint (step 3 here, after the 4-step run's step-4 checkpoint
    # is removed) is set aside on resume, never mixed in
    import shutil

    shutil.rmtree(split / "checkpoints" / "step_00000004")
    r = run_cli("train", "--resume", "--steps", "7", "--out", str(split))
    assert r.returncode == 0, r.stderr
    assert (split / "ema_snapshots" / "superseded" / "step_00000004.safetensors").exists()
    for step in (4, 6, 7):
        a, b = load_file(str(snapshot_path(full, step))), load_file(str(snapshot_path(split, step)))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), step
    a = load_file(str(full / "checkpoints" / "step_00000007" / "posthoc_ema.safetensors"))
    b = load_file(str(split / "checkpoints" / "step_00000007" / "posthoc_ema.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the tracked averages cannot change on resume (their profiles count from the first update)
    r = run_cli("train", "--resume", "--steps", "9", "--out", str(split), "--posthoc-ema", "0.1", "--allow-change")
    assert r.returncode == 2 and "posthoc_ema" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_posthoc_ema_command_rebuilds_samples_and_scores(tmp_path: Path, tiny_config: Path):
    run = tmp_path / "run"
    _train(run, tiny_config, "--steps", "6", "--ema-sigma-rel", "0.2")
    # --ema-sigma-rel makes the sampled EMA the power EMA itself: the same numbers as the tracked one
    own = load_file(str(run / "checkpoints" / "step_00000006" / "ema.safetensors"))
    tracked6 = load_file(str(snapshot_path(run, 6)))
    assert all(torch.equal(own[k], tracked6[f"1/{k}"]) for k in own)
    r = run_cli("posthoc-ema", str(run), "--sigma-rel", "0.2,0.1", "--fid", "64", "--sampler", "ddim", "--steps", "3")
    assert r.returncode == 0, r.stderr
    folder = run / "posthoc_ema" / "sigma_rel_0.200-step_00000006"
    # a target that was tracked comes back as the tracked average (up to float32 rounding of the combination)
    rebuilt = load_file(str(folder / "ema.safetensors"))
    tracked = load_file(str(snapshot_path(run, 6)))
    assert all(torch.allclose(rebuilt[k], tracked[f"1/{k}"], atol=1e-6) for k in rebuilt)
    state = json.loads((folder / "state.json").read_text())
    assert state["posthoc_ema"]["sigma_rel"] == 0.2 and state["posthoc_ema"]["fit_error"] < 1e-5
    assert (run / "posthoc_ema" / "profiles-step_00000006.png").stat().st_size > 1000
    scores = json.loads((run / "posthoc_ema" / "fid-step_00000006.json").read_text())
    assert [x["sigma_rel"] for x in scores["results"]] == [None, 0.1, 0.2]
    assert all(math.isfinite(x["fid"]) and x["n_fake"] == 64 for x in scores["results"])
    assert "lowest FID" in r.stdout and "power EMA sigma_rel 0.2 (the run's own)" in r.stdout
    # the report page lists every rebuilt folder with its fit error, embeds the profiles and shows every score
    rep = run_cli("report", str(run), "--out", str(tmp_path / "report.html"))
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "report.html").read_text()
    assert "sigma_rel_0.100-step_00000006" in html and "sigma_rel_0.200-step_00000006" in html
    assert f"{100 * state['posthoc_ema']['fit_error']:.2f}%" in html
    png = base64.b64encode((run / "posthoc_ema" / "profiles-step_00000006.png").read_bytes()).decode()
    assert png in html
    assert all(f"<td>{x['fid']:.2f}</td>" in html for x in scores["results"])
    s = run_cli("sample", str(run), "--checkpoint", str(folder), "--n", "4", "--steps", "3",
                "--out", str(tmp_path / "s.npz"))
    assert s.returncode == 0, s.stderr
    assert np.load(tmp_path / "s.npz")["images"].shape[0] == 4
    # a folder whose state.json was edited into another JSON shape still renders (dashes), never a traceback
    (folder / "state.json").write_text("[1, 2]")
    rep = run_cli("report", str(run), "--out", str(tmp_path / "report2.html"))
    assert rep.returncode == 0, rep.stderr
    assert folder.name in (tmp_path / "report2.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--sigma-rel", "0.5"], "sigma_rel values in (0, 0.2887]"),
    (["--sigma-rel", "0,0.1"], "sigma_rel values"),
    (["--sigma-rel", "x"], "comma-separated numbers"),
    (["--sigma-rel", "0.1", "--step", "5"], "no checkpoint with an EMA snapshot at step 5"),
    (["--sigma-rel", "0.1", "--fid", "100000"], "more than 50,000"),
    (["--sigma-rel", "0.1", "--fid", "8", "--sampler", "ddim", "--steps", "200000"], "steps"),
])
def test_posthoc_ema_bad_input_is_one_line(tmp_path: Path, tiny_config: Path, args: list[str], message: str):
    run = tmp_path / "run"
    _train(run, tiny_config, "--steps", "3")
    r = run_cli("posthoc-ema", str(run), *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_no_snapshots_and_bad_train_flags_are_one_line(tmp_path: Path, tiny_config: Path):
    run = tmp_path / "plain"
    r = run_cli("train", "--config", str(tiny_config), "--out", str(run), "--steps", "2")
    assert r.returncode == 0, r.stderr
    r = run_cli("posthoc-ema", str(run), "--sigma-rel", "0.1")
    assert r.returncode == 2 and "train it with --posthoc-ema" in r.stderr
    for bad in (["--posthoc-ema", "0.1,0.1"], ["--posthoc-ema", "0.3"], ["--posthoc-ema-every", "0"],
                ["--ema-sigma-rel", "0.5"], ["--ema-sigma-rel", "nan"]):
        r = run_cli("train", "--config", str(tiny_config), "--out", str(tmp_path / "x"), "--steps", "2", *bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
        assert not (tmp_path / "x").exists()
