"""The diffusion UNet (docs/maths.md section 8), in the DDPM / improved-DDPM layout.

Ho et al. 2020, Appendix B: a PixelCNN++-style UNet of pre-activated ResNet blocks with GroupNorm,
the sinusoidal time embedding added inside every block, self-attention at low resolution and skip
connections from encoder to decoder. Nichol & Dhariwal 2021 (iDDPM): multi-head attention, zero-init
of the last layer of every residual branch, label embedding added to the time embedding
(Dhariwal & Nichol 2021 use the same for class conditioning).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import validation as v
from ..cpuinfo import CPUINFO, cpuinfo_field
from ..errors import ConfigError
from .config import SizedConfig, resnet_parameters
from .layers import (AttentionBlock, CrossAttentionBlock, Downsample, ResBlock, Upsample, group_norm,
                     timestep_embedding, zero_)
from .text_encoder import TextEncoderConfig, build_text_encoder


def cpu_vendor(cpuinfo: Path | str = CPUINFO) -> str:
    """The CPU's vendor_id ("GenuineIntel", "AuthenticAMD", ...), or "" where it cannot be read."""
    return cpuinfo_field("vendor_id", cpuinfo) or ""


def preferred_memory_format(on_amd_avx512: torch.memory_format = torch.contiguous_format) -> torch.memory_format:
    """channels_last where the UNet's oneDNN kernels were measured faster in it (Intel AVX-512/AMX CPUs, GPUs), else
    the standard layout; `on_amd_avx512` is the layout for an AMD CPU with AVX-512 (another network's measurement).

    Measured (BENCHMARKS.md, "UNet vs diffusers UNet2DModel", our layout against the other in one interleaved run):
    on an Intel Xeon with AVX-512/AMX channels_last made the float32 UNet faster; on AVX2-only AMD EPYCs it made it
    slower (with 2 threads, our training step 1,050 against 681 ms; "2 threads, AVX2"); on an AMD EPYC with AVX-512
    and avx512_bf16 (Zen 4) the standard layout was as fast or faster in bf16, what `auto` trains in there (training
    step 1.00x at 16 and 32 base channels, sampling forward 1.06x and 1.02x), and faster in float32 on the small
    networks (the 16-channel mnist preset: 1.27x training, 1.57x sampling; "2 threads, AVX512").
    DIFFUSIONLAB_MEMORY_FORMAT=channels_last|contiguous overrides the choice.
    """
    forced = os.environ.get("DIFFUSIONLAB_MEMORY_FORMAT")
    if forced is not None:
        if forced not in ("channels_last", "contiguous"):
            raise ConfigError(f"DIFFUSIONLAB_MEMORY_FORMAT must be channels_last or contiguous, got {forced!r}")
        return torch.channels_last if forced == "channels_last" else torch.contiguous_format
    if torch.cuda.is_available():
        return torch.channels_last
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return torch.channels_last if cpu_vendor() == "GenuineIntel" else on_amd_avx512
    return torch.contiguous_format


