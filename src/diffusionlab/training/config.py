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

from .. import validation as v
from ..errors import ConfigError
from ..processes import registry
from ..processes.base import Process
from .ema import SIGMA_REL_MAX
from .lr_schedule import LR_SCHEDULES
from .precision import MIXED_PRECISION


@dataclass
class DataConfig:
    """Where the training images come from (see diffusionlab.data.load_dataset)."""

    source: str = "digits"
    data_dir: str | None = None
    split: str = "train"
    image_size: int | None = None
    channels: int | None = None
    hflip: bool = False  # random horizontal flips; wrong for digits, right for most natural images

    def validate(self) -> None:
        """One-line ConfigErrors for fields of the wrong type or out of range (the source itself is checked when the
        data is loaded: a run read on another machine need not have its data there)."""
        from ..data import SPLITS

        v.check_instance(self, "data", {"image_size": v.at_least(1, v.MAX_IMAGE_SIDE)},
                         {"split": SPLITS, "channels": (1, 3)})
        if not self.source.strip():
            raise ConfigError("data.source must name a dataset, got ''")



# The process section before issue 13 held every family's keys, the unused ones None (or DDPM's when another family
# was chosen). A config.json written then has exactly these keys; its foreign keys are dropped when it is read.
LEGACY_PROCESS_KEYS = frozenset({"method", "schedule", "T", "prediction", "variance", "loss", "vlb_weight",
                                 "timestep_sampling", "sigma_min", "sigma_max", "beta_min", "beta_max", "num_levels",
                                 "t_eps"})


@dataclass
class ProcessConfig:
    """The generative process: `method` (a key of `processes.METHODS`) and that family's settings, checked and
    completed with its defaults (docs/maths.md sections 1-2 for 'ddpm', 5-6 for the others)."""

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
            d = {k: val for k, val in d.items() if k in own}
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
    lr_schedule: str = "constant"  # after warm-up: constant, or cosine / linear decay to 0 over the budget (lr_schedule.py)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    # The EMA that sampling uses as EDM2's power function of this relative length (ema.PowerEMA) instead of the
    # exponential one of ema_decay: the same average at every point of training (docs/maths.md section 13).
    ema_sigma_rel: float | None = None
    # Post-hoc EMA (EDM2; posthoc_ema.py): the sigma_rel of each power-function EMA tracked alongside, written to
    # RUN/ema_snapshots/ every `posthoc_ema_every` steps and at every checkpoint; () tracks none.
    posthoc_ema: tuple[float, ...] = ()
    posthoc_ema_every: int = 500
    seed: int = 0
    mixed_precision: str = "auto"  # one of MIXED_PRECISION (through HF Accelerate); "auto": precision.py
    class_conditional: bool = False
    text_conditional: bool = False  # condition on the data's captions (a text encoder trained jointly, GLIDE)
    label_dropout: float = 0.1  # p_uncond for classifier-free guidance (Ho & Salimans 2022): labels or captions
    log_every: int = 50
    log: str = "jsonl"  # "tensorboard": metrics.jsonl and the preview grids also as TensorBoard events (tensorboard_log.py)
    sample_every: int = 1000
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    # The divergence guard (loop.py): a step whose loss or gradient is not finite is skipped; after
    # `nonfinite_patience` such steps in a row the run rolls back to its last checkpoint with the learning rate
    # times `rollback_lr_factor`, at most `max_rollbacks` times, then stops with exit 3.
    nonfinite_patience: int = 10
    max_rollbacks: int = 2
    rollback_lr_factor: float = 0.5

    def validate(self) -> None:
        """One-line ConfigErrors for values that cannot work (wrong types and non-finite ones included)."""
        # Every field's type and range (OPTIM_RANGES), then what the fields mean together.
        from .tensorboard_log import LOGS, check_available

        v.check_instance(self, "train", OPTIM_RANGES, {"mixed_precision": MIXED_PRECISION, "log": LOGS,
                                                        "lr_schedule": LR_SCHEDULES})
        if self.log == "tensorboard":
            check_available()
        if self.steps is None and self.minutes is None:
            raise ConfigError("give a budget: steps or minutes")
        if len(set(self.posthoc_ema)) != len(self.posthoc_ema) or len(self.posthoc_ema) > MAX_POSTHOC_EMAS:
            raise ConfigError(f"train.posthoc_ema must be at most {MAX_POSTHOC_EMAS} different sigma_rel values, got "
                              f"{list(self.posthoc_ema)}")
        if self.class_conditional and self.text_conditional:
            raise ConfigError("train on class labels or on captions, not both (class_conditional, text_conditional)")


