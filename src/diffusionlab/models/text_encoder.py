"""The text encoder of a text-to-image model: token ids -> per-token embeddings and a pooled embedding.

GLIDE (Nichol et al. 2022, section 2.3) trains a transformer over the caption jointly with the diffusion model,
feeds its final token embeddings to every attention layer of the UNet (here: cross-attention, as LDM does,
Rombach et al. 2022 eq. 3) and adds a pooled embedding to the time embedding. This is that transformer, small:
learned token and position embeddings, pre-norm encoder layers, a final LayerNorm, and the mean over the caption's
real tokens ([PAD] excluded) as the pooled embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

PAD_ID = 0  # data/tokenizer.py puts [PAD] first
NULL_CAPTION = (2, 3, PAD_ID)  # the empty caption: [BOS] [EOS], then [PAD]s (tokenizer ids 2, 3, 0; tested)


KINDS = ("joint", "minilm")  # trained with the UNet (GLIDE) | frozen and pretrained (models/pretrained_text.py)


@dataclass
class TextEncoderConfig:
    """Which text encoder and its sizes; vocab_size and max_len come from the run's tokenizer."""

    vocab_size: int
    max_len: int
    dim: int = 64
    layers: int = 2
    heads: int = 4
    kind: str = "joint"
    weights_sha256: str | None = None  # a frozen encoder's weights, recorded so other weights are refused

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_len", "dim", "layers", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"text_encoder.{name} must be a whole number >= 1, got {value!r}")
        if self.dim % self.heads:
            raise ConfigError(f"text_encoder.heads = {self.heads} does not divide dim = {self.dim}")
        if self.kind not in KINDS:
            raise ConfigError(f"text_encoder.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "minilm":
            from .pretrained_text import DIM, HEADS, LAYERS, VOCAB

            fixed = {"dim": DIM, "layers": LAYERS, "heads": HEADS, "vocab_size": VOCAB}
            wrong = {k: getattr(self, k) for k, v in fixed.items() if getattr(self, k) != v}
            if wrong:
                raise ConfigError(f"the pretrained minilm encoder has fixed sizes {fixed}; the config sets {wrong}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)


class TextEncoder(nn.Module):
    """ids (B, L) -> (tokens (B, L, dim), mask (B, L) True at real tokens, pooled (B, dim))."""

    pad_id, null_ids = PAD_ID, NULL_CAPTION[:2]

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        c = self.config = config
        self.dim = c.dim
        self.token_emb = nn.Embedding(c.vocab_size, c.dim)
        self.pos_emb = nn.Parameter(torch.randn(c.max_len, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 4 * c.dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        # No nested tensors: the fast inference path would zero the padded positions in eval mode only.
        self.layers = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode a batch of token ids (every row starts with [BOS], so no row is all padding)."""
        if ids.ndim != 2 or ids.is_floating_point() or ids.shape[1] > self.config.max_len:
            raise ConfigError(f"token ids must be an int tensor (B, <= {self.config.max_len}), got {ids.dtype} "
                              f"{tuple(ids.shape)}")
        ids = ids.to(self.token_emb.weight.device)
        mask = ids != PAD_ID
        h = self.token_emb(ids) + self.pos_emb[: ids.shape[1]]
        h = self.norm(self.layers(h, src_key_padding_mask=~mask))
        weights = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return h, mask, pooled


def build_text_encoder(config: dict[str, Any]) -> Any:
    """The encoder a `model.text_encoder` section names: a TextEncoder (trained, part of the network's parameters)
    or the shared FrozenTextEncoder (pretrained; its weights live in the installed package, not in the run)."""
    c = TextEncoderConfig(**config)
    if c.kind == "minilm":
        from .pretrained_text import frozen_text_encoder

        return frozen_text_encoder(config)
    return TextEncoder(c)


__all__ = ["KINDS", "NULL_CAPTION", "PAD_ID", "TextEncoder", "TextEncoderConfig", "build_text_encoder"]