@dataclass
class UNetConfig(SizedConfig):
    """Hyper-parameters of `UNet`; validated on construction (ConfigError with a one-line message)."""

    label: ClassVar[str] = "UNetConfig"
    RANGES: ClassVar[dict[str, v.Range]] = {
        "image_size": v.at_least(1, v.MAX_IMAGE_SIDE), "in_channels": v.at_least(1), "out_channels": v.at_least(1),
        "base_channels": v.at_least(1), "channel_mult": v.at_least(1), "num_res_blocks": v.at_least(1),
        "attention_resolutions": v.at_least(1), "num_heads": v.at_least(1), "dropout": v.UNIT,
        "num_classes": v.at_least(1), "time_scale": v.above(0), "groups": v.at_least(1)}

    image_size: int | tuple[int, int]  # H (=W) or (H, W)
    in_channels: int = 1
    out_channels: int | None = None  # None -> in_channels (2 * in_channels for a learned variance)
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = ()  # feature-map heights (7, 14 for 28x28) that get self-attention
    num_heads: int = 4
    dropout: float = 0.0
    num_classes: int | None = None  # label num_classes is the reserved NULL label (classifier-free guidance)
    time_scale: float = 1.0  # t is multiplied by this before the sinusoidal embedding
    groups: int = 32  # GroupNorm groups (the largest divisor of the channel count <= groups)
    # Text-to-image: a TextEncoderConfig (models/text_encoder.py). y is then the caption's token ids (B, L); the
    # blocks at attention_resolutions and the middle block cross-attend to its tokens (LDM) and its pooled
    # embedding joins the time embedding (GLIDE). None: no text.
    text_encoder: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Accept lists (from JSON) and normalise to tuples so configs compare equal after a round trip.
        try:
            if isinstance(self.image_size, (list, tuple)):
                self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
            self.channel_mult = tuple(int(m) for m in self.channel_mult)
            self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
            self._validate()
        except (TypeError, ValueError) as e:  # e.g. a string where a number belongs, from a JSON file
            raise ConfigError(f"invalid UNetConfig value: {e}".splitlines()[0]) from None

    @staticmethod
    def min_parameters(values: dict[str, Any]) -> int:
        """The ResNet blocks' convolutions alone: num_res_blocks per level down, one more per level up."""
        return resnet_parameters(values["base_channels"], values["channel_mult"], 2 * values["num_res_blocks"] + 1)

    @property
    def resolved_out_channels(self) -> int:
        """Output channels (in_channels when out_channels is None)."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def level_sizes(self) -> list[int]:
        """Feature-map height at each resolution level (what `attention_resolutions` refers to)."""
        h, _ = self.height_width
        return [h // 2**i for i in range(len(self.channel_mult))]

    def _validate(self) -> None:
        if isinstance(self.image_size, tuple) and len(self.image_size) != 2:
            raise ConfigError(f"image_size must be an int or (H, W), got {self.image_size}")
        h, w = self.height_width
        if h < 1 or w < 1:
            raise ConfigError(f"image_size must be positive, got {self.image_size}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(f"channel_mult must be a non-empty tuple of positive ints, got {self.channel_mult}")
        div = 2 ** (len(self.channel_mult) - 1)
        if h % div or w % div:
            raise ConfigError(
                f"image size {h}x{w} is not divisible by {div} (= 2**(len(channel_mult)-1) for "
                f"channel_mult={self.channel_mult}); use another size or fewer levels"
            )
        for name in ("in_channels", "base_channels", "num_res_blocks", "num_heads", "groups"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.out_channels is not None and self.out_channels < 1:
            raise ConfigError(f"out_channels must be >= 1 or None, got {self.out_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1 or None, got {self.num_classes}")
        if self.text_encoder is not None:
            if self.num_classes is not None:
                raise ConfigError("a UNet is conditioned on class labels or on text, not both")
            TextEncoderConfig(**self.text_encoder)  # one-line errors for its fields
        sizes = self.level_sizes
        for r in self.attention_resolutions:
            if r not in sizes:
                raise ConfigError(f"attention resolution {r} is not a feature-map size of this UNet (sizes: {sizes})")
        for size, mult in zip(sizes, self.channel_mult):
            ch = self.base_channels * mult
            if size in self.attention_resolutions and ch % self.num_heads:
                raise ConfigError(f"num_heads={self.num_heads} does not divide {ch} channels at attention size {size}")
        if (self.base_channels * self.channel_mult[-1]) % self.num_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} does not divide the {self.base_channels * self.channel_mult[-1]} "
                "channels of the middle attention block"
            )

class _Stage(nn.Module):
    """One ResBlock, optionally followed by self-attention, cross-attention to a text and/or 2x upsampling."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None, up: Upsample | None = None,
                 cross: CrossAttentionBlock | None = None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.cross = cross
        self.up = up

    def forward(self, x: Tensor, emb: Tensor, context: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Apply the block(s) in order; `context` is the text's (tokens, mask) when the UNet reads one."""
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.cross is not None and context is not None:
            x = self.cross(x, *context)
        if self.up is not None:
            x = self.up(x)
        return x


class UNet(nn.Module):
    """Noise-prediction UNet `net(x, t, y=None)` of Ho et al. 2020 App. B with iDDPM refinements."""

    def __init__(self, config: UNetConfig, memory_format: torch.memory_format | None = None) -> None:
        super().__init__()
        self.config = config
        # Activation/weight layout: a speed choice only (the numbers agree to float rounding), so it is not part
        # of the config or the checkpoint. Default: `preferred_memory_format()`, measured per CPU (BENCHMARKS.md).
        self.memory_format = memory_format or preferred_memory_format()
        c = config
        base = c.base_channels
        emb_dim = 4 * base  # Ho et al. 2020 / iDDPM: time-embedding width is 4x the base width
        self.emb_dim = emb_dim
        attn_sizes = set(c.attention_resolutions)

        # Sinusoidal embedding -> MLP (Linear, SiLU, Linear) (Ho et al. 2020, App. B).
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Class embedding added to the time embedding (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021).
        # Row num_classes is the NULL label used for classifier-free guidance (Ho & Salimans 2022).
        self.label_emb = nn.Embedding(c.num_classes + 1, emb_dim) if c.num_classes is not None else None
        # Text: GLIDE's jointly trained transformer (a submodule) or a frozen pretrained encoder (shared, outside the
        # parameters); its pooled embedding is projected onto the time embedding.
        self.text = build_text_encoder(c.text_encoder) if c.text_encoder is not None else None
        text_dim = self.text.dim if self.text is not None else 0
        self.text_proj = nn.Linear(text_dim, emb_dim) if self.text is not None else None

        def cross(channels: int, size: int | None) -> CrossAttentionBlock | None:
            if self.text is None or (size is not None and size not in attn_sizes):
                return None
            return CrossAttentionBlock(channels, text_dim, c.num_heads, c.groups)

        self.input_conv = nn.Conv2d(c.in_channels, base, 3, padding=1)

        # Encoder: every block's output is kept for a skip connection, as in iDDPM.
        sizes = c.level_sizes
        self.down = nn.ModuleList()
        skip_channels = [base]
        ch = base
        for level, mult in enumerate(c.channel_mult):
            out_ch = base * mult
            for _ in range(c.num_res_blocks):
                attn = AttentionBlock(out_ch, c.num_heads, c.groups) if sizes[level] in attn_sizes else None
                self.down.append(_Stage(ResBlock(ch, out_ch, emb_dim, c.dropout, c.groups), attn,
                                        cross=cross(out_ch, sizes[level])))
                ch = out_ch
                skip_channels.append(ch)
            if level != len(c.channel_mult) - 1:
                self.down.append(Downsample(ch))
                skip_channels.append(ch)

        # Middle: res, attention, res (Ho et al. 2020, App. B).
        self.mid_res1 = ResBlock(ch, ch, emb_dim, c.dropout, c.groups)
        self.mid_attn = AttentionBlock(ch, c.num_heads, c.groups)
        self.mid_cross = cross(ch, None)  # the middle block always reads the text (LDM)
        self.mid_res2 = ResBlock(ch, ch, emb_dim, c.dropout, c.groups)

        # Decoder mirrors the encoder with num_res_blocks + 1 blocks per level, each consuming one skip
        # (concatenated on the channel axis); the last block of a level upsamples.
        self.up = nn.ModuleList()
        for level in reversed(range(len(c.channel_mult))):
            out_ch = base * c.channel_mult[level]
            for i in range(c.num_res_blocks + 1):
                res = ResBlock(ch + skip_channels.pop(), out_ch, emb_dim, c.dropout, c.groups)
                ch = out_ch
                attn = AttentionBlock(ch, c.num_heads, c.groups) if sizes[level] in attn_sizes else None
                up = Upsample(ch) if level > 0 and i == c.num_res_blocks else None
                self.up.append(_Stage(res, attn, up, cross=cross(ch, sizes[level])))

        self.out_norm = group_norm(ch, c.groups)
        self.out_conv = zero_(nn.Conv2d(ch, c.resolved_out_channels, 3, padding=1))

        self.to(memory_format=self.memory_format)

    def embed(self, t: Tensor, y: Tensor | None, batch: int) -> Tensor:
        """The conditioning vector: MLP(sinusoid(time_scale * t)) + label embedding, shape (B, emb_dim)."""
        t = torch.as_tensor(t, device=self.input_conv.weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ConfigError(f"t must have shape ({batch},), got {tuple(t.shape)}")
        dtype = self.input_conv.weight.dtype
        sinusoid = timestep_embedding(t * self.config.time_scale, self.config.base_channels).to(dtype)
        emb = self.time_mlp(sinusoid)
        if self.text is not None:
            return emb  # the text's pooled embedding is added in forward, where the text is encoded
        n = self.config.num_classes
        if n is None:
            if y is not None:
                raise ConfigError("labels y were given but the UNet is unconditional (num_classes is None)")
            return emb
        if y is None:
            y = torch.full((batch,), n, dtype=torch.long, device=emb.device)  # the NULL label
        else:
            if y.shape != (batch,) or y.is_floating_point():
                raise ConfigError(f"labels y must be an int tensor of shape ({batch},), got {y.dtype} {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) > n):
                raise ConfigError(f"labels must be in [0, {n}] ({n} = null label), got [{int(y.min())}, {int(y.max())}]")
        return emb + self.label_emb(y.to(emb.device))

    def null_caption(self, batch: int, device: torch.device) -> Tensor:
        """Token ids of the empty caption, [BOS] [EOS] [PAD]... (the text encoder's own special ids)."""
        ids = torch.full((batch, self.config.text_encoder["max_len"]), self.text.pad_id, dtype=torch.long,  # type: ignore
                         device=device)
        ids[:, :2] = torch.tensor(self.text.null_ids, device=device)  # type: ignore[union-attr]
        return ids

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W); t: (B,) network time; y: (B,) labels or None -> (B, out_channels, H, W)."""
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ConfigError(f"expected input (B, {c.in_channels}, H, W), got {tuple(x.shape)}")
        div = 2 ** (len(c.channel_mult) - 1)
        if x.shape[2] % div or x.shape[3] % div:
            raise ConfigError(f"image size {x.shape[2]}x{x.shape[3]} is not divisible by {div}")
        emb = self.embed(t, None if self.text is not None else y, x.shape[0])
        context = None
        if self.text is not None:  # y: token ids (B, L); None: the empty caption (the null condition)
            ids = self.null_caption(x.shape[0], x.device) if y is None else y
            if ids.ndim != 2 or ids.shape[0] != x.shape[0]:
                raise ConfigError(f"a text UNet takes token ids (B, L) as y, got {tuple(ids.shape)}")
            tokens, mask, pooled = self.text(ids)
            emb = emb + self.text_proj(pooled.to(emb.dtype))  # type: ignore[misc]
            context = (tokens, mask)
        # SiLU is the first op of every block's embedding projection (iDDPM), so apply it once here.
        emb = F.silu(emb)

        h = self.input_conv(x.contiguous(memory_format=self.memory_format))
        skips = [h]
        for block in self.down:
            h = block(h, emb, context) if isinstance(block, _Stage) else block(h)
            skips.append(h)
        h = self.mid_attn(self.mid_res1(h, emb))
        if self.mid_cross is not None and context is not None:
            h = self.mid_cross(h, *context)
        h = self.mid_res2(h, emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        # Return a standard-layout tensor so callers can .view() it; the copy is negligible next to the net.
        return self.out_conv(F.silu(self.out_norm(h))).contiguous()
