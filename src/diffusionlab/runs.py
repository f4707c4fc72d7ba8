"""A run directory on disk: its config, its newest checkpoint, and the model rebuilt from them."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .baselines.config import SECTIONS as BASELINE_KINDS
from .codecs import Codec, build_codec
from .data.tokenizer import CaptionTokenizer
from .codecs.autoencoder import load_autoencoder, read_weights
from .denoiser import Denoiser
from .errors import CheckpointError, ConfigError
from .models import build_network
from .processes import Process
from .superres import SuperResolution
from .training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from .training.config import AutoencoderRunConfig, RunConfig


def read_config_json(run_dir: Path) -> dict[str, Any]:
    """RUN/config.json as a dict, with one-line errors."""
    path = Path(run_dir) / "config.json"
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a run directory")
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json)")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"run config {path} is corrupt (not valid JSON)") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"run config {path} is corrupt (not a JSON object)")
    return d


def saved_state(checkpoint: Path) -> dict[str, Any] | None:
    """A checkpoint's state.json (None if it cannot be read or is not a JSON object)."""
    try:
        d = json.loads((Path(checkpoint) / "state.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def saved_config(checkpoint: Path) -> dict[str, Any] | None:
    """The run config stored in a checkpoint's state.json (None if it has none or cannot be read)."""
    d = (saved_state(checkpoint) or {}).get("config")
    return d if isinstance(d, dict) else None


def _newest(run_dir: Path, read: Callable[[Path], dict[str, Any] | None]) -> tuple[dict[str, Any] | None, Path | None]:
    """`read` of the newest checkpoint of `run_dir` for which it is not None, and that checkpoint (None, None)."""
    for _, path in reversed(list_checkpoints(run_dir)):
        d = read(path)
        if d is not None:
            return d, path
    return None, None


def newest_saved_state(run_dir: Path) -> dict[str, Any] | None:
    """The state.json of the newest checkpoint of `run_dir` that can be read (None if there is none)."""
    return _newest(run_dir, saved_state)[0]


def newest_saved_config(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The config stored in the newest checkpoint whose state.json can be read, and that checkpoint."""
    return _newest(run_dir, saved_config)


def resume_base(run_dir: Path, allow_change: bool) -> dict[str, Any]:
    """The config a resumed run starts from: the newest checkpoint's, not the editable config.json. An edit of
    config.json is refused if it changes what the run is, and adopted only with `allow_change` otherwise."""
    from .training.drift import check_changes, config_changes

    on_disk = read_config_json(run_dir)
    saved, ckpt = newest_saved_config(run_dir)
    if saved is None:  # killed before its first checkpoint: config.json is all there is
        return on_disk
    edits = [c for c in config_changes(saved, on_disk) if c.old is not None and c.new is not None]
    if edits:
        where = f"{Path(run_dir) / 'config.json'} (edited since checkpoint {ckpt.name if ckpt else '?'})"
        check_changes(edits, allow_change, where)
        if not allow_change:
            raise ConfigError(f"{where} differs: {'; '.join(map(str, edits[:3]))}. Resume with --allow-change to "
                              "adopt the edit (recorded in history.jsonl), or undo it")
        return on_disk
    return saved


def trusted_config(run_dir: Path, checkpoint: Path | None = None) -> dict[str, Any]:
    """The config a trained model was trained with: the one inside its checkpoint (the newest, or `checkpoint`);
    config.json, an editable side file, only for a checkpoint written before checkpoints carried their config."""
    saved = saved_config(checkpoint) if checkpoint is not None else newest_saved_config(run_dir)[0]
    if saved is None:
        return read_config_json(run_dir)
    on_disk = read_config_json(run_dir)
    if on_disk != saved:
        from .training.drift import config_changes

        edits = [c for c in config_changes(saved, on_disk) if c.kind != "bookkeeping"]
        if edits:
            print(f"note: {Path(run_dir) / 'config.json'} differs from the checkpoint's config "
                  f"({'; '.join(map(str, edits[:2]))}); using the checkpoint's", file=sys.stderr)
    return saved


def read_run_config(run_dir: Path, checkpoint: Path | None = None) -> RunConfig:
    """The config of a diffusion run (the one its checkpoint was trained with: `trusted_config`) as a RunConfig."""
    d = trusted_config(run_dir, checkpoint)
    if d.get("kind") == "autoencoder":
        raise ConfigError(f"{run_dir} is an autoencoder run, not a diffusion model: train a latent model on it with "
                          f"`diffusionlab train --latent {run_dir}`")
    if d.get("kind") in BASELINE_KINDS:
        raise ConfigError(f"{run_dir} is a {d['kind']} run, not a diffusion model: `sample` and `evaluate` take it, "
                          "the diffusion-only commands do not")
    return RunConfig.from_dict(d)


def is_baseline_run(run_dir: Path) -> bool:
    """Is `run_dir` a GAN, VAE or normalizing-flow run (baselines/)? False for anything else, errors included."""
    path = Path(run_dir) / "config.json"
    return path.is_file() and read_config_json(Path(run_dir)).get("kind") in BASELINE_KINDS


def read_autoencoder_run_config(run_dir: Path, checkpoint: Path | None = None) -> AutoencoderRunConfig:
    """The config of an autoencoder run (the one its checkpoint was trained with), with one-line errors."""
    d = trusted_config(run_dir, checkpoint)
    if d.get("kind") != "autoencoder":
        raise ConfigError(f"{run_dir} is not an autoencoder run (train one with "
                          f"`diffusionlab train-autoencoder --preset mnist-ae --out DIR`)")
    return AutoencoderRunConfig.from_dict(d)


def autoencoder_section(ae_run: str | Path, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The `codec` section of a diffusion run that lives in the latent space of autoencoder run `ae_run` (its newest
    checkpoint, or `checkpoint`): source, checkpoint, sha256 of the EMA weights, scale factor and model config."""
    ae_run = Path(ae_run).resolve()
    cfg = read_autoencoder_run_config(ae_run)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(ae_run)
    try:
        state = json.loads((ckpt / "state.json").read_text())
        scale = float(state["latent"]["scale_factor"])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise CheckpointError(f"autoencoder checkpoint {ckpt} is corrupt or has no latent scale factor") from None
    weights = ckpt / "ema.safetensors"
    data = read_weights(weights)
    model = dict(cfg.model)
    load_autoencoder(model, data, weights)  # a damaged checkpoint fails here, before any work
    return {"kind": "autoencoder", "source": str(ae_run), "checkpoint": ckpt.name,
            "sha256": hashlib.sha256(data).hexdigest(), "scale_factor": scale, "model": model}


@dataclass
class LoadedRun:
    """A trained model ready to sample: config, process, network (eval mode) and its Denoiser."""

    config: RunConfig
    process: Process
    net: torch.nn.Module
    denoiser: Denoiser
    step: int
    checkpoint: Path
    codec: Codec
    tokenizer: CaptionTokenizer | None = None  # a text run's: prompts -> token ids (y)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the network sees and the samplers draw (the codec's latent shape)."""
        m = self.config.model
        size = m["image_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (m["in_channels"], h, w)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this run generates (after decoding)."""
        return self.codec.image_shape(self.model_shape)

    def sampler_and_steps(self, sampler: str | None = None, steps: int | None = None,
                          sigma_spacing: str | None = None) -> tuple[str, int]:
        """The sampler and step count asked for, else the run's recommended ones (config sample.recommended_*), else
        the family's defaults; one-line errors for counts the sampler cannot use."""
        from .sampling.spec import sampler_and_steps

        return sampler_and_steps(self.process, sampler, steps, sigma_spacing, self.config.sample.recommended())

    @property
    def superres(self) -> SuperResolution | None:
        """The super-resolution task of an upsampler (None for a model that draws from noise)."""
        return SuperResolution.from_config(self.config.task)

    @property
    def lowres_shape(self) -> tuple[int, int, int] | None:
        """(C, h, w) of the low-resolution images an upsampler takes (None for other runs)."""
        sr = self.superres
        return None if sr is None else sr.lowres_shape(self.image_shape)


def load_run(run_dir: Path, checkpoint: Path | None = None, use_ema: bool = True,
             mixed_precision: str = "no") -> LoadedRun:
    """Rebuild the model of a run from its newest (or the given) checkpoint; EMA weights by default. With
    `mixed_precision` bf16 (or auto on a CPU with native bf16: training/precision.py) the denoiser evaluates the
    network under bf16 autocast."""
    read_config_json(run_dir)  # "not a run directory" before "no checkpoint"
    ckpt_path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    cfg = read_run_config(run_dir, ckpt_path)
    ckpt = load_checkpoint(ckpt_path, with_optimizer=False)
    process = cfg.process.build()
    net = build_network(cfg.model)
    try:
        net.load_state_dict(ckpt.ema if use_ema else ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match the model in config.json ({str(e).splitlines()[0][:100]})") from None
    net.eval()
    codec = build_codec(cfg.codec, Path(run_dir))
    tokenizer = None
    if cfg.model.get("text_encoder"):
        from .training.diffusion import TOKENIZER_FILE

        path = Path(run_dir) / TOKENIZER_FILE
        try:
            tokenizer = CaptionTokenizer.from_json(path.read_text(), str(path))
        except OSError:
            raise CheckpointError(f"{path} is missing: a text run needs its tokenizer") from None
    from .training.precision import for_sampling

    sampled, _ = for_sampling(net, mixed_precision)
    return LoadedRun(cfg, process, net, process.denoiser(sampled), ckpt.step, ckpt_path, codec, tokenizer)
