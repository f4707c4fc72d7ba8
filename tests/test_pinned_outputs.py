"""Regression pins: pixel-space outputs of every sampler, guidance, RePaint, SDEdit, the NLL estimators and a few
training steps, on tiny deterministic networks, against the values the library produced before the seams refactor
(issue 13, commit 91a5d13). The refactor must not change any of them.

`tests/data/pinned_outputs.npz` was written by `python tests/test_pinned_outputs.py --write` at that commit.
Do not regenerate it to make a test pass: a difference here is a change of behaviour, and a deliberate one must be
argued in its commit. Tolerances: float32 networks on another CPU (AVX2 vs AVX-512 kernels) differ in the last bits,
so outputs are compared to 1e-4 (absolute, on values of order 1); the adaptive ODE solver chooses its steps from
error estimates, so its outputs get 5e-3; training losses after Adam steps get a relative 1e-3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).parent
PINS = HERE / "data" / "pinned_outputs.npz"
sys.path.insert(0, str(HERE))

from helpers import TINY  # noqa: E402

SHAPE = (1, 8, 8)
STEPS = 6


class PinNet(torch.nn.Module):
    """The exact denoiser of N(0.2, 0.5^2 I) data on the process's path, plus 0.1 x a tiny UNet with every parameter
    redrawn from N(0, 0.1^2): outputs stay in the data range (so clipping does not flatten them) while the UNet's
    time embedding, labels and learned-variance channels still reach every sampler."""

    def __init__(self, process, out_channels: int | None = None, num_classes: int | None = None,
                 time_scale: float = 1.0, seed: int = 0) -> None:
        from diffusionlab.models import build_network

        super().__init__()
        cfg = {**TINY["model"], "image_size": 8, "in_channels": 1, "out_channels": out_channels,
               "num_classes": num_classes, "time_scale": time_scale}
        self.unet = build_network(cfg)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.unet.parameters():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        self.eval()
        self.process = process
        self.prediction = process.prediction

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        from diffusionlab.paths import expand_like
        from diffusionlab.prediction import Prediction, from_prediction

        path = self.process.path
        t64 = t.to(torch.float64)
        a, b = (expand_like(path.alpha(t64), x), expand_like(path.sigma(t64), x))
        d_a, d_s = path.d_alpha(t64), path.d_sigma(t64)
        d_a = None if d_a is None else expand_like(d_a, x)
        d_s = None if d_s is None else expand_like(d_s, x)
        m, s2 = 0.2, 0.25
        r = (x - a * m) / (a * a * s2 + b * b)
        exact = from_prediction(Prediction(m + a * s2 * r, b * r), self.prediction, a, b, d_a, d_s)
        extra = self.unet(x, t, y) if y is not None else self.unet(x, t)
        if extra.shape[1] == 2 * x.shape[1]:  # learned variance: the variance channels come from the UNet alone
            return torch.cat([exact, torch.zeros_like(exact)], 1) + 0.1 * extra
        return exact + 0.1 * extra


def tiny_unet(process, out_channels: int | None = None, num_classes: int | None = None, time_scale: float = 1.0,
              seed: int = 0) -> torch.nn.Module:
    """A `PinNet` for `process`."""
    return PinNet(process, out_channels, num_classes, time_scale, seed)


def families() -> dict[str, tuple]:
    """name -> (process, network) for each family the pins cover."""
    from diffusionlab.processes import NCSN, VESDE, VPSDE, FlowMatching, GaussianDiffusion

    fams = {
        "ddpm-eps": (GaussianDiffusion("cosine", 100, "eps"), {"seed": 1}),
        "ddpm-v-learned": (GaussianDiffusion("linear", 100, "v", "learned", "hybrid"), {"out_channels": 2, "seed": 2}),
        "flow": (FlowMatching(), {"time_scale": 1000.0, "seed": 3}),
        "vpsde": (VPSDE(), {"time_scale": 1000.0, "seed": 4}),
        "vesde": (VESDE(sigma_max=10.0), {"time_scale": 1000.0, "seed": 5}),
        "ncsn": (NCSN(sigma_max=10.0, num_levels=8), {"time_scale": 1000.0, "seed": 6}),
    }
    return {name: (process, tiny_unet(process, **kw)) for name, (process, kw) in fams.items()}


SAMPLERS = {
    "ddpm-eps": ["ddpm", "ddim", "euler", "heun", "dpmpp2m", "dpmpp2m-sde", "sde", "pc", "langevin"],
    "ddpm-v-learned": ["ddpm", "ddim", "dpmpp2m-sde", "heun"],
    "flow": ["ddpm", "ddim", "euler", "heun", "dpmpp2m", "dpmpp2m-sde", "sde", "pc", "langevin", "ode-euler",
             "ode-midpoint", "ode-heun", "ode-rk4", "ode-adaptive"],
    "vpsde": ["ddim", "heun", "pc", "ode-rk4"],
    "vesde": ["ddim", "pc", "langevin", "ode-heun"],
    "ncsn": ["langevin", "ddim", "dpmpp2m"],
}


def compute() -> dict[str, np.ndarray]:
    """Every pinned output, keyed by a name that says what produced it."""
    from diffusionlab.sampling import SamplerOptions, generate

    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {}
    fams = families()
    for name, samplers in SAMPLERS.items():
        process, net = fams[name]
        den = process.denoiser(net)
        for sampler in samplers:
            options = SamplerOptions(corrector_steps=2 if sampler in ("pc", "langevin") else None)
            res = generate(den, process, SHAPE, 3, sampler, STEPS, options=options, seed=7, batch_size=2,
                           trajectory_frames=3)
            out[f"sample/{name}/{sampler}"] = res.images.numpy()
            out[f"nfe/{name}/{sampler}"] = np.array(res.nfe)
            if res.trajectory_x0:  # ode-adaptive chooses its own steps and records no frames
                out[f"traj/{name}/{sampler}"] = torch.stack(res.trajectory_x0).numpy()
        for spacing in ("karras", "loguniform", "time"):
            res = generate(den, process, SHAPE, 2, "dpmpp2m", STEPS, options=SamplerOptions(sigma_spacing=spacing), seed=8)
            out[f"spacing/{name}/{spacing}"] = res.images.numpy()
        res = generate(den, process, SHAPE, 2, "ddim", STEPS, options=SamplerOptions(eta=0.5, clip_x0=False), seed=9)
        out[f"ddim-eta/{name}"] = res.images.numpy()
    out.update(_guidance_and_editing())
    out.update(_likelihoods())
    out.update(_training())
    return out


def _guidance_and_editing() -> dict[str, np.ndarray]:
    from diffusionlab.editing import sdedit
    from diffusionlab.guidance import ClassifierFreeGuidance
    from diffusionlab.inpainting import sample_inpaint
    from diffusionlab.processes import FlowMatching, GaussianDiffusion
    from diffusionlab.samplers import ddim_invert
    from diffusionlab.sampling import generate

    out: dict[str, np.ndarray] = {}
    gd = GaussianDiffusion("cosine", 100, "eps")
    den = gd.denoiser(tiny_unet(gd, num_classes=3, seed=10))
    y = torch.tensor([0, 1, 2, 1])
    for sampler in ("ddim", "heun", "ddpm"):
        res = generate(ClassifierFreeGuidance(den, 2.5, null_label=3), gd, SHAPE, 4, sampler, STEPS, seed=11, y=y)
        out[f"cfg/ddpm/{sampler}"] = res.images.numpy()
    fm = FlowMatching()
    fden = fm.denoiser(tiny_unet(fm, num_classes=3, time_scale=1000.0, seed=12))
    res = generate(ClassifierFreeGuidance(fden, 3.0, null_label=3), fm, SHAPE, 4, "ode-heun", STEPS, seed=13, y=y)
    out["cfg/flow/ode-heun"] = res.images.numpy()

    den = gd.denoiser(tiny_unet(gd, seed=14))
    schedule = gd.vp_schedule(10)
    g = torch.Generator().manual_seed(15)
    known = torch.rand((2, *SHAPE), generator=g) * 2 - 1
    mask = (torch.rand(SHAPE, generator=g) < 0.5).float()
    for sampler in ("ddpm", "ddim"):
        x_T = torch.randn(known.shape, generator=torch.Generator().manual_seed(16))
        x = sample_inpaint(den.vp(), x_T, schedule, known, mask, sampler=sampler, eta=0.3, resample=2, jump=2,
                           clip=(-1.0, 1.0), generator=torch.Generator().manual_seed(17))
        out[f"repaint/{sampler}"] = x.numpy()
        x = sdedit(den.vp(), known, schedule, 0.6, sampler=sampler, eta=0.3, clip=(-1.0, 1.0),
                   generator=torch.Generator().manual_seed(18))
        out[f"sdedit/{sampler}"] = x.numpy()
    out["ddim-invert"] = ddim_invert(den.vp(), known, schedule).numpy()
    return out


def _likelihoods() -> dict[str, np.ndarray]:
    from diffusionlab.evaluation.likelihood import variational_bound
    from diffusionlab.evaluation.ode_likelihood import ode_bits_per_dim

    out: dict[str, np.ndarray] = {}
    fams = families()
    images = torch.randint(0, 256, (3, *SHAPE), generator=torch.Generator().manual_seed(19), dtype=torch.uint8)
    for name in ("ddpm-eps", "ddpm-v-learned"):
        process, net = fams[name]
        res = variational_bound(process.denoiser(net), process, images, steps=10, seed=20)
        out[f"vlb/{name}"] = np.array([res.bits_per_dim, res.prior_bpd, res.diffusion_bpd, res.decoder_bpd])
    for name in ("ddpm-eps", "flow", "vesde"):
        process, net = fams[name]
        res = ode_bits_per_dim(process.denoiser(net), images, steps=4, method="heun", seed=21)
        out[f"ode-nll/{name}"] = np.array([res.bits_per_dim, res.sigma_min, res.sigma_max])
    return out


def _training() -> dict[str, np.ndarray]:
    """Per-step losses of 6 steps of tiny training runs (log every step), DDPM hybrid and flow."""
    import json
    import tempfile

    from diffusionlab.training.config import RunConfig, deep_update, preset_config
    from diffusionlab.training.trainer import train

    out: dict[str, np.ndarray] = {}
    cases = {
        "ddpm-hybrid": {"process": {"T": 100, "prediction": "v", "variance": "learned", "loss": "hybrid"}},
        "flow": {"process": {"method": "flow"}},
        "ddpm-cond": {"process": {"T": 100}, "train": {"class_conditional": True}},
    }
    for name, extra in cases.items():
        cfg = deep_update(deep_update(preset_config("digits"), TINY), extra)
        cfg = deep_update(cfg, {"train": {"steps": 6, "log_every": 1, "checkpoint_every": 6, "sample_every": 6},
                                "sample": {"n": 2, "steps": 2}})
        if name == "flow":
            cfg["process"] = {"method": "flow"}
        with tempfile.TemporaryDirectory() as tmp:
            train(RunConfig.from_dict(cfg), Path(tmp) / "run", progress=False)
            rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        out[f"train-loss/{name}"] = np.array([r["loss"] for r in rows])
    return out


@pytest.fixture(scope="module")
def computed() -> dict[str, np.ndarray]:
    return compute()


@pytest.fixture(scope="module")
def pinned() -> dict[str, np.ndarray]:
    with np.load(PINS, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_every_pin_is_still_computed(computed: dict[str, np.ndarray], pinned: dict[str, np.ndarray]) -> None:
    assert sorted(computed) == sorted(pinned)


@pytest.mark.parametrize("group", ["sample", "nfe", "traj", "spacing", "ddim-eta", "cfg", "repaint", "sdedit",
                                   "ddim-invert", "vlb", "ode-nll", "train-loss"])
def test_outputs_match_their_pins(group: str, computed: dict[str, np.ndarray], pinned: dict[str, np.ndarray]) -> None:
    keys = [k for k in pinned if k.split("/")[0] == group]
    assert keys
    for key in keys:
        got, want = computed[key], pinned[key]
        assert got.shape == want.shape, key
        if group == "train-loss":
            np.testing.assert_allclose(got, want, rtol=1e-3, err_msg=key)
        elif group == "nfe":
            assert int(got) == int(want), key
        else:
            atol = 5e-3 if key.endswith("ode-adaptive") else 1e-4
            np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=key)


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/test_pinned_outputs.py --write   (overwrites the pins: see the module docstring)")
    values = compute()
    PINS.parent.mkdir(exist_ok=True)
    np.savez_compressed(PINS, **values)
    print(f"wrote {len(values)} arrays to {PINS}")
