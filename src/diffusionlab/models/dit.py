"""A diffusion transformer (DiT, Peebles & Xie 2023): the transformer alternative to the UNet (docs/maths.md section 8).

The image (or latent) is cut into p x p patches, each linearly embedded to a token (section 3.2, "patchify") with
fixed 2-D sine-cosine position embeddings. N transformer blocks follow. Each block is conditioned by adaLN-Zero
(section 3.2): the conditioning vector c (the time embedding, plus the class embedding or the pooled text
embedding) regresses a shift, a scale and a gate for the attention branch and for the MLP branch, and the gates
start at zero, so every block starts as the identity. For text, a cross-attention branch between them reads the
caption's tokens (as PixArt-alpha does; LDM eq. 3), its output projection zero-initialised too. A final adaLN
layer and a zero-initialised linear map each token back to a p x p patch of the output channels ("unpatchify").

The contract is the UNet's: net(x, t, y=None) -> (B, out_channels, H, W), with y a class label (B,) or caption
token ids (B, L); `time_scale` and `num_classes` (null label = num_classes) mean what they mean there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import validation as v
from ..errors import ConfigError
from .config import SizedConfig
from .layers import attention, timestep_embedding, zero_
from .text_encoder import TextEncoderConfig, build_text_encoder


@dataclass
class DiTConfig(SizedConfig):
    """Hyper-parameters of `DiT`; validated on construction (ConfigError with a one-line message)."""

    label: ClassVar[str] = "DiTConfig"
    RANGES: ClassVar[dict[str, v.Range]] = {
        "image_size": v.at_least(1, v.MAX_IMAGE_SIDE), "in_channels": v.at_least(1), "out_channels": v.at_least(1),
        "patch_size": v.at_least(1), "depth": v.at_least(1), "width": v.at_least(1), "num_heads": v.at_least(1),
        "mlp_ratio": v.above(0), "num_classes": v.at_least(1), "time_scale": v.above(0)}

    image_size: int | tuple[int, int]  # H (=W) or (H, W)
    in_channels: int = 1
    out_channels: int | None = None  # None -> in_channels (2 * in_channels for a learned variance)
    patch_size: int = 2
    depth: int = 6
    width: int = 128
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int | None = None  # label num_classes is the reserved NULL label (classifier-free guidance)
    time_scale: float = 1.0
    text_encoder: dict[str, Any] | None = None  # as UNetConfig.text_encoder

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        h, w = self.height_width
        p = self.patch_size
        if h % p or w % p:
            raise ConfigError(f"patch_size {p} does not divide the image size {h}x{w}")
        if self.width % self.num_heads:
            raise ConfigError(f"num_heads {self.num_heads} does not divide width {self.width}")
        if self.width % 4:
            raise ConfigError(f"width must be a multiple of 4 (the 2-D sine-cosine position embedding), got {self.width}")
        if self.text_encoder is not None:
            if self.num_classes is not None:
                raise ConfigError("a DiT is conditioned on class labels or on text, not both")
            TextEncoderConfig(**self.text_encoder)

    @staticmethod
    def min_parameters(values: dict[str, Any]) -> int:
        """Each block's attention (4 W^2), MLP (2 r W^2) and adaLN regression (6 W^2)."""
        w = values["width"]
        return int(values["depth"] * (10 + 2 * values["mlp_ratio"]) * w * w)

    @property
    def resolved_out_channels(self) -> int:
        """Output channels (in_channels when out_channels is None)."""
        return self.in_channels if self.out_channels is None else self.out_channels


