"""The Python API: from a run directory to images and scores in three lines, with the command line's defaults.

    import diffusionlab as dl
    run = dl.load_run("runs/digits")
    images = run.sample(16, sampler="dpmpp2m", steps=10, seed=0)   # uint8 (16, C, H, W), x0 clipped as the CLI does
    dl.save_grid(images, "grid.png")
    report = run.evaluate(n=1000)                                  # FID, KID, precision/recall, the real-data floor
    run = dl.train({"train": {"steps": 500}}, "runs/digits-2", preset="digits")

A `Run` is any trained run: a diffusion family (pixels or latents, text or class conditional) or a GAN, VAE or
flow. `sample` returns what `diffusionlab sample` writes for the same seed and settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from .errors import ConfigError

if TYPE_CHECKING:
    from .sampling import Frame


class Run:
    """A trained run, loaded (EMA weights by default) and ready to sample and to score."""

    def __init__(self, path: Path, loaded: Any, baseline: bool):
        self.path, self.loaded, self.baseline = path, loaded, baseline
        self.last_nfe = 0  # network evaluations per image of the last sample / inpaint / edit call

    @property
    def step(self) -> int:
        """The training step of the loaded checkpoint."""
        return self.loaded.step

    @property
    def config(self) -> dict[str, Any]:
        """The run's complete config (config.json)."""
        return self.loaded.config.to_dict()

    @property
    def family(self) -> str:
        """ddpm, flow, vpsde, vesde, ncsn; or gan, vae, nf."""
        return self.loaded.kind.name if self.baseline else self.loaded.process.method

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it draws."""
        return self.loaded.image_shape

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a class-conditional run (None otherwise)."""
        return self.loaded.num_classes if self.baseline else self.loaded.config.model.get("num_classes")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.family}, step {self.step}, images {'x'.join(map(str, self.image_shape))})"

    def sample(self, n: int = 16, *, sampler: str | None = None, steps: int | None = None, seed: int = 0,
               classes: int | str | Sequence[int] | None = None, prompt: str | Sequence[str] | None = None,
               guidance_scale: float = 1.0, eta: float = 0.0, batch_size: int = 256,
               progress: bool = False, on_step: Callable[[Frame], None] | None = None) -> Tensor:
        """n images as uint8 (N, C, H, W). `classes`: a class, "all" (0, 1, 2, ... in turn) or one per image;
        `prompt`: a caption or one per image (cycled) for a text run; `guidance_scale` S: classifier-free guidance
        (1 plain conditional, 0 unconditional). The sampler and step count default to the run's recommended ones
        (a preset's measured choice), else the family's own. `on_step`
        sees every step of the first batch (`sampling.Frame`: x_t and the x0 prediction); raising in it stops."""
        from .data import from_model_range

        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        y = self._condition(n, classes, prompt)
        if self.baseline:
            if sampler is not None or steps is not None or guidance_scale != 1.0:
                raise ConfigError(f"a {self.family} draws each sample in one network pass: no sampler, steps or "
                                  "guidance")
            self.last_nfe = 1
            return self.loaded.sample(n, seed, y, batch_size, progress=progress)
        from .sampling import SamplerOptions, generate

        run = self.loaded
        sampler, steps = run.sampler_and_steps(sampler, steps)
        with torch.no_grad():
            res = generate(self._guided(y, guidance_scale), run.process, run.model_shape, n, sampler, steps,
                           options=SamplerOptions(eta=eta), seed=seed, y=y, codec=run.codec, batch_size=batch_size,
                           progress=progress, on_step=on_step)
        self.last_nfe = res.nfe
        return from_model_range(res.images)

    def inpaint(self, images: Tensor, mask: Tensor, n: int = 1, *, sampler: str = "ddpm", steps: int | None = None,
                seed: int = 0, eta: float = 0.0, resample: int = 1, jump: int = 1,
                classes: int | str | Sequence[int] | None = None, prompt: str | Sequence[str] | None = None,
                guidance_scale: float = 1.0, on_step: Callable[[Frame], None] | None = None) -> Tensor:
        """RePaint (`diffusionlab inpaint`): n outputs per uint8 image (N, C, H, W) that keep the pixels where `mask`
        (H, W) is 1 and generate the rest; uint8 (N n, C, H, W), the same images as the command for the same seed."""
        from .image_files import check_mask

        return self._condition_images(images, n, sampler, steps, seed, eta, classes, prompt, guidance_scale, on_step,
                                      mask=check_mask(mask, self.image_shape), resample=resample, jump=jump)

    def edit(self, images: Tensor, strength: float, n: int = 1, *, sampler: str = "ddim", steps: int | None = None,
             seed: int = 0, eta: float = 0.0, classes: int | str | Sequence[int] | None = None,
             prompt: str | Sequence[str] | None = None, guidance_scale: float = 1.0,
             on_step: Callable[[Frame], None] | None = None) -> Tensor:
        """SDEdit (`diffusionlab edit`): noise each uint8 image to t = strength T and denoise it, n times;
        strength 0 returns the input, 1 all but ignores it."""
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"strength must be in [0, 1], got {strength}")
        return self._condition_images(images, n, sampler, steps, seed, eta, classes, prompt, guidance_scale, on_step,
                                      strength=strength)

    def _guided(self, y: Tensor | None, guidance_scale: float) -> Any:
        """The denoiser, with classifier-free guidance at scale S when there is a condition y."""
        from .guidance import ClassifierFreeGuidance

        run = self.loaded
        if y is None:
            return run.denoiser
        if not (guidance_scale >= 0 and guidance_scale < float("inf")):
            raise ConfigError(f"guidance_scale must be a number >= 0, got {guidance_scale}")
        null = run.tokenizer.encode([""])[0] if run.tokenizer is not None else self.num_classes
        return ClassifierFreeGuidance(run.denoiser, float(guidance_scale), null_label=null)

    def _condition_images(self, images: Tensor, n: int, sampler: str, steps: int | None, seed: int, eta: float,
                          classes: Any, prompt: Any, guidance_scale: float, on_step: Any, *, mask: Tensor | None = None,
                          strength: float | None = None, resample: int = 1, jump: int = 1) -> Tensor:
        """inpaint / edit: the checks of the commands, then sampling.conditioned's batch loop."""
        from .data import from_model_range, to_model_range
        from .sampling.conditioned import inpaint_or_edit

        what = "inpainting" if mask is not None else "SDEdit"
        if self.baseline or self.loaded.codec.kind != "pixel":
            raise ConfigError(f"{what} needs a pixel-space diffusion run; this one is a "
                              f"{self.family if self.baseline else self.loaded.codec.kind + '-space model'}")
        if sampler not in ("ddpm", "ddim"):
            raise ConfigError(f"{what} runs with the ddpm or ddim sampler, not {sampler!r}")
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"eta must be in [0, 1], got {eta}")
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ConfigError(f"images must be uint8 (N, {', '.join(map(str, self.image_shape))}); got "
                              f"{images.dtype} {tuple(images.shape)}")
        run = self.loaded
        sampler, steps = run.sampler_and_steps(sampler, steps)
        if mask is not None and jump > steps:
            raise ConfigError(f"jump {jump} is more than the {steps} steps of the chain")
        total = len(images) * n
        y = self._condition(total, classes, prompt)
        out, self.last_nfe = inpaint_or_edit(self._guided(y, guidance_scale), run.process.vp_schedule(steps),
                                 to_model_range(images).repeat_interleave(n, 0), mask=mask, strength=strength,
                                 sampler=sampler, variance=run.process.variance, eta=eta, resample=resample,
                                 jump=jump, clip=run.codec.x0_clip, seed=seed, y=y, on_step=on_step)
        return from_model_range(out)

    def _condition(self, n: int, classes: Any, prompt: Any) -> Tensor | None:
        """The labels or token ids y for n samples (None: unconditional)."""
        tokenizer = None if self.baseline else self.loaded.tokenizer
        if prompt is not None:
            if tokenizer is None:
                raise ConfigError("prompt needs a text run (trained with --text-conditional); this one is not")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or any(not p.strip() for p in prompts):
                raise ConfigError("a prompt is empty (leave prompt out to draw unconditionally)")
            return tokenizer.encode([prompts[i % len(prompts)] for i in range(n)])
        if classes is None:
            return None
        from .guidance import check_labels

        k = self.num_classes
        if k is None:
            raise ConfigError("this run is unconditional (trained without --class-conditional): classes do not apply")
        if classes == "all":
            y = torch.arange(n) % k
        elif isinstance(classes, int):
            y = torch.full((n,), classes, dtype=torch.long)
        else:
            y = torch.as_tensor(list(classes), dtype=torch.long)
            if len(y) != n:
                raise ConfigError(f"classes gives {len(y)} labels for {n} images")
        check_labels(y, k)
        return y

    def evaluate(self, n: int = 1000, *, sampler: str | None = None, steps: int | None = None, seed: int = 0,
                 split: str = "test", extractor: str = "auto", k: int = 3, progress: bool = False) -> dict[str, Any]:
        """FID, KID, precision/recall (k nearest neighbours) and IS of n samples against the run's `split`, beside
        the real-data floor at the same count (a class-conditional run draws the classes in turn)."""
        from .evaluation.evaluate import build_extractor, load_split, quality_with_floor

        data = self.loaded.config.data
        train, test = load_split(data, "train"), load_split(data, split)
        features = build_extractor(extractor, train, test if split == "test" else load_split(data, "test"),
                                   progress=progress)
        fake = self.sample(n, sampler=sampler, steps=steps, seed=seed,
                           classes="all" if self.num_classes else None, progress=progress)
        return quality_with_floor(fake, train, test, features, k=k, seed=seed)


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, *, ema: bool = True,
             mixed_precision: str = "auto") -> Run:
    """A trained run (its newest checkpoint, or `checkpoint`); the network runs in bf16 autocast where the CPU
    multiplies bf16 natively (mixed_precision "auto", training/precision.py), else in float32 ("no")."""
    from .runs import is_baseline_run, load_run as load_diffusion, trusted_config
    from .training.checkpoint import latest_checkpoint

    path = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if is_baseline_run(path):
        from .baselines import load_baseline

        if mixed_precision not in ("auto", "no"):
            raise ConfigError("mixed_precision bf16 applies to diffusion runs, not to a GAN, VAE or flow")
        ckpt = ckpt or latest_checkpoint(path)
        return Run(path, load_baseline(path, trusted_config(path, ckpt), ckpt, use_ema=ema), True)
    return Run(path, load_diffusion(path, ckpt, use_ema=ema, mixed_precision=mixed_precision), False)