MAX_POSTHOC_EMAS = 8  # each tracked average is one more copy of the weights, updated every step

# The range of every number in the `train` section (checked with its type by validation.check_fields).
OPTIM_RANGES: dict[str, v.Range] = {
    "posthoc_ema": v.Range(0, SIGMA_REL_MAX, lo_open=True), "posthoc_ema_every": v.at_least(1),
    "ema_sigma_rel": v.Range(0, SIGMA_REL_MAX, lo_open=True),
    "batch_size": v.at_least(1), "steps": v.at_least(1), "minutes": v.above(0), "lr": v.above(0),
    "weight_decay": v.at_least(0), "adam_betas": v.UNIT, "warmup_steps": v.at_least(0), "grad_clip": v.at_least(0),
    "ema_decay": v.UNIT, "seed": v.SEED, "label_dropout": v.UNIT, "log_every": v.at_least(1),
    "sample_every": v.at_least(1), "checkpoint_every": v.at_least(1), "keep_checkpoints": v.at_least(1),
    "nonfinite_patience": v.at_least(1), "max_rollbacks": v.at_least(0), "rollback_lr_factor": v.Range(0, 1, lo_open=True),
}


@dataclass
class SampleConfig:
    """How the sample grids written during training are drawn, and the sampler the run recommends afterwards."""

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    n: int = 64
    clip_x0: bool = True
    # What `sample`, `evaluate`, the API and the playground use when no sampler is asked for: a preset's choice by
    # measurement (presets.py). None: the family's `default_sampler` and `default_steps`.
    recommended_sampler: str | None = None
    recommended_steps: int | None = None

    def validate(self) -> None:
        """One-line ConfigErrors for fields of the wrong type or out of range."""
        from ..sampling import SAMPLER_NAMES

        steps = v.at_least(1, v.MAX_SAMPLING_STEPS)
        v.check_instance(self, "sample", {"steps": steps, "eta": v.Range(0, 1), "n": v.at_least(1),
                                          "recommended_steps": steps},
                         {"sampler": SAMPLER_NAMES, "recommended_sampler": SAMPLER_NAMES})
        if self.recommended_steps is not None and self.recommended_sampler is None:
            raise ConfigError("sample.recommended_steps needs sample.recommended_sampler (the sampler they are for)")

    def recommended(self) -> tuple[str, int | None] | None:
        """(sampler, steps) the run recommends, or None for the family's defaults."""
        return None if self.recommended_sampler is None else (self.recommended_sampler, self.recommended_steps)


TASKS = ("generate", "superres")


