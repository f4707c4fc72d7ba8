"""The DiT backbone (issue 16, first part; Peebles & Xie 2023): adaLN-Zero makes every block the identity at
init, patchify/unpatchify put each patch back where it came from, the condition reaches the output, and a DiT run
trains, samples and resumes bit for bit through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusionlab.errors import ConfigError
from diffusionlab.models import build_network
from diffusionlab.models.dit import DiT, DiTBlock, DiTConfig, sincos_position_embedding
from diffusionlab.training.config import deep_update
from helpers import TINY_NET, run_cli, train_straight_and_resumed


def _wake(net: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give the zero-initialised layers random weights, so that every path carries signal."""
    torch.manual_seed(1)
    for name, p in net.named_parameters():
        if torch.count_nonzero(p) == 0:
            torch.nn.init.normal_(p, std=std)
    return net.eval()


def test_adaln_zero_makes_every_block_the_identity_and_the_initial_prediction_zero():
    torch.manual_seed(0)
    block = DiTBlock(32, 4, 4.0, context_dim=16)
    x, c = torch.randn(3, 10, 32), torch.randn(3, 32)
    context = (torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool))
    assert torch.equal(block(x, c, context), x)  # gates and the cross-attention projection start at 0
    net = DiT(DiTConfig(image_size=8, in_channels=2, out_channels=4, depth=2, width=32, num_classes=10)).eval()
    out = net(torch.randn(5, 2, 8, 8), torch.rand(5) * 999, torch.arange(5))
    assert out.shape == (5, 4, 8, 8) and not out.any()


def test_unpatchify_puts_each_patch_back_where_it_came_from():
    """With the blocks switched off (identity), patchify a one-hot image through an identity-like embedding and
    unpatchify it: every pixel returns to its place (8x12, patch 2: a non-square grid)."""
    cfg = DiTConfig(image_size=(8, 12), in_channels=1, patch_size=2, depth=1, width=8, num_heads=2)
    net = DiT(cfg).eval()
    with torch.no_grad():
        net.patchify.weight.zero_()
        net.patchify.bias.zero_()
        for k in range(4):  # token channel k = pixel (k // 2, k % 2) of the patch
            net.patchify.weight[k, 0, k // 2, k % 2] = 1.0
        net.pos.zero_()
        net.final.weight.zero_()
        net.final.weight[:4, :4] = torch.eye(4) * 1e3  # LayerNorm scales the token; only positions matter here
    x = torch.zeros(1, 1, 8, 12)
    for i, j in ((0, 0), (3, 5), (7, 11), (6, 1)):
        x.zero_()
        x[0, 0, i, j] = 1.0
        out = net(x, torch.zeros(1))
        assert out[0, 0].flatten().argmax().item() == i * 12 + j


def test_the_condition_reaches_the_output():
    net = _wake(DiT(DiTConfig(image_size=8, depth=2, width=32, num_classes=3)))
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 10.0)
    with torch.no_grad():
        base = net(x, t, torch.tensor([0, 1, 2]))
        assert (net(x, t, torch.tensor([1, 1, 2])) - base)[0].abs().max() > 1e-4  # the label
        assert (net(x, t, None) - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # the null label
        assert (net(x, t + 50, torch.tensor([0, 1, 2])) - base).abs().max() > 1e-4  # the time
    pos = sincos_position_embedding(16, 3, 4)
    assert pos.shape == (12, 16) and len({tuple(r.tolist()) for r in pos}) == 12  # every position distinct


def test_text_conditioning_reads_the_tokens():
    from diffusionlab.data.tokenizer import CaptionTokenizer

    tok = CaptionTokenizer.fit(["a thick 7", "a thin 3"])
    net = _wake(DiT(DiTConfig(image_size=8, depth=1, width=32, text_encoder={
        "vocab_size": tok.vocab_size, "max_len": tok.max_len, "dim": 16, "layers": 1, "heads": 2})))
    x, t = torch.randn(2, 1, 8, 8), torch.full((2,), 5.0)
    with torch.no_grad():
        a, b = net(x, t, tok.encode(["a thick 7", "a thick 7"])), net(x, t, tok.encode(["a thin 3", "a thin 3"]))
        assert (a - b).abs().max() > 1e-4
        assert torch.equal(net(x, t, None), net(x, t, tok.encode(["", ""])))  # None is the empty caption


@pytest.mark.parametrize("bad, match", [
    ({"patch_size": 3}, "does not divide the image size"),
    ({"width": 30, "num_heads": 4}, "does not divide width"),
    ({"depth": 0}, "depth"),
])
def test_bad_sizes_are_one_line_errors(bad: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        build_network({"network": "dit", "image_size": 8, **bad})


def test_a_dit_run_trains_samples_and_resumes_bit_exactly(tmp_path: Path):
    cfg = tmp_path / "tiny.json"
    net = {"network": "dit", "patch_size": 2, "depth": 2, "width": 32, "num_heads": 2}
    tiny = {k: v for k, v in TINY_NET.items() if k != "model"}  # the tiny run, with a DiT for its network
    cfg.write_text(json.dumps(deep_update(tiny, {"model": net, "train": {"checkpoint_every": 3}})))
    common = ["--preset", "digits", "--config", str(cfg), "--class-conditional"]
    full = tmp_path / "full"
    train_straight_and_resumed(common, full, tmp_path / "split")
    model = json.loads((full / "config.json").read_text())["model"]
    assert model["network"] == "dit" and "base_channels" not in model  # the preset's UNet sizes were dropped
    out = tmp_path / "s.npz"
    proc = run_cli("sample", str(full), "--n", "4", "--sampler", "dpmpp2m", "--steps", "3", "--class", "all",
                   "--guidance-scale", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    bad = run_cli("train", "--preset", "digits", "--network", "dit", "--patch-size", "3", "--steps", "2",
                  "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "patch_size 3 does not divide the image size 8x8" in bad.stderr
