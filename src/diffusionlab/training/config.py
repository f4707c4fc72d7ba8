"""Run configuration (JSON) and the named presets.

A run is fully described by a `RunConfig`; `config.json` in the run directory is its `to_dict()`.
Presets are starting points chosen by measurement (see README.md and BENCHMARKS.md); every field
can be overridden from a JSON file (`--config`) or the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


@dataclass
class DataConfig:
    """Where the training images come from (see diffusionlab.data.load_dataset)."""

    source: str = "digits"
    data_dir: str | None = None
    split: str = "train"
    image_size: int | None = None
    channels: int | None = None
    hflip: bool = False  # random horizontal flips; wrong for digits, right for most natural images


METHODS = ("ddpm", "flow", "ncsn", "vpsde", "vesde")
# The settings of each non-DDPM method and their defaults; a None in ProcessConfig is filled with these.
# - flow: sigma_min of the OT path, small so that x_1 is the data up to a barely visible blur.
# - vpsde: Song et al. (2021), section C: beta_min 0.1, beta_max 20; t_eps 1e-3 (their VP sampling epsilon).
# - vesde / ncsn: sigma_min 0.01 as in Song & Ermon (2019, 2020). sigma_max 50 follows their technique 1
#   (sigma_1 about the largest pairwise distance of the training data): for MNIST scaled to [-1, 1] that
#   distance is 31.7 (measured on 5,000 training images), so 50 covers it with margin; the 8x8 digits need
#   only ~10 (max pairwise distance 9.6; the digits-* presets use 10). t_eps 1e-5 is Song et al.'s VE epsilon.
#   num_levels 100 is close to technique 2 (consecutive levels overlap enough): its ratio gamma = 1.082 for
#   784 dimensions gives 108 levels for sigma_max / sigma_min = 5000 (for the 64-dim digits, gamma = 1.36
#   and sigma_max / sigma_min = 1000 give 22, the digits-ncsn preset).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "ddpm": {},
    "flow": {"sigma_min": 1e-4},
    "ncsn": {"sigma_min": 0.01, "sigma_max": 50.0, "num_levels": 100},
    "vpsde": {"beta_min": 0.1, "beta_max": 20.0, "t_eps": 1e-3},
    "vesde": {"sigma_min": 0.01, "sigma_max": 50.0, "t_eps": 1e-5},
}
METHOD_SETTINGS = ("sigma_min", "sigma_max", "beta_min", "beta_max", "num_levels", "t_eps")


@dataclass
class ProcessConfig:
    """The generative process: method and its settings (SPEC.md sections 1-2 for 'ddpm', 5-6 for the others).

    schedule, T, prediction, variance, loss, vlb_weight and timestep_sampling are DDPM's; the other methods
    ignore them, but refuse a learned variance, a loss other than 'simple', importance sampling of t and a
    prediction other than the default (each family fixes its own output: velocity for flow, eps otherwise).
    """

    method: str = "ddpm"  # ddpm, flow, ncsn, vpsde or vesde
    schedule: str = "cosine"
    T: int = 1000
    prediction: str = "eps"
    variance: str = "beta_tilde"  # reverse variance: beta_tilde, beta, or learned (iDDPM)
    loss: str = "simple"  # simple, hybrid (L_simple + vlb_weight * L_vlb) or vlb
    vlb_weight: float = 0.001  # lambda of the hybrid loss (iDDPM section 3.1)
    timestep_sampling: str = "auto"  # uniform, importance (p_t ∝ sqrt(E[L_t^2])), or auto: importance for loss vlb
    sigma_min: float | None = None  # flow: the OT path's sigma_min; vesde/ncsn: the smallest noise level
    sigma_max: float | None = None  # vesde/ncsn: the largest noise level
    beta_min: float | None = None  # vpsde: beta(0)
    beta_max: float | None = None  # vpsde: beta(1)
    num_levels: int | None = None  # ncsn: length L of the noise ladder
    t_eps: float | None = None  # vpsde/vesde: the data end of the training time range [t_eps, 1]

    def settings(self) -> dict[str, Any]:
        """The method's own settings, each the configured value or its default."""
        own = METHOD_DEFAULTS.get(self.method, {})
        return {k: default if getattr(self, k) is None else getattr(self, k) for k, default in own.items()}

    def fill_and_check(self) -> None:
        """Fill the method's default settings and reject settings of other methods (one-line ConfigErrors)."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        own = METHOD_DEFAULTS[self.method]
        for key in METHOD_SETTINGS:
            if key not in own and getattr(self, key) is not None:
                users = [m for m, d in METHOD_DEFAULTS.items() if key in d]
                raise ConfigError(f"{key} is a setting of {' / '.join(users)}, not of method {self.method}")
        for key, value in self.settings().items():
            setattr(self, key, value)
        if self.method == "ddpm":
            return
        if self.variance == "learned" or self.loss != "simple" or self.timestep_sampling == "importance":
            raise ConfigError(f"the learned variance, the hybrid/vlb losses and importance sampling of t are DDPM's; "
                              f"method {self.method} needs variance beta_tilde, loss simple (or a {self.method} preset)")
        if self.prediction != "eps":
            raise ConfigError(f"prediction is a DDPM setting; method {self.method} fixes its own network output")
        from ..runs import build_process  # late import: runs imports this module

        try:  # the process checks its own values (e.g. sigma_min < sigma_max) with one-line errors
            build_process(self)
        except TypeError:  # e.g. a string from a JSON file where a number belongs
            raise ConfigError(f"the settings of method {self.method} must be numbers, got {self.settings()}") from None


@dataclass
class OptimConfig:
    """Training loop settings: AdamW with linear warm-up, gradient clipping, EMA with warm-up."""

    batch_size: int = 128  # global batch, split evenly across processes
    steps: int | None = 4000
    minutes: float | None = None  # wall-clock budget; training stops at whichever of steps/minutes comes first
    lr: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    seed: int = 0
    mixed_precision: str = "no"  # 'no', 'bf16' or 'fp16' (through HF Accelerate)
    class_conditional: bool = False
    label_dropout: float = 0.1  # p_uncond for classifier-free guidance (Ho & Salimans 2022)
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 500
    keep_checkpoints: int = 3


@dataclass
class SampleConfig:
    """How the sample grids written during training are drawn."""

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    n: int = 64
    clip_x0: bool = True


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    preset: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # UNetConfig fields; image size/channels come from the data
    process: ProcessConfig = field(default_factory=ProcessConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunConfig":
        """Parse and validate a dict (unknown keys are an error: a typo must not be silently ignored)."""
        sections = {"data": DataConfig, "process": ProcessConfig, "train": OptimConfig, "sample": SampleConfig}
        unknown = set(d) - set(sections) - {"preset", "model"}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {"preset": d.get("preset"), "model": dict(d.get("model") or {})}
        for name, cls in sections.items():
            kwargs[name] = _build(cls, d.get(name) or {}, name)
        cfg = RunConfig(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        t = self.train
        if t.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if t.steps is None and t.minutes is None:
            raise ConfigError("give a budget: steps or minutes")
        if t.steps is not None and t.steps < 1:
            raise ConfigError("steps must be >= 1")
        if t.minutes is not None and t.minutes <= 0:
            raise ConfigError("minutes must be > 0")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ConfigError("ema_decay must be in [0, 1)")
        if not 0.0 <= t.label_dropout < 1.0:
            raise ConfigError("label_dropout must be in [0, 1)")
        if t.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError("mixed_precision must be one of no, bf16, fp16")
        if t.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.process.timestep_sampling not in ("auto", "uniform", "importance"):
            raise ConfigError("timestep_sampling must be auto, uniform or importance")
        self.process.fill_and_check()
        for name in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(t, name) < 1:
                raise ConfigError(f"{name} must be >= 1")


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    """Instantiate a config dataclass from a dict, rejecting unknown keys with a one-line error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) in config section '{section}': {', '.join(sorted(unknown))}")
    values = dict(values)
    if "adam_betas" in values:
        values["adam_betas"] = tuple(values["adam_betas"])
    return cls(**values)