def sincos_position_embedding(width: int, h: int, w: int) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (h * w, width): half the channels encode the row, half the column
    (DiT / MAE), each with `timestep_embedding`'s frequencies."""
    rows = timestep_embedding(torch.arange(h, dtype=torch.float64).repeat_interleave(w), width // 2)
    cols = timestep_embedding(torch.arange(w, dtype=torch.float64).repeat(h), width // 2)
    return torch.cat([rows, cols], dim=1).float()


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: the normalised tokens scaled and shifted per example, x (1 + scale) + shift."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block: x + gate_a * Attn(adaLN(x)) [+ CrossAttn(x, text)] + gate_m * MLP(adaLN(x))."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, context_dim: int | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        # adaLN-Zero: c -> (shift, scale, gate) for attention and MLP; zero-initialised, so the gates start at 0.
        self.ada = zero_(nn.Linear(width, 6 * width))
        self.cross = None
        if context_dim is not None:
            self.norm_c = nn.LayerNorm(width, eps=1e-6)
            self.cross_q, self.cross_kv = nn.Linear(width, width), nn.Linear(context_dim, 2 * width)
            self.cross = zero_(nn.Linear(width, width))

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, c: Tensor, context: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: (B, N, W) tokens; c: (B, W) SiLU of the conditioning vector; context: (tokens, mask) of a caption."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c).chunk(6, dim=1)
        q, k, v_ = (self._heads(z) for z in self.qkv(modulate(self.norm1(x), shift_a, scale_a)).chunk(3, dim=2))
        attn = attention(q, k, v_).transpose(1, 2).flatten(2)
        x = x + gate_a.unsqueeze(1) * self.attn_out(attn)
        if self.cross is not None and context is not None:
            tokens, mask = context
            k, v_ = (self._heads(z) for z in self.cross_kv(tokens.to(x.dtype)).chunk(2, dim=2))
            q = self._heads(self.cross_q(self.norm_c(x)))
            out = attention(q, k, v_, mask.to(x.device)[:, None, None, :])
            x = x + self.cross(out.transpose(1, 2).flatten(2))
        return x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class DiT(nn.Module):
    """The DiT network: patchify, adaLN-Zero blocks, final adaLN layer, unpatchify."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        c = self.config = config
        h, w = c.height_width
        p, width = c.patch_size, c.width
        self.grid = (h // p, w // p)
        self.patchify = nn.Conv2d(c.in_channels, width, kernel_size=p, stride=p)  # one linear map per patch
        self.register_buffer("pos", sincos_position_embedding(width, *self.grid), persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.label_emb = nn.Embedding(c.num_classes + 1, width) if c.num_classes is not None else None
        self.text = build_text_encoder(c.text_encoder) if c.text_encoder is not None else None
        self.text_proj = nn.Linear(self.text.dim, width) if self.text is not None else None
        context_dim = self.text.dim if self.text is not None else None
        self.blocks = nn.ModuleList(DiTBlock(width, c.num_heads, c.mlp_ratio, context_dim) for _ in range(c.depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = zero_(nn.Linear(width, 2 * width))
        self.final = zero_(nn.Linear(width, p * p * c.resolved_out_channels))  # the initial prediction is 0

    def null_caption(self, batch: int, device: torch.device) -> Tensor:
        """Token ids of the empty caption, [BOS] [EOS] [PAD]... (the text encoder's own special ids)."""
        ids = torch.full((batch, self.config.text_encoder["max_len"]), self.text.pad_id, dtype=torch.long,  # type: ignore
                         device=device)
        ids[:, :2] = torch.tensor(self.text.null_ids, device=device)  # type: ignore[union-attr]
        return ids

    def condition(self, t: Tensor, y: Tensor | None, batch: int, device: torch.device
                  ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """c = MLP(sinusoid(time_scale * t)) + the label's or the caption's pooled embedding; and the caption's tokens."""
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ConfigError(f"t must have shape ({batch},), got {tuple(t.shape)}")
        c = self.time_mlp(timestep_embedding(t * self.config.time_scale, self.config.width).float())
        if self.text is not None:  # y: token ids (B, L); None: the empty caption (the null condition)
            ids = self.null_caption(batch, device) if y is None else y
            if ids.ndim != 2 or ids.shape[0] != batch or ids.is_floating_point():
                raise ConfigError(f"a text DiT takes token ids (B, L) as y, got {tuple(ids.shape)}")
            tokens, mask, pooled = self.text(ids)
            return c + self.text_proj(pooled.to(c.dtype)), (tokens, mask)  # type: ignore[misc]
        n = self.config.num_classes
        if n is None:
            if y is not None:
                raise ConfigError("labels y were given but the DiT is unconditional (num_classes is None)")
            return c, None
        if y is None:
            y = torch.full((batch,), n, dtype=torch.long, device=device)  # the NULL label
        elif y.shape != (batch,) or y.is_floating_point() or (y.numel() and (int(y.min()) < 0 or int(y.max()) > n)):
            raise ConfigError(f"labels y must be ints in [0, {n}] of shape ({batch},), got {y.dtype} {tuple(y.shape)}")
        return c + self.label_emb(y.to(device)), None  # type: ignore[misc]

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W); t: (B,) network time; y: labels (B,), token ids (B, L) or None -> (B, out, H, W)."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or tuple(x.shape[2:]) != cfg.height_width:
            raise ConfigError(f"expected input (B, {cfg.in_channels}, {cfg.height_width[0]}, {cfg.height_width[1]}), "
                              f"got {tuple(x.shape)}")
        b = x.shape[0]
        c, context = self.condition(t, y, b, x.device)
        c = F.silu(c)  # the first op of every adaLN regression (DiT's adaLN_modulation = SiLU, Linear)
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)  # (B, N, W)
        for block in self.blocks:
            h = block(h, c, context)
        shift, scale = self.final_ada(c).chunk(2, dim=1)
        h = self.final(modulate(self.final_norm(h), shift, scale))  # (B, N, p * p * out)
        p, (gh, gw), out = cfg.patch_size, self.grid, cfg.resolved_out_channels
        h = h.reshape(b, gh, gw, p, p, out).permute(0, 5, 1, 3, 2, 4)  # unpatchify: (B, out, gh, p, gw, p)
        return h.reshape(b, out, gh * p, gw * p)


__all__ = ["DiT", "DiTBlock", "DiTConfig", "modulate", "sincos_position_embedding"]