@dataclass
class TaskConfig:
    """What the model makes: images from noise (`generate`), or high-resolution images given low-resolution ones
    (`superres`: SR3 / cascaded diffusion, superres.py; the other fields are its settings)."""

    kind: str = "generate"
    factor: int | None = None  # superres: the downsampling factor r (2 or 4); it must divide the image size
    blur: float = 0.0  # superres: std (high-resolution pixels) of the Gaussian blur before downsampling
    aug_max: float = 0.0  # superres: training draws the condition's augmentation level s ~ U[0, aug_max]
    aug_level: float = 0.0  # superres: the level s used when sampling (the default of --aug-level)

    def validate(self) -> None:
        """One-line ConfigErrors: the kind, the factor (2 or 4, and only for superres), the ranges."""
        from ..superres import FACTORS

        v.check_instance(self, "task", {"blur": v.at_least(0), "aug_max": v.Range(0, 1, hi_open=True),
                                        "aug_level": v.Range(0, 1, hi_open=True)}, {"kind": TASKS})
        if self.kind == "superres" and self.factor not in FACTORS:
            raise ConfigError(f"task.factor must be one of {', '.join(map(str, FACTORS))} for super-resolution, got "
                              f"{v.show(self.factor)}")
        if self.kind != "superres" and (self.factor is not None or self.blur or self.aug_max or self.aug_level):
            raise ConfigError("task.factor, blur, aug_max and aug_level are super-resolution settings: they need "
                              "task.kind 'superres' (--task superres)")


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
    task: TaskConfig = field(default_factory=TaskConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = {k: (x.to_dict() if isinstance(x, ProcessConfig) else dataclasses.asdict(x) if dataclasses.is_dataclass(x)
                 else x) for k, x in d.items()}
        return json.loads(json.dumps(d))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunConfig":
        """Parse and validate a dict (unknown keys are an error: a typo must not be silently ignored)."""
        sections = {"data": DataConfig, "train": OptimConfig, "sample": SampleConfig, "task": TaskConfig}
        _sections(d, [*sections, "preset", "model", "process", "codec"], ("model", "process", "codec"))
        kwargs: dict[str, Any] = {"preset": d.get("preset"), "model": dict(d.get("model") or {}),
                                  "process": ProcessConfig.from_dict(d.get("process") or {}),
                                  "codec": dict(d.get("codec") or {"kind": "pixel"})}
        for name, cls in sections.items():
            kwargs[name] = _build(cls, d.get(name) or {}, name)
        cfg = RunConfig(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work, before any of it is allocated: every field's type and range,
        and the memory that the network, one training batch and one preview grid need at the least."""
        from ..codecs import check_section
        from ..models import check_section as check_model
        from ..sampling.spec import require_sampler_fits, sampler_and_steps, sampler_spec

        v.check_value(self.preset, str | None, "preset")
        self.data.validate()
        self.train.validate()
        self.sample.validate()
        self.task.validate()
        if self.task.kind == "superres" and (self.train.class_conditional or self.train.text_conditional):
            raise ConfigError("a super-resolution model is conditioned on the low-resolution image only: condition "
                              "the cascade's base model on classes or captions, not the upsampler")
        size, factor = self.data.image_size, self.task.factor
        if self.task.kind == "superres" and size and size % factor:  # other sizes are checked when the data loads
            raise ConfigError(f"super-resolution factor {factor} does not divide the image size {size}x{size}")
        if self.train.text_conditional:
            from ..data.registry import CAPTIONED, DATASETS

            if self.data.source in DATASETS and self.data.source not in (*CAPTIONED, "folder"):
                raise ConfigError(f"text_conditional training needs captions, and dataset {self.data.source} has none "
                                  f"(use {', '.join(CAPTIONED)} or a captioned image folder)")
        check_section(self.codec)
        check_model(self.model)
        process = self.process.build()
        s = self.sample
        if process.T is not None and sampler_spec(s.sampler).space == "vp" and s.steps > process.T:
            raise ConfigError(f"sample.steps {s.steps} is more than the model's T = {process.T} (sampler {s.sampler})")
        if s.recommended_sampler is not None:
            try:
                sampler_and_steps(process, recommended=s.recommended())
            except ConfigError as e:
                raise ConfigError(f"sample.recommended_sampler: {e}") from None
        for key in ("sampler", "recommended_sampler"):
            if getattr(s, key) is not None:
                try:
                    require_sampler_fits(getattr(s, key), process)
                except ConfigError as e:
                    raise ConfigError(f"sample.{key}: {e}") from None
        shape = _image_shape(self.data, self.model)
        v.require_memory(v.images_bytes(self.train.batch_size, shape), f"train.batch_size {self.train.batch_size}",
                         "one batch of images")
        v.require_memory(v.sampling_bytes(s.n, shape, shape), f"sample.n {s.n}", "the preview grid")


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
        """One-line ConfigErrors for values that cannot work (disc_start null: no discriminator)."""
        v.check_instance(self, "loss", {"kl_weight": v.at_least(0), "perceptual_weight": v.at_least(0),
                                        "disc_start": v.at_least(0), "disc_weight": v.at_least(0),
                                        "disc_layers": v.at_least(1), "disc_lr": v.above(0)})


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
        _sections(d, [*sections, "kind", "preset", "model", "preview_n"], ("model",))
        if d.get("kind", "autoencoder") != "autoencoder":
            raise ConfigError(f"an autoencoder config has kind 'autoencoder', got {v.show(d.get('kind'))}")
        cfg = AutoencoderRunConfig(preset=d.get("preset"), model=dict(d.get("model") or {}),
                                   preview_n=d.get("preview_n", 32),
                                   **{name: _build(cls, d.get(name) or {}, name) for name, cls in sections.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """One-line ConfigErrors for every field (types, ranges) and for what cannot fit in memory."""
        from ..models.autoencoder import AutoencoderConfig

        v.check_value(self.preset, str | None, "preset")
        self.data.validate()
        self.train.validate()
        self.loss.validate()
        v.check_value(self.preview_n, int, "preview_n", v.at_least(1))
        AutoencoderConfig.check_dict(self.model, "model")
        shape = _image_shape(self.data, self.model)
        v.require_memory(v.images_bytes(self.train.batch_size, shape), f"train.batch_size {self.train.batch_size}",
                         "one batch of images")
        v.require_memory(v.images_bytes(2 * self.preview_n, shape), f"preview_n {self.preview_n}", "the preview grid")


def _sections(d: Any, known: list[str], objects: tuple[str, ...]) -> None:
    """A config must be a JSON object of known sections; `objects` (when given) must be JSON objects themselves."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a JSON object, got {v.show(d)}")
    unknown = sorted((k for k in d if k not in known), key=str)
    if unknown:
        raise ConfigError(f"unknown config section {str(unknown[0])!r}{v.suggest(unknown[0], known)}")
    for name in objects:
        if not isinstance(d.get(name) or {}, dict):
            raise ConfigError(f"config section '{name}' must be a JSON object, got {v.show(d[name])}")


def _build(cls: type, values: Any, section: str) -> Any:
    """Instantiate a config dataclass from a dict: unknown keys are one-line errors naming the nearest known key; the
    types and ranges are checked by the section's `validate` (its values are assigned as they are until then)."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{section}' must be a JSON object, got {v.show(values)}")
    v.reject_unknown(values, [f.name for f in dataclasses.fields(cls)], f"config section '{section}'")
    return cls(**values)


def _image_shape(data: DataConfig, model: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the data as far as the config knows it (1 where it does not: a lower bound for estimates)."""
    size = data.image_size or model.get("image_size") or 1
    h, w = (size, size) if isinstance(size, int) else tuple(size)[:2] if isinstance(size, (list, tuple)) else (1, 1)
    c = data.channels or model.get("in_channels") or 1
    return (c, h, w) if all(isinstance(x, int) and not isinstance(x, bool) for x in (c, h, w)) else (1, 1, 1)


def deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `new` into a copy of `base`."""
    out = copy.deepcopy(base)
    for k, val in new.items():
        if isinstance(val, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], val)
        else:
            out[k] = copy.deepcopy(val)
    return out


def merge_config(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`layer` (a config file, the command line) merged over `base`; a layer that changes the process's method
    starts that section afresh, because a family's settings mean nothing to another family; likewise a layer that
    changes the network starts the model section afresh (a UNet's sizes mean nothing to a DiT). Either drops the
    base's recommended sampler, which was measured on the base's model."""
    new_method = (layer.get("process") or {}).get("method")
    new_family = new_method is not None and new_method != (base.get("process") or {}).get("method", "ddpm")
    if new_family:
        base = {**base, "process": {}}
    model = layer.get("model")
    new_network = model.get("network") if isinstance(model, dict) else None
    if new_network is not None and new_network != (base.get("model") or {}).get("network", "unet"):
        base = {**base, "model": {}}
        new_family = True
    if new_family and isinstance(base.get("sample"), dict):  # a recommendation was measured on the base's model
        base = {**base, "sample": {**base["sample"], "recommended_sampler": None, "recommended_steps": None}}
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
    """Read a config file in YAML (.yaml, .yml), TOML (.toml) or JSON (any other name), with a one-line error naming
    the file on failure.

    TOML has no null: leave a key out to keep the preset's value."""
    p = Path(path)
    kind = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}.get(p.suffix.lower(), "JSON")
    try:
        text = p.read_text()
        data = _PARSERS[kind](text)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p} is a folder, not a {kind} file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    except ValueError as e:  # JSON, TOML and YAML (wrapped below) syntax errors, and bytes that are not UTF-8
        raise ConfigError(f"config file {p} is not valid {kind}: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a {kind} object (a mapping of sections)")
    return data


def _yaml(text: str) -> Any:
    """YAML 1.2's numbers (PyYAML implements 1.1, where 1e-3 is a string), through yaml.safe_load's loader."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
                   r"(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 -- a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        raise ValueError(str(e)) from None


def _toml(text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, from PyPI
        import tomli as tomllib  # type: ignore[no-redef]

    return tomllib.loads(text)


_PARSERS = {"JSON": json.loads, "YAML": _yaml, "TOML": _toml}
