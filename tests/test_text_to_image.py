"""Text-to-image (issue 15, part 3): a UNet that reads a caption, caption dropout, classifier-free guidance with the
empty caption as the null condition on every family, and train -> sample --prompt -> kill -9 -> resume."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import diffusionlab.training.trainer as trainer
from diffusionlab.data.tokenizer import CaptionTokenizer
from diffusionlab.guidance import ClassifierFreeGuidance
from diffusionlab.models.unet import UNet, UNetConfig
from diffusionlab.processes import build_process
from diffusionlab.sampling import generate
from diffusionlab.training.config import RunConfig, deep_update, preset_config
from helpers import TINY, record_training_conditions, run_cli

CAPTIONS = ["a thick 7 leaning right", "a thin 3", "the digit four, written thin", "a small upright 3"]


def _text_unet(tok: CaptionTokenizer, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(UNetConfig(image_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_resolutions=(4,), num_heads=2, groups=4,
                          text_encoder={"vocab_size": tok.vocab_size, "max_len": tok.max_len, "dim": 16, "layers": 1,
                                        "heads": 2}))
    for module in net.modules():  # wake the zero-initialised projections so the output depends on the text
        if module.__class__.__name__ in ("CrossAttentionBlock", "AttentionBlock"):
            torch.nn.init.normal_(module.proj.weight, std=0.3)
    torch.nn.init.normal_(net.out_conv.weight, std=0.3)
    return net.eval()


def test_the_null_caption_is_the_tokenizers_empty_caption_and_the_text_matters():
    tok = CaptionTokenizer.fit(CAPTIONS)
    net = _text_unet(tok)
    assert torch.equal(net.null_caption(3, torch.device("cpu")), tok.encode(["", "", ""]))
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 10.0)
    with torch.no_grad():
        uncond, null = net(x, t), net(x, t, tok.encode([""] * 4))
        cond = net(x, t, tok.encode(CAPTIONS))
    assert torch.equal(uncond, null)
    assert (cond - uncond).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every caption changes the output


@pytest.mark.parametrize("method", ["ddpm", "flow", "vpsde"])
def test_guidance_scale_0_is_unconditional_and_1_is_conditional_on_every_family(method: str):
    tok = CaptionTokenizer.fit(CAPTIONS)
    net = _text_unet(tok)
    process = build_process(method, {"T": 50} if method == "ddpm" else {})
    den = process.denoiser(net)
    y = tok.encode(CAPTIONS)
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.5 if method != "ddpm" else 20.0)
    with torch.no_grad():
        cond, uncond = den(x, t, y), den(x, t, None)
        for S, want in ((0.0, uncond), (1.0, cond)):
            got = ClassifierFreeGuidance(den, S, null_label=tok.encode([""])[0])(x, t, y)
            torch.testing.assert_close(got.eps, want.eps, atol=1e-6, rtol=0)
        got = ClassifierFreeGuidance(den, 3.0, null_label=tok.encode([""])[0])(x, t, y)
        torch.testing.assert_close(got.eps, uncond.eps + 3.0 * (cond.eps - uncond.eps), atol=1e-5, rtol=0)
    sampler = {"ddpm": "ddim", "flow": "ode-heun", "vpsde": "dpmpp2m"}[method]
    a = generate(ClassifierFreeGuidance(den, 1.0, null_label=tok.encode([""])[0]), process, (1, 8, 8), 4, sampler, 3,
                 seed=1, y=y)
    b = generate(den, process, (1, 8, 8), 4, sampler, 3, seed=1, y=y)
    assert torch.equal(a.images, b.images) and torch.isfinite(a.images).all()


def test_captions_are_dropped_to_the_empty_caption_at_the_configured_rate(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    torch.set_num_threads(1)
    seen = record_training_conditions(monkeypatch)
    over = deep_update(TINY, {"data": {"source": "digits-text"},
                              "train": {"text_conditional": True, "label_dropout": 0.25, "batch_size": 256, "steps": 4,
                                        "checkpoint_every": 1000, "log_every": 1000},
                              "sample": {"n": 2, "steps": 1}, "model": {"channel_mult": [1], "attention_resolutions": [],
                                                                        "text_encoder": {"dim": 8, "layers": 1,
                                                                                         "heads": 2}}})
    cfg = RunConfig.from_dict(deep_update(preset_config("digits"), json.loads(json.dumps(over))))
    trainer.train(cfg, tmp_path / "run", progress=False)
    ids = torch.cat(seen)
    tok = CaptionTokenizer.from_json((tmp_path / "run" / "text" / "tokenizer.json").read_text())
    null = (ids == tok.encode([""])[0]).all(1)
    n = len(ids)
    assert n == 4 * 256 and abs(null.double().mean().item() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)
    kept = tok.decode(ids[~null])
    assert all(k for k in kept) and len(set(kept)) > 50  # real captions, many different ones


def test_train_sample_with_prompts_and_resume_bit_exactly_with_the_text_encoder(tmp_path: Path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(deep_update(TINY, {"model": {"text_encoder": {"dim": 16, "layers": 1, "heads": 2}}})))
    common = ["--config", str(cfg), "--dataset", "digits-text", "--text-conditional", "--steps", "12"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli("train", *common, "--out", str(full)).returncode == 0
    proc = run_cli("train", *common, "--out", str(killed), env={"DIFFUSIONLAB_FAULT": "checkpoint:tensors@8"})
    assert proc.returncode == -signal.SIGKILL
    resumed = run_cli("train", "--resume", "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(full / "checkpoints" / "step_00000012" / f"{name}.safetensors"))
        b = load_file(str(killed / "checkpoints" / "step_00000012" / f"{name}.safetensors"))
        assert any(k.startswith("text.") for k in a) or name == "optimizer"
        assert all(torch.equal(a[k], b[k]) for k in a), name
    (tmp_path / "prompts.txt").write_text("a thin 3\n\nthe digit four\n")
    out = tmp_path / "s.npz"
    proc = run_cli("sample", str(full), "--n", "6", "--steps", "3", "--prompt", "a thick 7", "--prompt", "a mauve 7",
                   "--prompt-file", str(tmp_path / "prompts.txt"), "--guidance-scale", "3", "--trajectory",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "'mauve'" in proc.stderr and "never saw" in proc.stderr  # out-of-vocabulary words are named
    assert out.exists() and out.with_suffix(".gif").exists() and "scale S = 3" in proc.stdout
    bad = run_cli("sample", str(full), "--n", "2", "--class", "3", "--prompt", "a 3", "--out", str(tmp_path / "b.npz"))
    assert bad.returncode == 2 and "not on --class" in bad.stderr
    (full / "text" / "tokenizer.json").write_text("{")
    bad = run_cli("sample", str(full), "--n", "2", "--prompt", "a 3", "--out", str(tmp_path / "c.npz"))
    assert bad.returncode == 2 and "tokenizer.json is damaged" in bad.stderr


def test_evaluate_a_text_run_on_the_split_captions_and_the_bound_given_the_caption(tmp_path: Path):
    """`evaluate --fid` of a text run draws one sample per caption of the evaluated split (the zero-shot FID protocol
    of GLIDE and LDM), with --guidance-scale: it scores exactly the images `sample --prompt-file` draws from those
    captions. `--nll` is the bound of log p(x | caption) and says so."""
    from diffusionlab.data import load_dataset

    env = {"DIFFUSIONLAB_CACHE": str(tmp_path / "cache")}
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(deep_update(TINY, {"model": {"text_encoder": {"dim": 16, "layers": 1, "heads": 2}}})))
    run = tmp_path / "run"
    proc = run_cli("train", "--config", str(cfg), "--dataset", "digits-text", "--text-conditional", "--steps", "4",
                   "--out", str(run), env=env)
    assert proc.returncode == 0, proc.stderr
    n, common = 40, ["--sampler", "ddim", "--steps", "2", "--seed", "3", "--guidance-scale", "2"]
    first = run_cli("evaluate", str(run), "--fid", "--n", str(n), *common, "--json", str(tmp_path / "a.json"),
                    env=env)
    assert first.returncode == 0, first.stderr
    assert "prompts: the test split's captions, guidance scale 2" in first.stdout
    captions = load_dataset("digits-text", split="test").captions[:n]
    (tmp_path / "prompts.txt").write_text("\n".join(captions) + "\n")
    out = tmp_path / "s.npz"
    proc = run_cli("sample", str(run), "--n", str(n), *common, "--prompt-file", str(tmp_path / "prompts.txt"),
                   "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    second = run_cli("evaluate", str(run), "--fid", "--samples", str(out), "--seed", "3", "--json",
                     str(tmp_path / "b.json"), env=env)
    assert second.returncode == 0, second.stderr
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert a["sampling"]["guidance_scale"] == 2 and "captions" in a["sampling"]["prompts"]
    for key in ("fid", "kid_mean", "precision", "recall"):
        assert a["quality"][key] == pytest.approx(b["quality"][key], rel=1e-9, abs=1e-12), key
    nll = run_cli("evaluate", str(run), "--nll", "--nll-n", "8", "--nll-steps", "4", "--json",
                  str(tmp_path / "n.json"), env=env)
    assert nll.returncode == 0, nll.stderr
    report = json.loads((tmp_path / "n.json").read_text())["nll"]
    assert report["text_conditional"] and not report["class_conditional"] and report["bits_per_dim"] > 0
    bad = run_cli("evaluate", str(run), "--nll", "--guidance-scale", "2", env=env)
    assert bad.returncode == 2 and "nothing is sampled" in bad.stderr
