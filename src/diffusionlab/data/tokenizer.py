"""The caption tokenizer of a text-to-image run: word-level, fitted on the run's own captions with HF `tokenizers`.

GLIDE trains its text transformer from scratch with the diffusion model; a word-level vocabulary is what a small
caption set needs (the digit captions have 40 words). Captions are lower-cased and split on whitespace and
punctuation; every caption becomes [BOS] words... [EOS], padded with [PAD] to `max_len`. The empty caption -- the
null condition of classifier-free guidance -- is [BOS] [EOS]. Words never seen in training map to [UNK] and are
reported (`unknown_words`). The tokenizer is saved with the run as JSON (`to_json`), never pickled.
"""

from __future__ import annotations

from typing import Iterable

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from diffusionlab.errors import ConfigError, DataError

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3


class CaptionTokenizer:
    """Captions -> token ids (B, L) int64: [BOS] words [EOS] [PAD]..., with the special tokens at fixed ids.

    `specials` names the tokenizer's own (pad, unknown, begin, end) tokens: ours by default; a pretrained encoder's
    tokenizer brings its own (BERT's [PAD] [UNK] [CLS] [SEP], models/pretrained_text.py).
    """

    def __init__(self, tokenizer: Tokenizer, max_len: int, specials: tuple[str, str, str, str] = SPECIAL):
        self.tokenizer, self.max_len, self.specials = tokenizer, int(max_len), tuple(specials)
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (tokenizer.token_to_id(t) for t in self.specials)

    @staticmethod
    def fit(captions: Iterable[str], max_len: int | None = None) -> "CaptionTokenizer":
        """A word-level vocabulary of every word in `captions`; `max_len` defaults to the longest caption + 2."""
        captions = list(captions)
        if not captions:
            raise DataError("cannot fit a tokenizer: no captions")
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
        tok.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=list(SPECIAL), min_frequency=1))
        return CaptionTokenizer(tok, max_len or longest_caption(tok, captions))

    @property
    def vocab_size(self) -> int:
        """Number of token ids (special tokens included)."""
        return self.tokenizer.get_vocab_size()

    def words(self, caption: str) -> list[str]:
        """The normalised words of a caption, as the tokenizer splits them."""
        return [w for w, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(self.tokenizer.normalizer.normalize_str(caption))]

    def unknown_words(self, caption: str) -> list[str]:
        """Words of `caption` the vocabulary cannot spell (they read as [UNK], wholly or in part)."""
        return [w for w in self.words(caption)
                if self.unk_id in self.tokenizer.encode(w, add_special_tokens=False).ids]

    def encode(self, captions: list[str]) -> torch.Tensor:
        """Token ids (B, max_len): [BOS] words [EOS] [PAD]...; a caption longer than max_len is a ConfigError."""
        ids = torch.full((len(captions), self.max_len), self.pad_id, dtype=torch.long)
        for i, enc in enumerate(self.tokenizer.encode_batch(captions, add_special_tokens=False)):
            row = [self.bos_id, *enc.ids, self.eos_id]
            if len(row) > self.max_len:
                raise ConfigError(f"caption {captions[i][:60]!r} has {len(row) - 2} words; this model reads at most "
                                  f"{self.max_len - 2}")
            ids[i, : len(row)] = torch.tensor(row)
        return ids

    def decode(self, ids: torch.Tensor) -> list[str]:
        """The words of each row of ids, special tokens dropped."""
        return [self.tokenizer.decode([int(i) for i in row], skip_special_tokens=True) for row in ids]

    def to_json(self) -> str:
        """The tokenizer and max_len as one JSON document (saved with the run)."""
        import json

        return json.dumps({"max_len": self.max_len, "specials": list(self.specials),
                           "tokenizer": json.loads(self.tokenizer.to_str())})

    @staticmethod
    def from_json(text: str, where: str = "tokenizer") -> "CaptionTokenizer":
        """Inverse of `to_json`, with a one-line error for a damaged file."""
        import json

        try:
            d = json.loads(text)
            tok = Tokenizer.from_str(json.dumps(d["tokenizer"]))
            specials = tuple(d.get("specials", SPECIAL))
            if len(specials) != 4 or not all(isinstance(t, str) for t in specials):
                raise ValueError(f"specials must name 4 tokens, got {specials!r}")
            out = CaptionTokenizer(tok, int(d["max_len"]), specials)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, Exception) as e:  # tokenizers raises its own Exception type
            raise DataError(f"{where} is damaged ({str(e).splitlines()[0][:100]})") from None
        if None in (out.pad_id, out.unk_id, out.bos_id, out.eos_id) or out.max_len < 2:
            raise DataError(f"{where} lacks the special tokens {', '.join(out.specials)}")
        return out


def longest_caption(tokenizer: Tokenizer, captions: list[str]) -> int:
    """The length of the longest caption in tokens, plus [BOS] and [EOS]: the smallest max_len that reads them all."""
    return max(len(e.ids) for e in tokenizer.encode_batch(captions, add_special_tokens=False)) + 2


__all__ = ["BOS", "EOS", "PAD", "SPECIAL", "UNK", "CaptionTokenizer", "longest_caption"]
