"""The training task of every Gaussian family (Ho et al. 2020, Algorithm 1, with the family's own loss).

One step: x0 ~ q(x0) (a batch of the data, encoded by the run's codec), t and eps from the family's law (or
iDDPM's importance sampler of t), labels dropped to the null class with probability p_uncond for
classifier-free guidance, and a gradient step on the family's loss. The loop's bookkeeping is in loop.py.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor

from ..codecs import Codec, PixelData, build_codec
from ..data import ImageDataset, from_model_range, load_dataset
from ..data.tokenizer import CaptionTokenizer
from ..errors import ConfigError
from ..models import build_network
from ..processes import Process
from ..sampling import SamplerOptions, generate
from ..superres import SuperResolution, augment, condition, degrade
from ..viz import save_grid
from .config import RunConfig
from .determinism import derive_seed
from .loop import INIT_KEY, StepContext
from .presets import warn_if_oversized


TEXT_ENCODER_DEFAULTS = {"dim": 64, "layers": 2, "heads": 4}
TOKENIZER_FILE = "text/tokenizer.json"  # a text run's tokenizer, kept in the run directory


def fill_model_config(cfg: RunConfig, process: Process, shape: tuple[int, int, int], data: ImageDataset,
                      tokenizer: CaptionTokenizer | None = None, superres: SuperResolution | None = None) -> None:
    """Complete the `model` section: the network, its input size and channels (the codec's latent shape), its
    output channels (the family's), its time convention (the family's `time_scale`), the number of classes, for a
    text run the text encoder's vocabulary, and for super-resolution the shape of the low-resolution condition."""
    m = cfg.model
    if superres is not None:
        c, h, w = superres.lowres_shape(data.shape)
        m["lowres"] = {"image_size": h if h == w else [h, w], "channels": c}
    elif "lowres" in m:
        raise ConfigError("model.lowres is the condition of a super-resolution model: it needs task.kind 'superres'")
    channels, height, width = shape
    m.setdefault("network", "unet")
    m["image_size"] = height if height == width else [height, width]
    m["in_channels"] = channels
    out = process.out_channels(channels)
    m["out_channels"] = out if out != channels else None
    if process.time_scale != 1.0:
        m.setdefault("time_scale", process.time_scale)  # a value already in the config is kept
    if cfg.train.class_conditional:
        if cfg.train.text_conditional:
            raise ConfigError("train on class labels or on captions, not both (class_conditional, text_conditional)")
        if data.labels is None or not data.num_classes:
            raise ConfigError(f"class_conditional training needs labels, and dataset {data.name} has none")
        m["num_classes"] = data.num_classes
    else:
        m["num_classes"] = None
    if tokenizer is not None:  # the text encoder's sizes: the user's (or GLIDE-like small defaults) + the vocabulary
        te = dict(m.get("text_encoder") or {})
        if te.get("kind") == "minilm":  # frozen: its sizes and the SHA-256 of the installed weights
            from ..models.pretrained_text import check_weights, pretrained_fields

            check_weights(te.get("weights_sha256"))  # a resumed run refuses other weights
            te.update(pretrained_fields())
        else:
            te = {**TEXT_ENCODER_DEFAULTS, **te}
        m["text_encoder"] = {**te, "vocab_size": tokenizer.vocab_size, "max_len": tokenizer.max_len}
    elif m.get("text_encoder") is not None:
        raise ConfigError("model.text_encoder sizes a text encoder: it needs train.text_conditional (--text-conditional)")


class DiffusionTask:
    """Algorithm 1 for a Gaussian family on the codec's space: one network, one AdamW optimizer."""

    def __init__(self, cfg: RunConfig, run_dir: Path, accelerator: Accelerator, resume: bool = False):
        tc = cfg.train
        self.process = cfg.process.build()
        # A new run reads the codec's weights from their source; a resumed one from its own copy.
        self.codec: Codec = build_codec(cfg.codec, run_dir if resume else None).to(accelerator.device)
        if self.process.pixel_decoder and not self.codec.pixel_space:
            raise ConfigError(f"loss {cfg.process['loss']} ends in a decoder over the 256 pixel bins, which latents do "
                              f"not have: use loss simple in {self.codec.kind} space")
        self.data = load_dataset(cfg.data.source, cfg.data.data_dir, cfg.data.split, cfg.data.image_size,
                                 cfg.data.channels)
        self.shape = self.codec.latent_shape(self.data.shape)
        warn_if_oversized(cfg.preset, self.data.shape, accelerator.is_main_process)
        self.tokenizer = self._tokenizer(cfg, run_dir, resume)
        self.superres = SuperResolution.from_config(cfg.task)
        fill_model_config(cfg, self.process, self.shape, self.data, self.tokenizer, self.superres)
        self.cfg, self.config = cfg, cfg.to_dict()
        self.files = self.codec.files()
        self.caption_ids = self.null_caption = None
        if self.tokenizer is not None:
            self.files[TOKENIZER_FILE] = self.tokenizer.to_json().encode()
            self.caption_ids = self.tokenizer.encode(self.data.captions)  # type: ignore[arg-type]
            self.null_caption = self.tokenizer.encode([""])[0]  # caption dropout's target: the null condition
        t0 = time.perf_counter()
        self.encoded = self.codec.encode_dataset(self.data.images, cfg.data.hflip)  # the trainer encodes
        self.encode_seconds = time.perf_counter() - t0
        if not self.codec.pixel_space and accelerator.is_main_process:
            print(f"encoded {len(self.data)} images into {self.codec.kind} latents {self.shape} in "
                  f"{self.encode_seconds:.1f} s", flush=True)
        self.t_sampler = self.process.timestep_sampler()
        torch.manual_seed(derive_seed(tc.seed, INIT_KEY))  # identical initial weights on every process
        self.model = build_network(cfg.model)
        # PyTorch's fused AdamW kernel: the same update as the per-tensor loop in one pass over the parameters;
        # 1.02-1.04x per step on the 16-channel mnist preset (benchmarks/bench_unet.py, BENCHMARKS.md).
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=tc.adam_betas,
                                           weight_decay=tc.weight_decay, fused=True)
        self.text_seconds = 0.0
        if hasattr(getattr(self.model, "text", None), "precompute"):  # a frozen encoder: each caption once, now
            t0 = time.perf_counter()
            n = self.model.text.precompute(torch.cat([self.caption_ids, self.null_caption[None]]))  # type: ignore
            self.text_seconds = time.perf_counter() - t0
            if accelerator.is_main_process:
                print(f"encoded {n} distinct captions with the frozen text encoder in {self.text_seconds:.1f} s",
                      flush=True)
        self.extra: dict[str, Any] = {}
        self.base_lr = {"model": tc.lr}
        self.num_examples = len(self.data)
        self.null_label = self.data.num_classes if tc.class_conditional else None
        space = "" if self.codec.kind == "pixel" else f" in {self.codec.kind} space {self.shape}"
        task = "" if self.superres is None else (f", x{self.superres.factor} super-resolution from "
                                                 f"{'x'.join(map(str, self.superres.lowres_shape(self.data.shape)))}")
        self.description = (f"{cfg.process.method} on {self.data.name} ({len(self.data)} images {self.data.shape})"
                            f"{space}{task}")

    def _tokenizer(self, cfg: RunConfig, run_dir: Path, resume: bool) -> CaptionTokenizer | None:
        """A text run's tokenizer: fitted on the captions when the run starts, read from the run when it resumes."""
        if not cfg.train.text_conditional:
            return None
        if self.data.captions is None:
            raise ConfigError(f"text_conditional training needs captions, and dataset {self.data.name} has none "
                              "(use digits-text, mnist-text, digits-pairs, mnist-pairs or a captioned image folder)")
        if resume:
            path = Path(run_dir) / TOKENIZER_FILE
            try:
                text = path.read_text()
            except OSError:
                raise ConfigError(f"--resume: {path} is missing (the run's tokenizer)") from None
            return CaptionTokenizer.from_json(text, str(path))
        if (cfg.model.get("text_encoder") or {}).get("kind") == "minilm":
            from ..models.pretrained_text import minilm_tokenizer

            return minilm_tokenizer(self.data.captions)  # the pretrained encoder's own WordPiece vocabulary
        return CaptionTokenizer.fit(self.data.captions)

    def step(self, ctx: StepContext) -> dict[str, Tensor]:
        """Algorithm 1, lines 2-5, for the global batch; this process computes its rows."""
        tc, g, mine, dev, B = self.cfg.train, ctx.generator, ctx.mine, ctx.device, self.cfg.train.batch_size
        # Lines 2-4: x0 ~ q(x0), t ~ U{1..T} (or the family's law of t), eps ~ N(0, I) -- for the global batch.
        t, eps = self.process.draw((B, *self.shape), g)
        weights = None
        if self.t_sampler is not None:  # iDDPM section 3.3: t ~ p_t, loss weighted by 1 / (T p_t)
            t, weights = self.t_sampler.sample(B, g)
        flip = torch.rand(B, generator=g) < 0.5
        drop = torch.rand(B, generator=g) < tc.label_dropout
        noise = torch.randn((B, *self.shape), generator=g) if self.codec.stochastic else None
        idx = ctx.indices[mine]
        x0 = self.encoded.batch(idx, flip[mine] if self.cfg.data.hflip else None,
                                None if noise is None else noise[mine]).to(dev)
        y = None
        if self.caption_ids is not None:  # captions dropped to the empty one with the same draws as labels
            ids = self.caption_ids[idx]
            y = torch.where(drop[mine].view(-1, 1), self.null_caption.expand_as(ids), ids).to(dev)  # type: ignore[union-attr]
        if self.null_label is not None:
            labels = self.data.labels[idx]  # type: ignore[index]
            y = torch.where(drop[mine], torch.full_like(labels, self.null_label), labels).to(dev)
        if self.superres is not None:  # the condition: this batch's pixels degraded, then augmented at s ~ U[0, s_max]
            c, h, w = self.superres.lowres_shape(self.data.shape)
            level, aug_noise = torch.rand(B, generator=g), torch.randn((B, c, h, w), generator=g)
            pixels = PixelData(self.data.images).batch(idx, flip[mine] if self.cfg.data.hflip else None)
            y = self.superres.training_condition(pixels, level[mine], aug_noise[mine]).to(dev)
        with ctx.autocast():
            # Line 5: gradient step on || target - net(alpha_t x0 + sigma_t eps, t) ||^2 (the family's loss)
            per_example = self.process.loss(self.model, x0, t[mine].to(dev), eps[mine].to(dev), y)
            loss = (per_example * weights[mine].to(dev)).mean() if weights is not None else per_example.mean()
        ctx.backward(loss)
        history = ctx.gather(per_example.detach().float()).cpu() if self.t_sampler is not None else None
        if ctx.apply(self.optimizer, self.model.parameters(), loss, tc.grad_clip) and history is not None:
            self.t_sampler.update(t, history)  # every process records the whole global batch, in rank order
        return {"loss": loss.detach()}

    def state_dict(self, ema_weights: dict[str, Tensor]) -> dict[str, Any]:
        """The importance sampler's loss history (iDDPM), when there is one; the time the codec took to encode the
        training set (outside the loop's elapsed time: part of the run's compute all the same)."""
        state: dict[str, Any] = {"codec_encode_seconds": round(self.encode_seconds, 3)}
        if self.text_seconds:
            state["text_encode_seconds"] = round(self.text_seconds, 3)
        if self.t_sampler is not None:
            state["timestep_sampler"] = self.t_sampler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        if self.t_sampler is not None:
            self.t_sampler.load_state_dict(state["timestep_sampler"])

    def preview(self, ema_weights: dict[str, Tensor], path: Path) -> Path:
        """The preview grid from the EMA weights, with the run's seed (so grids are comparable across steps)."""
        y, n = None, self.cfg.sample.n
        if self.caption_ids is not None:  # the first captions of the data, the same at every step
            y = self.caption_ids[torch.arange(n) % len(self.caption_ids)]
        if self.superres is not None:  # the first images of the data, degraded (no augmentation noise at level 0)
            pixels = PixelData(self.data.images).batch(torch.arange(n) % len(self.data), None)
            lowres = degrade(pixels, self.superres.factor, self.superres.blur)
            s = torch.full((n,), self.superres.aug_level)
            y = condition(augment(lowres, s, torch.randn(lowres.shape, generator=torch.Generator().manual_seed(0))), s)
        return sample_grid(self.cfg, self.process, self.codec, ema_weights, self.shape, path, y)


def sample_grid(cfg: RunConfig, process: Process, codec: Codec, weights: dict[str, Tensor],
                shape: tuple[int, int, int], path: Path, y: Tensor | None = None) -> Path:
    """Draw cfg.sample.n images with `weights` and the training-time sampler settings (conditioned on `y`, or on
    balanced classes for a class-conditional run), and save them as a grid."""
    preview = build_network(cfg.model)
    preview.load_state_dict(weights)
    preview.eval()
    s = cfg.sample
    if y is None and cfg.model.get("num_classes"):
        y = torch.arange(s.n) % cfg.model["num_classes"]
    result = generate(process.denoiser(preview), process, shape, s.n, s.sampler, s.steps,
                      options=SamplerOptions(eta=s.eta, clip_x0=s.clip_x0), seed=cfg.train.seed, y=y,
                      codec=codec)
    return save_grid(from_model_range(result.images), path, nrow=int(math.ceil(math.sqrt(s.n))))


__all__ = ["TEXT_ENCODER_DEFAULTS", "TOKENIZER_FILE", "DiffusionTask", "fill_model_config", "sample_grid"]