def train(config: dict[str, Any] | str | Path | None = None, run_dir: str | Path | None = None, *,
          preset: str | None = None, resume: bool = False, progress: bool | None = None) -> Run:
    """Train a run and return it: `preset` (default digits; a GAN, VAE or flow preset such as digits-gan too), with
    `config` (a dict of sections, or a JSON/YAML/TOML file) merged over it; `resume=True` continues `run_dir`."""
    import time

    from .baselines import BaselineRunConfig, train_baseline
    from .runs import is_baseline_run, resume_base
    from .training.config import RunConfig, deep_update, merge_config, preset_config, read_config_file
    from .training.presets import BASELINE_PRESETS
    from .training.trainer import train as train_diffusion

    layer = read_config_file(config) if isinstance(config, (str, Path)) else dict(config or {})
    if resume:
        if run_dir is None:
            raise ConfigError("resume=True needs run_dir (the run to continue)")
        path = Path(run_dir)
        base = resume_base(path, False)
        baseline = is_baseline_run(path)
    else:
        name = preset or layer.get("preset") or "digits"
        baseline = name in BASELINE_PRESETS or "kind" in layer
        base = {"preset": name, **BASELINE_PRESETS[name]} if name in BASELINE_PRESETS else preset_config(name)
        path = Path(run_dir) if run_dir is not None else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    merged = (deep_update if baseline else merge_config)(base, layer)
    if baseline:
        train_baseline(BaselineRunConfig.from_dict(merged), path, resume=resume, progress=progress)
    else:
        train_diffusion(RunConfig.from_dict(merged), path, resume=resume, progress=progress)
    return load_run(path)


__all__ = ["Run", "load_run", "train"]
