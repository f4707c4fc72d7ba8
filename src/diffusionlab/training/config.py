"""Run configuration (JSON) and the named presets.

A run is fully described by a `RunConfig`; `config.json` in the run directory is its `to_dict()`.
Presets are starting points chosen by measurement (see README.md and BENCHMARKS.md); every field
can be overridden from a JSON file (`--config`) or the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..processes import registry
from ..processes.base import Process


@dataclass
class DataConfig:
    """Where the training images come from (see diffusionlab.data.load_dataset)."""

    source: str = "digits"
    data_dir: str | None = None
    split: str = "train"
    image_size: int | None = None
    channels: int | None = None
    hflip: bool = False  # random horizontal flips; wrong for digits, right for most natural images


MIXED_PRECISION = ("no", "bf16", "fp16")

# The process section before issue 13 held every family's keys, the unused ones None (or DDPM's when another family
# was chosen). A config.json written then has exactly these keys; its foreign keys are dropped when it is read.
LEGACY_PROCESS_KEYS = frozenset({"method", "schedule", "T", "prediction", "variance", "loss", "vlb_weight",
                                 "timestep_sampling", "sigma_min", "sigma_max", "beta_min", "beta_max", "num_levels",
                                 "t_eps"})


@dataclass
class ProcessConfig:
    """The generative process: `method` (a key of `processes.METHODS`) and that family's settings, checked and
    completed with its defaults (SPEC.md sections 1-2 for 'ddpm', 5-6 for the others)."""

    method: str = "ddpm"
    settings: dict[str, Any] = field(default_factory=dict)  # completed with the family's defaults

    def __post_init__(self) -> None:
        self.settings = registry.check_settings(self.method, self.settings)
        try:  # the family checks its own values (e.g. sigma_min < sigma_max) with one-line errors
            self.build()
        except TypeError:
            raise ConfigError(f"invalid settings for method {self.method}: {self.settings}") from None

    def __getitem__(self, key: str) -> Any:
        """The value of one setting."""
        return self.settings[key]

    def build(self) -> Process:
        """The process these settings describe."""
        return registry.build_process(self.method, self.settings)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON layout: {"method": ..., setting: value, ...}."""
        return {"method": self.method, **self.settings}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ProcessConfig":
        """Parse the flat layout; a setting of another family is a one-line error (except in a pre-issue-13 file)."""
        d = dict(d)
        method = d.pop("method", "ddpm")
        if set(d) | {"method"} == LEGACY_PROCESS_KEYS:
            own = {s.name for s in registry.family(method).settings}
            d = {k: v for k, v in d.items() if k in own}
        return ProcessConfig(method, d)


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
    mixed_precision: str = "no"  # one of MIXED_PRECISION (through HF Accelerate)
    class_conditional: bool = False
    label_dropout: float = 0.1  # p_uncond for classifier-free guidance (Ho & Salimans 2022)
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 500
    keep_checkpoints: int = 3

    def validate(self) -> None:
        """One-line ConfigErrors for values that cannot work (non-finite ones included)."""
        t = self
        for name in ("lr", "weight_decay", "grad_clip", "ema_decay", "label_dropout"):
            if not math.isfinite(getattr(t, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(t, name)}")
        if t.minutes is not None and not math.isfinite(t.minutes):
            raise ConfigError(f"minutes must be a finite number, got {t.minutes}")
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
        if t.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}")
        if t.lr <= 0:
            raise ConfigError("lr must be > 0")
        for name in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(t, name) < 1:
                raise ConfigError(f"{name} must be >= 1")


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
    model: dict[str, Any] = field(default_factory=dict)  # the network's config (models.NETWORKS); sizes from the data
    process: ProcessConfig = field(default_factory=ProcessConfig)
    codec: dict[str, Any] = field(default_factory=lambda: {"kind": "pixel"})  # codecs.build_codec: pixels or latents
    train: OptimConfig = field(default_factory=OptimConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = {k: (v.to_dict() if isinstance(v, ProcessConfig) else dataclasses.asdict(v) if dataclasses.is_dataclass(v)
                 else v) for k, v in d.items()}
        return json.loads(json.dumps(d))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunConfig":
        """Parse and validate a dict (unknown keys are an error: a typo must not be silently ignored)."""
        sections = {"data": DataConfig, "train": OptimConfig, "sample": SampleConfig}
        unknown = set(d) - set(sections) - {"preset", "model", "process", "codec"}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        for name in ("model", "process", "codec"):
            if not isinstance(d.get(name) or {}, dict):
                raise ConfigError(f"config section '{name}' must be a JSON object")
        kwargs: dict[str, Any] = {"preset": d.get("preset"), "model": dict(d.get("model") or {}),
                                  "process": ProcessConfig.from_dict(d.get("process") or {}),
                                  "codec": dict(d.get("codec") or {"kind": "pixel"})}
        for name, cls in sections.items():
            kwargs[name] = _build(cls, d.get(name) or {}, name)
        cfg = RunConfig(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        from ..codecs import check_section

        self.train.validate()
        check_section(self.codec)


@dataclass
class AutoencoderLossConfig:
    """The first stage's objective (Rombach et al. 2022, section 3 and appendix G): L1 reconstruction (+ a perceptual
    term from the domain network, models/perceptual.py), a small KL to N(0, I), and a patch discriminator switched
    on after `disc_start` steps with LDM's adaptive weight."""

    kl_weight: float = 1e-6  # on the KL summed over latent dimensions, against L1 summed over pixels (LDM's scale)
    perceptual_weight: float = 0.0  # 0: no perceptual term
    disc_start: int | None = None  # None: no discriminator; else the step from which it trains and is used
    disc_weight: float = 0.5  # LDM's discriminator_weight, times the adaptive ratio of gradient norms
    disc_layers: int = 2  # PatchGAN depth (1 for 8x8 images)
    disc_lr: float | None = None  # None: train.lr

    def validate(self) -> None:
        """One-line ConfigErrors for values that cannot work."""
        for name in ("kl_weight", "perceptual_weight", "disc_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"loss.{name} must be a finite number >= 0, got {v!r}")
        if self.disc_start is not None and (isinstance(self.disc_start, bool) or not isinstance(self.disc_start, int)
                                            or self.disc_start < 0):
            raise ConfigError(f"loss.disc_start must be a whole number >= 0 (or null: no discriminator), got {self.disc_start!r}")
        if isinstance(self.disc_layers, bool) or not isinstance(self.disc_layers, int) or self.disc_layers < 1:
            raise ConfigError(f"loss.disc_layers must be a whole number >= 1, got {self.disc_layers!r}")
        if self.disc_lr is not None and not (isinstance(self.disc_lr, (int, float)) and math.isfinite(self.disc_lr)
                                             and self.disc_lr > 0):
            raise ConfigError(f"loss.disc_lr must be a finite number > 0, got {self.disc_lr!r}")


@dataclass
class AutoencoderRunConfig:
    """Everything that defines an autoencoder run (`train-autoencoder`); config.json says `"kind": "autoencoder"`."""

    kind: str = "autoencoder"
    preset: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # models.autoencoder.AutoencoderConfig; sizes from the data
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    preview_n: int = 32  # images (and their reconstructions) in each preview grid

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "AutoencoderRunConfig":
        """Parse and validate (unknown keys are an error)."""
        sections = {"data": DataConfig, "loss": AutoencoderLossConfig, "train": OptimConfig}
        unknown = set(d) - set(sections) - {"kind", "preset", "model", "preview_n"}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        if d.get("kind", "autoencoder") != "autoencoder":
            raise ConfigError(f"an autoencoder config has kind 'autoencoder', got {d.get('kind')!r}")
        if not isinstance(d.get("model") or {}, dict):
            raise ConfigError("config section 'model' must be a JSON object")
        cfg = AutoencoderRunConfig(preset=d.get("preset"), model=dict(d.get("model") or {}),
                                   preview_n=d.get("preview_n", 32),
                                   **{name: _build(cls, d.get(name) or {}, name) for name, cls in sections.items()})
        cfg.train.validate()
        cfg.loss.validate()
        if isinstance(cfg.preview_n, bool) or not isinstance(cfg.preview_n, int) or cfg.preview_n < 1:
            raise ConfigError(f"preview_n must be a whole number >= 1, got {cfg.preview_n!r}")
        return cfg


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


def deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `new` into a copy of `base`."""
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_config(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`layer` (a config file, the command line) merged over `base`; a layer that changes the process's method
    starts that section afresh, because a family's settings mean nothing to another family."""
    new_method = (layer.get("process") or {}).get("method")
    if new_method is not None and new_method != (base.get("process") or {}).get("method", "ddpm"):
        base = {**base, "process": {}}
    return deep_update(base, layer)


def autoencoder_preset_config(name: str | None) -> dict[str, Any]:
    """The autoencoder preset `name` merged over the defaults, as a dict."""
    from .presets import AUTOENCODER_PRESETS

    base = AutoencoderRunConfig().to_dict()
    if name is None:
        return base
    if name not in AUTOENCODER_PRESETS:
        raise ConfigError(f"unknown autoencoder preset {name!r}; choose from {', '.join(AUTOENCODER_PRESETS)}")
    return deep_update(base, {"preset": name, **AUTOENCODER_PRESETS[name]})


def preset_config(name: str | None) -> dict[str, Any]:
    """The preset `name` merged over the defaults, as a dict."""
    from .presets import PRESETS

    base = RunConfig().to_dict()
    if name is None:
        return base
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return merge_config(base, {"preset": name, **PRESETS[name]})


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
