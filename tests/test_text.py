"""Text conditioning parts (issue 15): the caption tokenizer, the text encoder and cross-attention."""

from __future__ import annotations

import pytest
import torch

from diffusionlab.data.tokenizer import CaptionTokenizer
from diffusionlab.errors import ConfigError, DataError
from diffusionlab.models.layers import CrossAttentionBlock
from diffusionlab.models.text_encoder import TextEncoder, TextEncoderConfig

CAPTIONS = ["a thick 7 leaning right", "7, bold, leaning right", "the digit four, written thin", "a small upright 3"]


def test_the_tokenizer_round_trips_and_is_saved_as_json():
    tok = CaptionTokenizer.fit(CAPTIONS)
    ids = tok.encode(CAPTIONS)
    assert ids.shape == (4, tok.max_len) and tok.max_len == 6 + 2  # the longest caption has 6 words (',' counts)
    assert tok.decode(ids) == ["a thick 7 leaning right", "7 , bold , leaning right", "the digit four , written thin",
                               "a small upright 3"]
    assert (ids[:, 0] == tok.bos_id).all() and ((ids == tok.eos_id).sum(1) == 1).all()
    assert tok.encode([""]).tolist()[0][:3] == [tok.bos_id, tok.eos_id, tok.pad_id]  # the null caption
    again = CaptionTokenizer.from_json(tok.to_json())
    assert torch.equal(again.encode(CAPTIONS), ids) and again.vocab_size == tok.vocab_size
    assert tok.unknown_words("A THICK purple seven") == ["purple", "seven"]  # lower-cased before the lookup
    assert (tok.encode(["a purple 7"])[0, 2] == tok.unk_id).item()
    with pytest.raises(ConfigError, match="at most 6"):
        tok.encode(["a thick 7 leaning right and a thin 3"])
    with pytest.raises(DataError, match="damaged"):
        CaptionTokenizer.from_json('{"max_len": 4, "tokenizer": {"model": 3}}', "RUN/text/tokenizer.json")


def test_the_text_encoder_reads_real_tokens_only():
    torch.manual_seed(0)
    tok = CaptionTokenizer.fit(CAPTIONS)
    enc = TextEncoder(TextEncoderConfig(tok.vocab_size, max_len=12, dim=16, layers=2, heads=4)).eval()
    short = tok.encode(CAPTIONS)
    padded = torch.cat([short, torch.zeros(4, 4, dtype=torch.long)], 1)  # the same captions, 4 more [PAD]s
    tokens, mask, pooled = enc(short)
    tokens2, mask2, pooled2 = enc(padded)
    assert tokens.shape == (4, 8, 16) and pooled.shape == (4, 16) and mask.sum().item() == (short != 0).sum().item()
    torch.testing.assert_close(pooled2, pooled, atol=1e-6, rtol=0)  # padding changes nothing
    torch.testing.assert_close(tokens2[:, :8][mask], tokens[mask], atol=1e-6, rtol=0)
    assert not torch.allclose(pooled[0], pooled[2])  # different captions, different embeddings
    with pytest.raises(ConfigError, match="does not divide"):
        TextEncoderConfig(10, 8, dim=10, heads=4)


def test_cross_attention_is_the_identity_with_zero_weights_and_depends_on_the_tokens_otherwise():
    torch.manual_seed(0)
    block = CrossAttentionBlock(channels=8, context_dim=6, num_heads=2, groups=4)
    x = torch.randn(2, 8, 4, 4)
    context, mask = torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(block(x, context, mask), x)  # LDM's zero-initialised output projection: unconditioned path
    torch.nn.init.normal_(block.proj.weight)
    a = block(x, context, mask)
    b = block(x, context + torch.randn_like(context), mask)
    assert not torch.allclose(a, x) and not torch.allclose(a, b)  # the output depends on the tokens
    # keys at [PAD] positions carry no weight: changing them changes nothing
    mask[:, 3:] = False
    c = block(x, context, mask)
    noisy = context.clone()
    noisy[:, 3:] = torch.randn(2, 2, 6) * 100
    torch.testing.assert_close(block(x, noisy, mask), c, atol=1e-5, rtol=0)
    # a constant context is one token repeated: every query reads the same value, whatever the mask
    const = torch.randn(2, 1, 6).expand(2, 5, 6)
    torch.testing.assert_close(block(x, const, mask), block(x, const[:, :1], mask[:, :1]), atol=1e-5, rtol=0)