# Presets. Numbers are chosen by measurement on the 2-core CI machine (BENCHMARKS.md, "Presets").
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        # Measured (BENCHMARKS.md "Presets"): samples recognised as all ten digits from step 500; the judge's
        # recognised fraction plateaus (95%; real digits 96%) by step 2000; 2000 steps fit the 5-minute budget on 2 cores.
        "data": {"source": "digits", "split": "all"},
        "model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
                  "dropout": 0.0, "num_heads": 4},
        "process": {"method": "ddpm", "schedule": "cosine", "T": 1000, "prediction": "eps"},
        "train": {"batch_size": 128, "steps": 2000, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.999,
                  "sample_every": 500, "checkpoint_every": 500, "log_every": 50},
        "sample": {"sampler": "ddim", "steps": 50, "n": 100},
    },
    "mnist": {
        # A CPU recipe: 1.1M-parameter UNet, measured at ~0.4 s/step (batch 64, 2 cores); 3000 steps ~ 20 min.
        "data": {"source": "mnist", "split": "train"},
        "model": {"base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attention_resolutions": [7],
                  "dropout": 0.0, "num_heads": 4},
        # Improved DDPM (Nichol & Dhariwal 2021): learned variance with the hybrid loss, so strided
        # ancestral sampling works with few steps and the NLL bound is tighter (BENCHMARKS.md, "Table 2").
        # v prediction (Salimans & Ho 2022), not eps: at 1500 steps the eps-model's x0_hat = x~ - sigma~ eps_hat is
        # wrong at high noise (MSE 1.35 at sigma~ = 100 against 0.26), which ruins the deterministic samplers: FID at
        # 10 NFE (DPM-Solver++) 24 with v against 476 with eps (BENCHMARKS.md, "Preset: mnist, eps against v").
        "process": {"method": "ddpm", "schedule": "cosine", "T": 1000, "prediction": "v", "variance": "learned",
                    "loss": "hybrid"},
        "train": {"batch_size": 64, "steps": 3000, "lr": 1e-3, "warmup_steps": 200, "ema_decay": 0.999,
                  "sample_every": 1000, "checkpoint_every": 500, "log_every": 50},
        "sample": {"sampler": "ddim", "steps": 50, "n": 100},
    },
}


# One preset per model family and data set: the digits / mnist recipe (network, optimiser, budget) with the
# family's process. NOT tuned by measurement like `digits` and `mnist`: starting points for comparisons at an
# equal training budget. The training-time grids use DDIM on the path (sampling.path_schedule).
FAMILY_PROCESSES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {"flow": {}, "vpsde": {}, "vesde": {"sigma_max": 10.0}, "ncsn": {"sigma_max": 10.0, "num_levels": 22}},
    "mnist": {"flow": {}, "vpsde": {}, "vesde": {}, "ncsn": {}},
}
for _data, _families in FAMILY_PROCESSES.items():
    for _method, _settings in _families.items():
        PRESETS[f"{_data}-{_method}"] = {**PRESETS[_data], "process": {"method": _method, **_settings}}


def deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `new` into a copy of `base`."""
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def preset_config(name: str | None) -> dict[str, Any]:
    """The preset `name` merged over the defaults, as a dict."""
    base = RunConfig().to_dict()
    if name is None:
        return base
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return deep_update(base, {"preset": name, **PRESETS[name]})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file, with a one-line error naming the file on failure."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a JSON object")
    return data
