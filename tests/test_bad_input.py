"""Issue 14, the bad-input side: a corpus of hostile inputs, each refused by `main` with exit 2 and one line on stderr,
before any work, without touching a run or an existing output.

Every case is something a user can type: config fields of the wrong type, NaN/inf, unknown keys (via --config files
and a run's config.json), absurd sizes that cannot fit in memory, unwritable or existing outputs, empty/zero-byte/
truncated/NaN datasets and samples files, IDX headers that lie, seeds outside [0, 2^63), steps beyond what a
sampler can use. The work functions (training, sampling, feature extraction, the classifier) are replaced by a
sentinel that raises, so a case that gets through to work fails as an internal error instead of running for hours.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from diffusionlab.cli import main

BIG = str(10**9)
SEED_BIG = str(2**63)


class WorkStarted(Exception):
    """Raised by the sentinels that stand in for the expensive work: reaching one means the input was not refused."""


# (module, attribute) of every expensive step a command can reach.
WORK = [("diffusionlab.training.trainer", "train"), ("diffusionlab.training.trainer", "train_autoencoder"),
        ("diffusionlab.baselines", "train_baseline"),
        ("diffusionlab.sampling", "generate"), ("diffusionlab.evaluation.evaluate", "build_extractor"),
        ("diffusionlab.evaluation.evaluate", "nll_report"), ("diffusionlab.evaluation.evaluate", "ode_nll_report"),
        ("diffusionlab.training.classifier", "train_classifier"), ("diffusionlab.inpainting", "sample_inpaint"),
        ("diffusionlab.editing", "sdedit"), ("diffusionlab.evaluation.digits", "_classifier")]


# Cases whose refusal comes from loading the data, which a training run does first (before its network and optimizer
# are built, and before its run directory is kept): for these the training sentinel sits at the optimizer instead.
DEEP = ("data-", "train-dataset-unknown", "cfg-data-source-unknown", "train-out-under-file", "train-nf-levels")


def install_sentinels(monkeypatch: pytest.MonkeyPatch, deep: bool = False) -> None:
    """Replace every expensive step by a function that raises WorkStarted (`deep`: let training start, up to its
    optimizer)."""
    import importlib

    import torch

    for module, name in WORK:
        if deep and name in ("train", "train_autoencoder", "train_baseline"):
            continue

        def sentinel(*args: object, _name: str = name, **kwargs: object) -> None:
            raise WorkStarted(f"work started: {_name}")

        monkeypatch.setattr(importlib.import_module(module), name, sentinel)
    from diffusionlab.baselines import LoadedBaseline

    for name in ("sample", "bits_per_dim"):  # a baseline's sampling and likelihood
        monkeypatch.setattr(LoadedBaseline, name, lambda *a, _name=name, **k: (_ for _ in ()).throw(
            WorkStarted(f"work started: baseline {_name}")))
    if deep:
        monkeypatch.setattr(torch.optim, "AdamW", _no_optimizer)
        monkeypatch.setattr(torch.optim, "Adam", _no_optimizer)  # the baselines' optimizer


def _no_optimizer(*args: object, **kwargs: object) -> None:
    raise WorkStarted("work started: optimizer")


class Env:
    """The files a case may refer to: a trained run (and tampered copies), inputs, and pre-existing outputs."""

    def __init__(self, root: Path, run: Path) -> None:
        self.root, self.run = root, run
        self.inputs, self.outs = root / "inputs", root / "outs"
        self._n = 0

    def p(self, name: str) -> str:
        """An input file by name."""
        return str(self.inputs / name)

    def o(self, name: str) -> str:
        """A pre-existing output file by name."""
        return str(self.outs / name)

    def r(self, name: str) -> str:
        """A run directory: 'run' (the trained one) or a tampered copy."""
        return str(self.run if name == "run" else self.root / "runs" / name)

    def new(self, suffix: str = "") -> str:
        """A path that does not exist and must still not exist after the case."""
        self._n += 1
        return str(self.root / "new" / f"n{self._n}{suffix}")

    def cfg(self, d: object) -> str:
        """A --config file holding `d` (NaN and Infinity written as JSON's extensions)."""
        self._n += 1
        path = self.root / "cfgs" / f"c{self._n}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(d))
        return str(path)

    def text(self, name: str, text: str) -> str:
        """A --config file with raw text."""
        path = self.root / "cfgs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return str(path)


Case = tuple[str, Callable[[Env], list[str]]]


def _train(e: Env, *extra: str) -> list[str]:
    return ["train", "--preset", "digits", "--out", e.new(), "--progress", "lines", *extra]


def _cfg(e: Env, d: object) -> list[str]:
    return _train(e, "--config", e.cfg(d))


def _ae(e: Env, *extra: str) -> list[str]:
    return ["train-autoencoder", "--preset", "digits-ae", "--out", e.new(), "--progress", "lines", *extra]


def _ae_cfg(e: Env, d: object) -> list[str]:
    return _ae(e, "--config", e.cfg(d))


def _sample(e: Env, *extra: str, run: str = "run") -> list[str]:
    return ["sample", e.r(run), "--n", "2", *extra]


def _sample_out(e: Env, *extra: str) -> list[str]:
    return _sample(e, "--out", e.new(".npz"), *extra)


def _eval_npz(e: Env, name: str, *extra: str) -> list[str]:
    return ["evaluate", e.p(name), "--fid", "--dataset", "digits", *extra]


def _clf(e: Env, *extra: str) -> list[str]:
    return ["train-classifier", "--dataset", "digits", "--steps", "1", *extra]


def _inpaint(e: Env, *extra: str) -> list[str]:
    return ["inpaint", e.r("run"), "--image", e.p("in.npy"), "--mask", e.p("mask.npy"), "--n", "1", "--steps", "2", *extra]


def _edit(e: Env, *extra: str) -> list[str]:
    return ["edit", e.r("run"), "--image", e.p("in.npy"), "--strength", "0.5", "--n", "1", "--steps", "2", *extra]


NAN, INF = float("nan"), float("inf")

CASES: list[Case] = [
    # --- config fields from --config: types, NaN/inf, ranges, unknown keys ---------------------------------------
    ("cfg-batch_size-str", lambda e: _cfg(e, {"train": {"batch_size": "abc"}})),
    ("cfg-batch_size-bool", lambda e: _cfg(e, {"train": {"batch_size": True}})),
    ("cfg-batch_size-float", lambda e: _cfg(e, {"train": {"batch_size": 1.5}})),
    ("cfg-batch_size-neg", lambda e: _cfg(e, {"train": {"batch_size": -4}})),
    ("cfg-batch_size-absurd", lambda e: _cfg(e, {"train": {"batch_size": 10**15}})),
    ("cfg-lr-list", lambda e: _cfg(e, {"train": {"lr": [1, 2]}})),
    ("cfg-lr-nan", lambda e: _cfg(e, {"train": {"lr": NAN}})),
    ("cfg-lr-inf", lambda e: _cfg(e, {"train": {"lr": INF}})),
    ("cfg-lr-str", lambda e: _cfg(e, {"train": {"lr": "0.1"}})),
    ("cfg-lr-null", lambda e: _cfg(e, {"train": {"lr": None}})),
    ("cfg-steps-zero", lambda e: _cfg(e, {"train": {"steps": 0}})),
    ("cfg-steps-str", lambda e: _cfg(e, {"train": {"steps": "many"}})),
    ("cfg-minutes-nan", lambda e: _cfg(e, {"train": {"steps": None, "minutes": NAN}})),
    ("cfg-minutes-str", lambda e: _cfg(e, {"train": {"steps": None, "minutes": "5"}})),
    ("cfg-adam_betas-short", lambda e: _cfg(e, {"train": {"adam_betas": [0.9]}})),
    ("cfg-adam_betas-str", lambda e: _cfg(e, {"train": {"adam_betas": "ab"}})),
    ("cfg-adam_betas-int", lambda e: _cfg(e, {"train": {"adam_betas": 5}})),
    ("cfg-adam_betas-item-str", lambda e: _cfg(e, {"train": {"adam_betas": [0.9, "x"]}})),
    ("cfg-adam_betas-range", lambda e: _cfg(e, {"train": {"adam_betas": [1.5, 0.9]}})),
    ("cfg-adam_betas-nan", lambda e: _cfg(e, {"train": {"adam_betas": [NAN, 0.9]}})),
    ("cfg-seed-neg", lambda e: _cfg(e, {"train": {"seed": -1}})),
    ("cfg-seed-2^63", lambda e: _cfg(e, {"train": {"seed": 2**63}})),
    ("cfg-seed-str", lambda e: _cfg(e, {"train": {"seed": "x"}})),
    ("cfg-seed-float", lambda e: _cfg(e, {"train": {"seed": 1.5}})),
    ("cfg-mixed_precision-int", lambda e: _cfg(e, {"train": {"mixed_precision": 5}})),
    ("cfg-unknown-key-lrr", lambda e: _cfg(e, {"train": {"lrr": 0.1}})),
    ("cfg-ema_warmup-str", lambda e: _cfg(e, {"train": {"ema_warmup": "yes"}})),
    ("cfg-class_conditional-int", lambda e: _cfg(e, {"train": {"class_conditional": 1}})),
    ("cfg-warmup_steps-neg", lambda e: _cfg(e, {"train": {"warmup_steps": -5}})),
    ("cfg-warmup_steps-float", lambda e: _cfg(e, {"train": {"warmup_steps": 2.5}})),
    ("cfg-grad_clip-neg", lambda e: _cfg(e, {"train": {"grad_clip": -1.0}})),
    ("cfg-weight_decay-neg", lambda e: _cfg(e, {"train": {"weight_decay": -0.1}})),
    ("cfg-log_every-str", lambda e: _cfg(e, {"train": {"log_every": "10"}})),
    ("cfg-keep_checkpoints-zero", lambda e: _cfg(e, {"train": {"keep_checkpoints": 0}})),
    ("cfg-data-image_size-absurd", lambda e: _cfg(e, {"data": {"image_size": 100000}})),
    ("cfg-data-image_size-str", lambda e: _cfg(e, {"data": {"image_size": "big"}})),
    ("cfg-data-image_size-zero", lambda e: _cfg(e, {"data": {"image_size": 0}})),
    ("cfg-data-image_size-bool", lambda e: _cfg(e, {"data": {"image_size": True}})),
    ("cfg-data-channels-2", lambda e: _cfg(e, {"data": {"channels": 2}})),
    ("cfg-data-source-int", lambda e: _cfg(e, {"data": {"source": 5}})),
    ("cfg-data-source-unknown", lambda e: _cfg(e, {"data": {"source": "imagenet"}})),
    ("cfg-data-hflip-str", lambda e: _cfg(e, {"data": {"hflip": "no"}})),
    ("cfg-data-split-unknown", lambda e: _cfg(e, {"data": {"split": "validation"}})),
    ("cfg-data-data_dir-int", lambda e: _cfg(e, {"data": {"data_dir": 7}})),
    ("cfg-data-unknown-key", lambda e: _cfg(e, {"data": {"sorce": "digits"}})),
    ("cfg-process-T-absurd", lambda e: _cfg(e, {"process": {"T": 10**9}})),
    ("cfg-process-T-zero", lambda e: _cfg(e, {"process": {"T": 0}})),
    ("cfg-process-T-str", lambda e: _cfg(e, {"process": {"T": "x"}})),
    ("cfg-process-T-bool", lambda e: _cfg(e, {"process": {"T": True}})),
    ("cfg-process-method-typo", lambda e: _cfg(e, {"process": {"method": "ddpmm"}})),
    ("cfg-process-method-int", lambda e: _cfg(e, {"process": {"method": 3}})),
    ("cfg-process-unknown-key", lambda e: _cfg(e, {"process": {"schedlue": "linear"}})),
    ("cfg-process-vlb_weight-nan", lambda e: _cfg(e, {"process": {"vlb_weight": NAN}})),
    ("cfg-process-schedule-list", lambda e: _cfg(e, {"process": {"schedule": ["cosine"]}})),
    ("cfg-process-vesde-sigma-inf", lambda e: _cfg(e, {"process": {"method": "vesde", "sigma_max": INF}})),
    ("cfg-process-ncsn-levels-absurd", lambda e: _cfg(e, {"process": {"method": "ncsn", "num_levels": 10**9}})),
    ("cfg-model-base_channels-str", lambda e: _cfg(e, {"model": {"base_channels": "x"}})),
    ("cfg-model-base_channels-zero", lambda e: _cfg(e, {"model": {"base_channels": 0}})),
    ("cfg-model-base_channels-absurd", lambda e: _cfg(e, {"model": {"base_channels": 10**6}})),
    ("cfg-model-channel_mult-str", lambda e: _cfg(e, {"model": {"channel_mult": "abc"}})),
    ("cfg-model-channel_mult-item", lambda e: _cfg(e, {"model": {"channel_mult": [1, "a"]}})),
    ("cfg-model-channel_mult-empty", lambda e: _cfg(e, {"model": {"channel_mult": []}})),
    ("cfg-model-channel_mult-float", lambda e: _cfg(e, {"model": {"channel_mult": [1, 2.5]}})),
    ("cfg-model-num_heads-zero", lambda e: _cfg(e, {"model": {"num_heads": 0}})),
    ("cfg-model-dropout-nan", lambda e: _cfg(e, {"model": {"dropout": NAN}})),
    ("cfg-model-dropout-2", lambda e: _cfg(e, {"model": {"dropout": 2.0}})),
    ("cfg-model-unknown-key", lambda e: _cfg(e, {"model": {"base_chanels": 16}})),
    ("cfg-model-network-unknown", lambda e: _cfg(e, {"model": {"network": "transformer"}})),
    ("cfg-model-attention-str", lambda e: _cfg(e, {"model": {"attention_resolutions": "4"}})),
    ("cfg-model-num_res_blocks-absurd", lambda e: _cfg(e, {"model": {"num_res_blocks": 10**6}})),
    ("cfg-sample-steps-str", lambda e: _cfg(e, {"sample": {"steps": "x"}})),
    ("cfg-sample-n-zero", lambda e: _cfg(e, {"sample": {"n": 0}})),
    ("cfg-sample-n-absurd", lambda e: _cfg(e, {"sample": {"n": 10**12}})),
    ("cfg-sample-sampler-unknown", lambda e: _cfg(e, {"sample": {"sampler": "nope"}})),
    ("cfg-sample-eta-nan", lambda e: _cfg(e, {"sample": {"eta": NAN}})),
    ("cfg-sample-steps-absurd", lambda e: _cfg(e, {"sample": {"steps": 10**9}})),
    ("cfg-sample-clip-str", lambda e: _cfg(e, {"sample": {"clip_x0": "yes"}})),
    ("cfg-unknown-section", lambda e: _cfg(e, {"trian": {"lr": 0.1}})),
    ("cfg-section-list", lambda e: _cfg(e, {"train": [1]})),
    ("cfg-section-str", lambda e: _cfg(e, {"data": "abc"})),
    ("cfg-model-section-list", lambda e: _cfg(e, {"model": [1, 2]})),
    ("cfg-codec-kind", lambda e: _cfg(e, {"codec": {"kind": "foo"}})),
    ("cfg-codec-str", lambda e: _cfg(e, {"codec": "pixel"})),
    ("cfg-preset-int", lambda e: _cfg(e, {"preset": 5})),
    ("cfg-top-list", lambda e: _cfg(e, [1, 2])),
    ("cfg-not-json", lambda e: _train(e, "--config", e.text("bad.json", "{oops"))),
    ("cfg-missing", lambda e: _train(e, "--config", e.new(".json"))),
    ("cfg-is-dir", lambda e: _train(e, "--config", str(e.inputs))),
    ("cfg-binary", lambda e: _train(e, "--config", e.p("zero.npz"))),
    # --- train-autoencoder config ---------------------------------------------------------------------------------
    ("ae-kl_weight-nan", lambda e: _ae_cfg(e, {"loss": {"kl_weight": NAN}})),
    ("ae-disc_layers-zero", lambda e: _ae_cfg(e, {"loss": {"disc_layers": 0}})),
    ("ae-preview_n-str", lambda e: _ae_cfg(e, {"preview_n": "x"})),
    ("ae-preview_n-absurd", lambda e: _ae_cfg(e, {"preview_n": 10**12})),
    ("ae-latent_channels-str", lambda e: _ae_cfg(e, {"model": {"latent_channels": "x"}})),
    ("ae-kind", lambda e: _ae_cfg(e, {"kind": "diffusion"})),
    ("ae-unknown-loss-key", lambda e: _ae_cfg(e, {"loss": {"kl_wieght": 1e-6}})),
    ("ae-unknown-model-key", lambda e: _ae_cfg(e, {"model": {"latent_chanels": 4}})),
    ("ae-seed-neg", lambda e: _ae_cfg(e, {"train": {"seed": -3}})),
    ("ae-pad_to-str", lambda e: _ae_cfg(e, {"model": {"pad_to": "32"}})),
    ("ae-attention-int", lambda e: _ae_cfg(e, {"model": {"attention": 2}})),
    ("ae-flag-kl-nan", lambda e: _ae(e, "--kl-weight", "nan")),
    ("ae-flag-disc-start-neg", lambda e: _ae(e, "--disc-start", "-1")),
    ("ae-flag-seed-big", lambda e: _ae(e, "--seed", SEED_BIG)),
    # --- train flags -------------------------------------------------------------------------------------------
    ("train-batch-size-str", lambda e: _train(e, "--batch-size", "abc")),
    ("train-batch-size-absurd", lambda e: _train(e, "--batch-size", str(10**15))),
    ("train-lr-nan", lambda e: _train(e, "--lr", "nan")),
    ("train-lr-inf", lambda e: _train(e, "--lr", "inf")),
    ("train-seed-neg", lambda e: _train(e, "--seed", "-1")),
    ("train-seed-2^63", lambda e: _train(e, "--seed", SEED_BIG)),
    ("train-seed-str", lambda e: _train(e, "--seed", "one")),
    ("train-image-size-absurd", lambda e: _train(e, "--image-size", "100000")),
    ("train-timesteps-absurd", lambda e: _train(e, "--timesteps", BIG)),
    ("train-timesteps-zero", lambda e: _train(e, "--timesteps", "0")),
    ("train-dropout-nan", lambda e: _train(e, "--dropout", "nan")),
    ("train-ema-decay-1.5", lambda e: _train(e, "--ema-decay", "1.5")),
    ("train-warmup-neg", lambda e: _train(e, "--warmup-steps", "-3")),
    ("train-grad-clip-nan", lambda e: _train(e, "--grad-clip", "nan")),
    ("train-weight-decay-inf", lambda e: _train(e, "--weight-decay", "inf")),
    ("train-channel-mult-letters", lambda e: _train(e, "--channel-mult", "a,b")),
    ("train-channel-mult-zero", lambda e: _train(e, "--channel-mult", "1,0")),
    ("train-mixed-precision", lambda e: _train(e, "--mixed-precision", "fp64")),
    ("train-steps-zero", lambda e: _train(e, "--steps", "0")),
    ("train-minutes-nan", lambda e: _train(e, "--minutes", "nan")),
    ("train-vesde-sigma-nan", lambda e: _train(e, "--method", "vesde", "--sigma-min", "nan")),
    ("train-dataset-unknown", lambda e: _train(e, "--dataset", "imagenet")),
    ("train-base-channels-absurd", lambda e: _train(e, "--base-channels", str(10**6))),
    ("train-label-dropout", lambda e: _train(e, "--label-dropout", "1.5")),
    ("train-grid-n-absurd", lambda e: _train(e, "--grid-n", str(10**12))),
    ("train-grid-steps-absurd", lambda e: _train(e, "--grid-steps", BIG)),
    ("train-out-under-file", lambda e: ["train", "--preset", "digits", "--out", e.p("somefile.txt") + "/run"]),
    ("train-resume-seed", lambda e: ["train", "--resume", "--out", e.r("run"), "--seed", "3"]),
    ("train-text-no-captions", lambda e: _train(e, "--text-encoder", "minilm", "--dataset", "digits")),
    ("train-text-and-classes", lambda e: _train(e, "--text-conditional", "--class-conditional", "--dataset",
                                                 "digits-text")),
    ("train-text-encoder-unknown", lambda e: _train(e, "--text-encoder", "clip", "--dataset", "digits-text")),
    ("eval-prompt-unconditional", lambda e: ["evaluate", e.r("run"), "--fid", "--prompt", "a 3"]),
    ("eval-guidance-nll", lambda e: ["evaluate", e.r("run"), "--nll", "--guidance-scale", "2"]),
    # --- super-resolution and cascades ---------------------------------------------------------------------------
    ("train-sr-factor-3", lambda e: _train(e, "--task", "superres", "--factor", "3")),
    ("train-sr-no-factor", lambda e: _train(e, "--task", "superres")),
    ("train-sr-factor-divides", lambda e: _train(e, "--task", "superres", "--factor", "4", "--image-size", "10")),
    ("train-sr-task-unknown", lambda e: _train(e, "--task", "inpaint")),
    ("train-sr-factor-without-task", lambda e: _train(e, "--factor", "2")),
    ("train-sr-aug-nan", lambda e: _train(e, "--task", "superres", "--factor", "2", "--aug-max", "nan")),
    ("train-sr-aug-1", lambda e: _train(e, "--task", "superres", "--factor", "2", "--aug-max", "1")),
    ("train-sr-class", lambda e: _train(e, "--task", "superres", "--factor", "2", "--class-conditional")),
    ("upsample-wrong-size", lambda e: ["upsample", e.r("sr"), "--images", e.p("ok.npz"), "--out", e.new(".npz")]),
    ("upsample-not-superres", lambda e: ["upsample", e.r("run"), "--images", e.p("ok.npz")]),
    ("upsample-aug-level", lambda e: ["upsample", e.r("sr"), "--images", e.p("lowres.npz"), "--aug-level", "1"]),
    ("upsample-missing", lambda e: ["upsample", e.r("sr"), "--images", e.p("nothing.npz")]),
    ("sample-superres-alone", lambda e: _sample(e, run="sr")),
    ("sample-then-wrong-size", lambda e: _sample_out(e, "--then", e.r("sr"))),
    ("sample-then-not-superres", lambda e: _sample_out(e, "--then", e.r("run"))),
    ("sample-aug-without-then", lambda e: _sample_out(e, "--aug-level", "0.1")),
    ("eval-superres-nll", lambda e: ["evaluate", e.r("sr"), "--nll"]),
    ("eval-aug-level-plain-run", lambda e: ["evaluate", e.r("run"), "--fid", "--aug-level", "0.1"]),
    # --- the baselines: GAN, VAE, normalizing flow ---------------------------------------------------------------
    ("train-gan-text", lambda e: _train(e, "--method", "gan", "--preset", "digits-gan", "--text-conditional")),
    ("train-gan-schedule", lambda e: _train(e, "--method", "gan", "--preset", "digits-gan", "--schedule", "linear")),
    ("train-gan-network", lambda e: _train(e, "--preset", "digits-gan", "--network", "dit")),
    ("train-gan-r1-nan", lambda e: _train(e, "--preset", "digits-gan", "--r1-gamma", "nan")),
    ("train-gan-latent-zero", lambda e: _train(e, "--preset", "digits-gan", "--latent-dim", "0")),
    ("train-vae-likelihood", lambda e: _train(e, "--preset", "digits-vae", "--likelihood", "poisson")),
    ("train-vae-kl-negative", lambda e: _train(e, "--preset", "digits-vae", "--kl-weight", "-1")),
    ("train-nf-levels", lambda e: _train(e, "--preset", "digits-nf", "--levels", "4")),
    ("train-preset-method-mismatch", lambda e: _train(e, "--preset", "digits-vae", "--method", "gan")),
    ("train-baseline-flag-on-diffusion", lambda e: _train(e, "--latent-dim", "4")),
    ("train-baseline-latent", lambda e: _train(e, "--preset", "digits-vae", "--latent", e.r("run"))),
    ("train-gan-resume-other-kind", lambda e: ["train", "--resume", "--out", e.r("gan"), "--method", "vae"]),
    ("sample-gan-steps", lambda e: _sample(e, "--steps", "3", run="gan")),
    ("sample-gan-guidance", lambda e: _sample(e, "--guidance-scale", "2", run="gan")),
    ("sample-gan-class-unconditional", lambda e: _sample(e, "--class", "3", run="gan")),
    ("sample-then-gan", lambda e: _sample_out(e, "--then", e.r("gan"))),
    ("eval-gan-nll", lambda e: ["evaluate", e.r("gan"), "--nll"]),
    ("eval-vae-ode", lambda e: ["evaluate", e.r("vae"), "--nll", "--ode"]),
    ("upsample-gan", lambda e: ["upsample", e.r("gan"), "--images", e.p("ok.npz")]),
    # --- datasets ---------------------------------------------------------------------------------------------
    ("data-npz-empty", lambda e: _train(e, "--dataset", e.p("empty.npz"))),
    ("data-npz-zero-bytes", lambda e: _train(e, "--dataset", e.p("zero.npz"))),
    ("data-npz-truncated", lambda e: _train(e, "--dataset", e.p("trunc.npz"))),
    ("data-npz-nan", lambda e: _train(e, "--dataset", e.p("nan.npz"))),
    ("data-npz-no-images", lambda e: _train(e, "--dataset", e.p("noimages.npz"))),
    ("data-npz-1d", lambda e: _train(e, "--dataset", e.p("flat.npz"))),
    ("data-npz-object", lambda e: _train(e, "--dataset", e.p("object.npz"))),
    ("data-resize-absurd", lambda e: _train(e, "--image-size", "16384", "--batch-size", "1", "--grid-n", "1")),
    ("data-folder-empty", lambda e: _train(e, "--dataset", "folder", "--data-dir", e.p("emptydir"))),
    ("data-idx-overflow", lambda e: _train(e, "--dataset", "mnist", "--data-dir", e.p("idx_overflow"), "--split", "train")),
    ("data-idx-wraps-to-zero", lambda e: _train(e, "--dataset", "mnist", "--data-dir", e.p("idx_wrap"), "--split", "train")),
    ("data-idx-exceeds-file", lambda e: _train(e, "--dataset", "mnist", "--data-dir", e.p("idx_big"), "--split", "train")),
    ("data-idx-empty", lambda e: _train(e, "--dataset", "mnist", "--data-dir", e.p("idx_empty"), "--split", "train")),
    ("data-idx-ndim", lambda e: _train(e, "--dataset", "mnist", "--data-dir", e.p("idx_ndim"), "--split", "train")),
    ("data-idx-zero-dim-image", lambda e: _train(e, "--dataset", "mnist", "--data-dir", e.p("idx_zerodim"), "--split", "train")),
    ("data-clf-idx-overflow", lambda e: ["train-classifier", "--dataset", "mnist", "--data-dir", e.p("idx_wrap"),
                                         "--out", e.new()]),
    # --- a run's config.json, tampered ---------------------------------------------------------------------------
    ("run-config-base_channels-str", lambda e: ["sample", e.r("bad_model"), "--n", "2", "--out", e.new(".npz")]),
    ("run-config-T-str", lambda e: ["sample", e.r("bad_T"), "--n", "2", "--out", e.new(".npz")]),
    ("run-config-seed-neg", lambda e: ["sample", e.r("bad_seed"), "--n", "2", "--out", e.new(".npz")]),
    ("run-config-image_size-absurd", lambda e: ["sample", e.r("bad_size"), "--n", "2", "--out", e.new(".npz")]),
    ("run-config-unknown-key", lambda e: ["sample", e.r("bad_key"), "--n", "2", "--out", e.new(".npz")]),
    ("run-config-resume", lambda e: ["train", "--resume", "--out", e.r("bad_model"), "--steps", "3"]),
    ("run-config-evaluate", lambda e: ["evaluate", e.r("bad_T"), "--nll"]),
    ("run-config-clf", lambda e: ["train-classifier", e.r("bad_T"), "--out", e.new()]),
    # --- sample: resources, steps, seeds, options -------------------------------------------------------------
    ("sample-n-1e9", lambda e: ["sample", e.r("run"), "--n", BIG, "--out", e.new(".npz")]),
    ("sample-n-1e12-bs", lambda e: ["sample", e.r("run"), "--n", str(10**12), "--batch-size", "1", "--out", e.new(".npz")]),
    ("sample-n-zero", lambda e: ["sample", e.r("run"), "--n", "0"]),
    ("sample-n-str", lambda e: ["sample", e.r("run"), "--n", "abc"]),
    ("sample-n-float", lambda e: ["sample", e.r("run"), "--n", "2.5"]),
    ("sample-steps-over-T", lambda e: _sample_out(e, "--steps", "5000")),
    ("sample-steps-1e9-ddim", lambda e: _sample_out(e, "--steps", BIG)),
    ("sample-steps-1e9-euler", lambda e: _sample_out(e, "--sampler", "euler", "--steps", BIG)),
    ("sample-steps-1e9-heun", lambda e: _sample_out(e, "--sampler", "heun", "--steps", BIG)),
    ("sample-steps-1e9-pc", lambda e: _sample_out(e, "--sampler", "pc", "--steps", BIG)),
    ("sample-steps-1e9-langevin", lambda e: _sample_out(e, "--sampler", "langevin", "--steps", BIG)),
    ("sample-corrector-1e9", lambda e: _sample_out(e, "--sampler", "langevin", "--steps", "2", "--corrector-steps", BIG)),
    ("sample-corrector-neg", lambda e: _sample_out(e, "--sampler", "pc", "--steps", "2", "--corrector-steps", "-1")),
    ("sample-seed-neg", lambda e: _sample_out(e, "--seed", "-1")),
    ("sample-seed-2^63", lambda e: _sample_out(e, "--seed", SEED_BIG)),
    ("sample-seed-str", lambda e: _sample_out(e, "--seed", "abc")),
    ("sample-eta-nan", lambda e: _sample_out(e, "--eta", "nan")),
    ("sample-eta-2", lambda e: _sample_out(e, "--eta", "2")),
    ("sample-snr-nan", lambda e: _sample_out(e, "--snr", "nan")),
    ("sample-rtol-zero", lambda e: _sample_out(e, "--rtol", "0")),
    ("sample-langevin-eps-inf", lambda e: _sample_out(e, "--langevin-eps", "inf")),
    ("sample-batch-size-zero", lambda e: _sample_out(e, "--batch-size", "0")),
    ("sample-guidance-nan", lambda e: _sample_out(e, "--class", "1", "--guidance-scale", "nan")),
    ("sample-class-str", lambda e: _sample_out(e, "--class", "seven")),
    ("sample-run-missing", lambda e: ["sample", e.new(), "--n", "2"]),
    ("sample-run-is-file", lambda e: ["sample", e.p("somefile.txt"), "--n", "2"]),
    ("sample-checkpoint-missing", lambda e: _sample_out(e, "--checkpoint", e.new())),
    ("sample-sampler-unknown", lambda e: _sample_out(e, "--sampler", "magic")),
    # --- outputs ------------------------------------------------------------------------------------------------
    ("out-proc", lambda e: _sample(e, "--out", "/proc/diffusionlab-x.npz")),
    ("out-proc-missing-folder", lambda e: _sample(e, "--out", "/proc/no-such-folder/x.npz")),
    ("out-under-file", lambda e: _sample(e, "--out", e.p("somefile.txt") + "/x.npz")),
    ("out-missing-folder", lambda e: _sample(e, "--out", e.new() + "/x.npz")),
    ("out-wrong-suffix", lambda e: _sample(e, "--out", e.new(".png"))),
    ("out-existing", lambda e: _sample(e, "--out", e.o("existing.npz"))),
    ("out-existing-grid", lambda e: _sample(e, "--out", e.o("grid_only.npz"))),
    ("out-is-dir", lambda e: _sample(e, "--out", e.o("dir.npz"))),
    ("inpaint-out-existing", lambda e: _inpaint(e, "--out", e.o("existing.npz"))),
    ("inpaint-out-proc", lambda e: _inpaint(e, "--out", "/proc/diffusionlab-x.npz")),
    ("edit-out-existing", lambda e: _edit(e, "--out", e.o("existing.npz"))),
    ("edit-out-under-file", lambda e: _edit(e, "--out", e.p("somefile.txt") + "/x.npz")),
    ("eval-json-existing", lambda e: _eval_npz(e, "ok.npz", "--json", e.o("existing.json"))),
    ("eval-json-proc", lambda e: _eval_npz(e, "ok.npz", "--json", "/proc/diffusionlab-x.json")),
    ("eval-json-under-file", lambda e: _eval_npz(e, "ok.npz", "--json", e.p("somefile.txt") + "/r.json")),
    ("eval-json-default-existing", lambda e: _eval_npz(e, "evaluated.npz")),
    ("eval-run-json-existing", lambda e: ["evaluate", e.r("run"), "--fid", "--n", "20", "--json", e.o("existing.json")]),
    ("clf-out-existing", lambda e: _clf(e, "--out", e.o("clf"))),
    ("clf-out-holds-other-files", lambda e: _clf(e, "--out", e.o("notes"), "--overwrite")),
    ("clf-out-proc", lambda e: _clf(e, "--out", "/proc/diffusionlab-clf")),
    ("clf-out-under-file", lambda e: _clf(e, "--out", e.p("somefile.txt") + "/clf")),
    ("clf-out-is-file", lambda e: _clf(e, "--out", e.p("somefile.txt"))),
    # --- evaluate / classify: the samples file first ------------------------------------------------------------
    ("eval-float01", lambda e: _eval_npz(e, "float01.npz")),
    ("eval-zero-bytes", lambda e: _eval_npz(e, "zero.npz")),
    ("eval-truncated", lambda e: _eval_npz(e, "trunc.npz")),
    ("eval-no-images", lambda e: _eval_npz(e, "noimages.npz")),
    ("eval-nan", lambda e: _eval_npz(e, "nan.npz")),
    ("eval-int64", lambda e: _eval_npz(e, "int64.npz")),
    ("eval-empty", lambda e: _eval_npz(e, "empty.npz")),
    ("eval-flat", lambda e: _eval_npz(e, "flat.npz")),
    ("eval-wrong-shape", lambda e: _eval_npz(e, "big16.npz")),
    ("eval-object", lambda e: _eval_npz(e, "object.npz")),
    ("eval-missing", lambda e: ["evaluate", e.new(".npz"), "--fid", "--dataset", "digits"]),
    ("eval-run-samples-float", lambda e: ["evaluate", e.r("run"), "--fid", "--samples", e.p("float01.npz")]),
    ("eval-run-samples-trunc", lambda e: ["evaluate", e.r("run"), "--fid", "--samples", e.p("trunc.npz")]),
    ("eval-run-samples-missing", lambda e: ["evaluate", e.r("run"), "--fid", "--samples", e.new(".npz")]),
    ("eval-run-samples-shape", lambda e: ["evaluate", e.r("run"), "--fid", "--samples", e.p("big16.npz")]),
    ("eval-n-1e12", lambda e: ["evaluate", e.r("run"), "--fid", "--n", str(10**12)]),
    ("eval-steps-1e9", lambda e: ["evaluate", e.r("run"), "--fid", "--steps", BIG]),
    ("eval-seed-neg", lambda e: ["evaluate", e.r("run"), "--nll", "--seed", "-1"]),
    ("eval-seed-2^63", lambda e: _eval_npz(e, "ok.npz", "--seed", SEED_BIG)),
    ("eval-nll-steps-1e9", lambda e: ["evaluate", e.r("run"), "--nll", "--nll-steps", BIG]),
    ("eval-nothing", lambda e: ["evaluate", e.r("run")]),
    ("eval-dataset-unknown", lambda e: ["evaluate", e.p("ok.npz"), "--fid", "--dataset", "imagenet"]),
    ("eval-ode-steps-1e9", lambda e: ["evaluate", e.r("run"), "--nll", "--ode", "--ode-steps", BIG]),
    ("classify-float01", lambda e: ["classify", e.p("float01.npz")]),
    ("classify-zero-bytes", lambda e: ["classify", e.p("zero.npz")]),
    ("classify-truncated", lambda e: ["classify", e.p("trunc.npz")]),
    ("classify-int64", lambda e: ["classify", e.p("int64.npz")]),
    ("classify-empty", lambda e: ["classify", e.p("empty.npz")]),
    ("classify-nan", lambda e: ["classify", e.p("nan.npz")]),
    ("classify-wrong-shape", lambda e: ["classify", e.p("big16.npz")]),
    ("classify-text", lambda e: ["classify", e.p("somefile.txt")]),
    ("classify-dir", lambda e: ["classify", str(e.inputs)]),
    # --- train-classifier ------------------------------------------------------------------------------------
    ("clf-seed-neg", lambda e: _clf(e, "--out", e.new(), "--seed", "-1")),
    ("clf-seed-2^63", lambda e: _clf(e, "--out", e.new(), "--seed", SEED_BIG)),
    ("clf-timesteps-1e9", lambda e: _clf(e, "--out", e.new(), "--timesteps", BIG)),
    ("clf-batch-size-absurd", lambda e: _clf(e, "--out", e.new(), "--batch-size", str(10**12))),
    ("clf-lr-nan", lambda e: _clf(e, "--out", e.new(), "--lr", "nan")),
    ("clf-channel-mult-zero", lambda e: _clf(e, "--out", e.new(), "--channel-mult", "0")),
    ("clf-base-channels-absurd", lambda e: _clf(e, "--out", e.new(), "--base-channels", str(10**6))),
    ("clf-dataset-empty", lambda e: ["train-classifier", "--dataset", e.p("empty.npz"), "--out", e.new()]),
    ("clf-run-and-dataset", lambda e: ["train-classifier", e.r("run"), "--dataset", "digits", "--out", e.new()]),
    # --- inpaint / edit -----------------------------------------------------------------------------------------
    ("inpaint-resample-1e9", lambda e: _inpaint(e, "--out", e.new(".npz"), "--resample", BIG)),
    ("inpaint-jump-1e9", lambda e: _inpaint(e, "--out", e.new(".npz"), "--resample", "2", "--jump", BIG)),
    ("inpaint-seed-neg", lambda e: _inpaint(e, "--out", e.new(".npz"), "--seed", "-1")),
    ("inpaint-n-1e9", lambda e: _inpaint(e, "--out", e.new(".npz"), "--n", BIG)),
    ("inpaint-steps-over-T", lambda e: _inpaint(e, "--out", e.new(".npz"), "--steps", BIG)),
    ("inpaint-image-nan", lambda e: ["inpaint", e.r("run"), "--image", e.p("nan.npy"), "--mask", e.p("mask.npy"),
                                     "--out", e.new(".npz")]),
    ("inpaint-image-missing", lambda e: ["inpaint", e.r("run"), "--image", e.new(".png"), "--mask", e.p("mask.npy")]),
    ("inpaint-mask-half", lambda e: ["inpaint", e.r("run"), "--image", e.p("in.npy"), "--mask", e.p("halfmask.npy"),
                                     "--out", e.new(".npz")]),
    ("edit-strength-nan", lambda e: ["edit", e.r("run"), "--image", e.p("in.npy"), "--strength", "nan",
                                     "--out", e.new(".npz")]),
    ("edit-strength-2", lambda e: ["edit", e.r("run"), "--image", e.p("in.npy"), "--strength", "2", "--out", e.new(".npz")]),
    ("edit-seed-2^63", lambda e: _edit(e, "--out", e.new(".npz"), "--seed", SEED_BIG)),
    ("edit-eta-nan", lambda e: _edit(e, "--out", e.new(".npz"), "--eta", "nan")),
    ("edit-n-1e12", lambda e: _edit(e, "--out", e.new(".npz"), "--n", str(10**12))),
    ("edit-image-zero-bytes", lambda e: ["edit", e.r("run"), "--image", e.p("zero.npz"), "--strength", "0.5",
                                         "--out", e.new(".npz")]),
]


# A piece of each case's one line: the field, flag or file it names, or what it says is wrong.
NEEDLES: dict[str, str] = {
    'train-sr-factor-3': 'task.factor must be one of 2, 4',
    'train-sr-no-factor': 'task.factor must be one of 2, 4',
    'train-sr-factor-divides': 'factor 4 does not divide the image size 10x10',
    'train-sr-task-unknown': "invalid choice: 'inpaint'",
    'train-sr-factor-without-task': "need task.kind 'superres'",
    'train-sr-aug-nan': 'task.aug_max',
    'train-sr-aug-1': 'task.aug_max',
    'train-sr-class': 'conditioned on the low-resolution image only',
    'upsample-wrong-size': 'is 1x8x8 (CxHxW), this upsampler takes 1x4x4',
    'upsample-not-superres': 'does not upsample',
    'upsample-aug-level': '--aug-level must be in [0, 1)',
    'upsample-missing': 'not found',
    'sample-superres-alone': 'is a super-resolution run',
    'sample-then-wrong-size': 'the base run draws 1x8x8 images and the upsampler',
    'sample-then-not-superres': 'does not upsample',
    'sample-aug-without-then': '--aug-level sets the upsampler of a cascade',
    'eval-superres-nll': '--nll is not computed for a super-resolution run',
    'eval-aug-level-plain-run': '--aug-level sets the condition of a super-resolution run',
    'train-gan-text': 'not text-conditional',
    'train-gan-schedule': 'has no diffusion settings (process)',
    'train-gan-network': "unknown key 'network'",
    'train-gan-r1-nan': 'loss.r1_gamma',
    'train-gan-latent-zero': '--latent-dim',
    'train-vae-likelihood': "invalid choice: 'poisson'",
    'train-vae-kl-negative': 'loss.kl_weight',
    'train-nf-levels': 'not a multiple of 2^4 = 16',
    'train-preset-method-mismatch': '--preset digits-vae trains a vae, not --method gan',
    'train-baseline-flag-on-diffusion': '--latent-dim is a setting of the GAN, VAE or flow baselines',
    'train-baseline-latent': 'has no diffusion settings (--latent)',
    'train-gan-resume-other-kind': 'is a gan run, not vae',
    'sample-gan-steps': '--steps is a diffusion setting',
    'sample-gan-guidance': '--guidance-scale is a diffusion setting',
    'sample-gan-class-unconditional': '--class needs a class-conditional run',
    'sample-then-gan': 'is a gan run, not a diffusion model',
    'eval-gan-nll': 'defines no likelihood',
    'eval-vae-ode': '--ode is a diffusion setting',
    'upsample-gan': 'is a gan run, not a diffusion model',
    'train-text-no-captions': 'needs captions',
    'train-text-and-classes': 'not both',
    'train-text-encoder-unknown': "invalid choice: 'clip'",
    'eval-prompt-unconditional': '--prompt needs a text run',
    'eval-guidance-nll': 'nothing is sampled',
    'cfg-batch_size-str': 'train.batch_size must',
    'cfg-batch_size-bool': 'train.batch_size must',
    'cfg-batch_size-float': 'train.batch_size must',
    'cfg-batch_size-neg': 'train.batch_size must',
    'cfg-batch_size-absurd': 'GiB for one batch of images',
    'cfg-lr-list': 'train.lr must',
    'cfg-lr-nan': 'train.lr must',
    'cfg-lr-inf': 'train.lr must',
    'cfg-lr-str': 'train.lr must',
    'cfg-lr-null': 'train.lr must',
    'cfg-steps-zero': 'train.steps must',
    'cfg-steps-str': 'train.steps must',
    'cfg-minutes-nan': 'train.minutes must',
    'cfg-minutes-str': 'train.minutes must',
    'cfg-adam_betas-short': 'train.adam_betas must',
    'cfg-adam_betas-str': 'train.adam_betas must',
    'cfg-adam_betas-int': 'train.adam_betas must',
    'cfg-adam_betas-item-str': 'train.adam_betas must',
    'cfg-adam_betas-range': 'train.adam_betas must',
    'cfg-adam_betas-nan': 'train.adam_betas must',
    'cfg-seed-neg': 'train.seed must',
    'cfg-seed-2^63': 'train.seed must',
    'cfg-seed-str': 'train.seed must',
    'cfg-seed-float': 'train.seed must',
    'cfg-mixed_precision-int': 'train.mixed_precision must',
    'cfg-unknown-key-lrr': "unknown key 'lrr' in config section 'train' (did you mean 'lr'?)",
    'cfg-ema_warmup-str': 'train.ema_warmup must',
    'cfg-class_conditional-int': 'train.class_conditional must',
    'cfg-warmup_steps-neg': 'train.warmup_steps must',
    'cfg-warmup_steps-float': 'train.warmup_steps must',
    'cfg-grad_clip-neg': 'train.grad_clip must',
    'cfg-weight_decay-neg': 'train.weight_decay must',
    'cfg-log_every-str': 'train.log_every must',
    'cfg-keep_checkpoints-zero': 'train.keep_checkpoints must',
    'cfg-data-image_size-absurd': 'data.image_size must',
    'cfg-data-image_size-str': 'data.image_size must',
    'cfg-data-image_size-zero': 'data.image_size must',
    'cfg-data-image_size-bool': 'data.image_size must',
    'cfg-data-channels-2': 'data.channels must',
    'cfg-data-source-int': 'data.source must',
    'cfg-data-source-unknown': "unknown dataset source 'imagenet'",
    'cfg-data-hflip-str': 'data.hflip must',
    'cfg-data-split-unknown': 'data.split must',
    'cfg-data-data_dir-int': 'data.data_dir must',
    'cfg-data-unknown-key': "(did you mean 'source'?)",
    'cfg-process-T-absurd': 'ddpm T must be at most 100000',
    'cfg-process-T-zero': 'T must be >= 1',
    'cfg-process-T-str': 'ddpm T must be a whole number',
    'cfg-process-T-bool': 'ddpm T must be a whole number',
    'cfg-process-method-typo': "'ddpmm' (did you mean 'ddpm'?)",
    'cfg-process-method-int': 'unknown method 3',
    'cfg-process-unknown-key': "'schedlue' (did you mean 'schedule'?)",
    'cfg-process-vlb_weight-nan': 'ddpm vlb_weight must be a finite number',
    'cfg-process-schedule-list': 'ddpm schedule must be one of linear',
    'cfg-process-vesde-sigma-inf': 'vesde sigma_max must be a finite number',
    'cfg-process-ncsn-levels-absurd': 'ncsn num_levels must be at most 100000',
    'cfg-model-base_channels-str': 'model.base_channels must',
    'cfg-model-base_channels-zero': 'model.base_channels must',
    'cfg-model-base_channels-absurd': 'GiB for its weights',
    'cfg-model-channel_mult-str': 'model.channel_mult must',
    'cfg-model-channel_mult-item': 'model.channel_mult must',
    'cfg-model-channel_mult-empty': 'model.channel_mult must',
    'cfg-model-channel_mult-float': 'model.channel_mult must',
    'cfg-model-num_heads-zero': 'model.num_heads must',
    'cfg-model-dropout-nan': 'model.dropout must',
    'cfg-model-dropout-2': 'model.dropout must',
    'cfg-model-unknown-key': "(did you mean 'base_channels'?)",
    'cfg-model-network-unknown': "unknown network 'transformer'",
    'cfg-model-attention-str': 'model.attention_resolutions must',
    'cfg-model-num_res_blocks-absurd': 'GiB for its weights',
    'cfg-sample-steps-str': 'sample.steps must',
    'cfg-sample-n-zero': 'sample.n must',
    'cfg-sample-n-absurd': 'GiB for the preview grid',
    'cfg-sample-sampler-unknown': 'sample.sampler must',
    'cfg-sample-eta-nan': 'sample.eta must',
    'cfg-sample-steps-absurd': 'sample.steps must',
    'cfg-sample-clip-str': 'sample.clip_x0 must',
    'cfg-unknown-section': "'trian' (did you mean 'train'?)",
    'cfg-section-list': "config section 'train' must be a JSON object",
    'cfg-section-str': "config section 'data' must be a JSON object",
    'cfg-model-section-list': "config section 'model' must be a JSON object",
    'cfg-codec-kind': "unknown codec 'foo'",
    'cfg-codec-str': "config section 'codec' must be a JSON object",
    'cfg-preset-int': 'preset must be a string',
    'cfg-top-list': 'must hold a JSON object',
    'cfg-not-json': 'is not valid JSON',
    'cfg-missing': 'config file not found',
    'cfg-is-dir': 'is a folder, not a JSON file',
    'cfg-binary': 'is not valid JSON',
    'ae-kl_weight-nan': 'loss.kl_weight must',
    'ae-disc_layers-zero': 'loss.disc_layers must',
    'ae-preview_n-str': 'preview_n must',
    'ae-preview_n-absurd': 'GiB for the preview grid',
    'ae-latent_channels-str': 'model.latent_channels must',
    'ae-kind': "kind 'autoencoder', got 'diffusion'",
    'ae-unknown-loss-key': "(did you mean 'kl_weight'?)",
    'ae-unknown-model-key': "(did you mean 'latent_channels'?)",
    'ae-seed-neg': 'train.seed must',
    'ae-pad_to-str': 'model.pad_to must',
    'ae-attention-int': 'model.attention must',
    'ae-flag-kl-nan': 'loss.kl_weight must',
    'ae-flag-disc-start-neg': 'loss.disc_start must',
    'ae-flag-seed-big': 'a seed must lie in',
    'train-batch-size-str': '--batch-size',
    'train-batch-size-absurd': 'GiB for one batch of images',
    'train-lr-nan': '--lr',
    'train-lr-inf': '--lr',
    'train-seed-neg': 'a seed must lie in',
    'train-seed-2^63': 'a seed must lie in',
    'train-seed-str': '--seed',
    'train-image-size-absurd': 'data.image_size must',
    'train-timesteps-absurd': 'ddpm T must be at most 100000',
    'train-timesteps-zero': 'T must be >= 1',
    'train-dropout-nan': 'model.dropout must',
    'train-ema-decay-1.5': 'train.ema_decay must',
    'train-warmup-neg': 'train.warmup_steps must',
    'train-grad-clip-nan': 'train.grad_clip must',
    'train-weight-decay-inf': 'train.weight_decay must',
    'train-channel-mult-letters': '--channel-mult',
    'train-channel-mult-zero': 'model.channel_mult must',
    'train-mixed-precision': '--mixed-precision',
    'train-steps-zero': '--steps',
    'train-minutes-nan': '--minutes',
    'train-vesde-sigma-nan': 'vesde sigma_min must be a finite number',
    'train-dataset-unknown': "unknown dataset source 'imagenet'",
    'train-base-channels-absurd': 'GiB for its weights',
    'train-label-dropout': 'train.label_dropout must',
    'train-grid-n-absurd': 'GiB for the preview grid',
    'train-grid-steps-absurd': 'sample.steps must',
    'train-out-under-file': 'somefile.txt',
    'train-resume-seed': 'train.seed',
    'data-npz-empty': 'holds no images',
    'data-npz-zero-bytes': 'zero.npz: cannot read npz',
    'data-npz-truncated': 'trunc.npz: cannot read npz',
    'data-npz-nan': 'NaN',
    'data-npz-no-images': "no 'images' array",
    'data-npz-1d': "'images' must be (N, H, W)",
    'data-npz-object': 'object.npz: cannot read npz',
    'data-resize-absurd': 'GiB for 1,797 resized images',
    'data-folder-empty': 'contains no images',
    'data-idx-overflow': 'truncated: header says 4294967295 items',
    'data-idx-wraps-to-zero': 'truncated: header says 2147483648 items',
    'data-idx-exceeds-file': 'truncated: header says 60000 items',
    'data-idx-empty': 'holds no images',
    'data-idx-ndim': 'truncated IDX header',
    'data-idx-zero-dim-image': 'images of 0x28 pixels',
    'data-clf-idx-overflow': 'truncated: header says 2147483648 items',
    'run-config-base_channels-str': 'model.base_channels must',
    'run-config-T-str': 'ddpm T must be a whole number',
    'run-config-seed-neg': 'train.seed must',
    'run-config-image_size-absurd': 'model.image_size must',
    'run-config-unknown-key': "(did you mean 'lr'?)",
    'run-config-resume': 'model.base_channels must',
    'run-config-evaluate': 'ddpm T must be a whole number',
    'run-config-clf': 'ddpm T must be a whole number',
    'sample-n-1e9': '--n 1000000000 needs ~',
    'sample-n-1e12-bs': 'GiB for the images',
    'sample-n-zero': '--n',
    'sample-n-str': '--n',
    'sample-n-float': '--n',
    'sample-steps-over-T': "more than the model's T = 1000",
    'sample-steps-1e9-ddim': '--steps 1000000000 is more than any sampler needs',
    'sample-steps-1e9-euler': 'more than any sampler needs',
    'sample-steps-1e9-heun': 'more than any sampler needs',
    'sample-steps-1e9-pc': 'more than any sampler needs',
    'sample-steps-1e9-langevin': 'more than any sampler needs',
    'sample-corrector-1e9': '--corrector-steps 1000000000',
    'sample-corrector-neg': '--corrector-steps must be >= 0',
    'sample-seed-neg': '--seed',
    'sample-seed-2^63': '--seed',
    'sample-seed-str': '--seed',
    'sample-eta-nan': 'eta must be in [0, 1]',
    'sample-eta-2': 'eta must be in [0, 1]',
    'sample-snr-nan': '--snr',
    'sample-rtol-zero': '--rtol',
    'sample-langevin-eps-inf': '--langevin-eps',
    'sample-batch-size-zero': '--batch-size',
    'sample-guidance-nan': '--guidance-scale',
    'sample-class-str': '--class',
    'sample-run-missing': '/new/n',
    'sample-run-is-file': 'somefile.txt',
    'sample-checkpoint-missing': 'checkpoint',
    'sample-sampler-unknown': '--sampler',
    'out-proc': 'cannot write in /proc',
    'out-proc-missing-folder': 'output folder does not exist',
    'out-under-file': 'somefile.txt is a file, not a folder',
    'out-missing-folder': 'output folder does not exist',
    'out-wrong-suffix': '--out must end in .npz',
    'out-existing': 'existing.npz already exists; pass --overwrite',
    'out-existing-grid': 'grid_only.png already exists',
    'out-is-dir': 'dir.npz is a folder, not a file',
    'inpaint-out-existing': 'existing.npz already exists',
    'inpaint-out-proc': 'cannot write in /proc',
    'edit-out-existing': 'existing.npz already exists',
    'edit-out-under-file': 'somefile.txt is a file, not a folder',
    'eval-json-existing': 'existing.json already exists',
    'eval-json-proc': 'cannot write in /proc',
    'eval-json-under-file': 'somefile.txt is a file, not a folder',
    'eval-json-default-existing': 'evaluated.eval.json already exists',
    'eval-run-json-existing': 'existing.json already exists',
    'clf-out-existing': 'already holds classifier',
    'clf-out-holds-other-files': 'holds other files',
    'clf-out-proc': 'cannot write in /proc',
    'clf-out-under-file': 'somefile.txt is a file, not a folder',
    'clf-out-is-file': 'somefile.txt is a file, not a folder',
    'eval-float01': 'must be uint8 images',
    'eval-zero-bytes': 'is not a readable .npz file',
    'eval-truncated': 'is not a readable .npz file',
    'eval-no-images': "has no 'images' array",
    'eval-nan': 'must be uint8 images',
    'eval-int64': 'must be uint8 images',
    'eval-empty': 'no samples in it',
    'eval-flat': 'samples must have shape',
    'eval-wrong-shape': 'samples have shape (1, 16, 16)',
    'eval-object': 'is not a readable .npz file',
    'eval-missing': 'samples file not found',
    'eval-run-samples-float': 'must be uint8 images',
    'eval-run-samples-trunc': 'is not a readable .npz file',
    'eval-run-samples-missing': 'samples file not found',
    'eval-run-samples-shape': 'samples have shape (1, 16, 16)',
    'eval-n-1e12': 'GiB for the images',
    'eval-steps-1e9': '--steps 1000000000',
    'eval-seed-neg': '--seed',
    'eval-seed-2^63': '--seed',
    'eval-nll-steps-1e9': '--nll-steps 1000000000',
    'eval-nothing': 'choose what to measure',
    'eval-dataset-unknown': "unknown dataset source 'imagenet'",
    'eval-ode-steps-1e9': '--ode-steps 1000000000',
    'classify-float01': 'must be uint8 images',
    'classify-zero-bytes': 'is not a readable .npz file',
    'classify-truncated': 'is not a readable .npz file',
    'classify-int64': 'must be uint8 images',
    'classify-empty': 'no samples in it',
    'classify-nan': 'must be uint8 images',
    'classify-wrong-shape': '8x8 grayscale',
    'classify-text': 'is not a readable .npz file',
    'classify-dir': 'is a folder, not a samples .npz file',
    'clf-seed-neg': '--seed',
    'clf-seed-2^63': '--seed',
    'clf-timesteps-1e9': '--timesteps 1000000000',
    'clf-batch-size-absurd': '--batch-size 1000000000000 needs',
    'clf-lr-nan': '--lr',
    'clf-channel-mult-zero': 'classifier.channel_mult must',
    'clf-base-channels-absurd': 'GiB for its weights',
    'clf-dataset-empty': 'holds no images',
    'clf-run-and-dataset': 'not both or neither',
    'inpaint-resample-1e9': '--resample 1000000000',
    'inpaint-jump-1e9': '--jump 1000000000',
    'inpaint-seed-neg': '--seed',
    'inpaint-n-1e9': '--n 1000000000 needs',
    'inpaint-steps-over-T': '--steps 1000000000',
    'inpaint-image-nan': 'NaN',
    'inpaint-image-missing': 'image file not found',
    'inpaint-mask-half': 'must be binary',
    'edit-strength-nan': '--strength',
    'edit-strength-2': '--strength',
    'edit-seed-2^63': '--seed',
    'edit-eta-nan': '--eta',
    'edit-n-1e12': '--n 1000000000000 needs',
    'edit-image-zero-bytes': 'is not a readable .npz file',
}


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _idx(dims: tuple[int, ...], payload: bytes = b"", code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def _write_idx_dir(folder: Path, images: bytes, labels: bytes | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte").write_bytes(images)
    (folder / "train-labels-idx1-ubyte").write_bytes(labels if labels is not None else _idx((4,), bytes(4)))


def make_inputs(e: Env) -> None:
    """Every input file the corpus names, and the pre-existing outputs it must leave alone."""
    d, rng = e.inputs, np.random.default_rng(0)
    d.mkdir(parents=True)
    u8 = rng.integers(0, 256, (24, 8, 8), dtype=np.uint8)
    (d / "ok.npz").write_bytes(_npz_bytes(images=u8))
    (d / "lowres.npz").write_bytes(_npz_bytes(images=u8[:, :4, :4].copy()))  # what the 8x8 upsampler takes
    (d / "evaluated.npz").write_bytes(_npz_bytes(images=u8))
    (d / "evaluated.eval.json").write_text("{}")
    (d / "float01.npz").write_bytes(_npz_bytes(images=(u8 / 255.0).astype(np.float32)))
    nan = (u8 / 255.0).astype(np.float32)
    nan[0, 0, 0] = np.nan
    (d / "nan.npz").write_bytes(_npz_bytes(images=nan))
    (d / "int64.npz").write_bytes(_npz_bytes(images=u8.astype(np.int64)))
    (d / "empty.npz").write_bytes(_npz_bytes(images=np.zeros((0, 8, 8), np.uint8)))
    (d / "flat.npz").write_bytes(_npz_bytes(images=np.zeros(64, np.uint8)))
    (d / "big16.npz").write_bytes(_npz_bytes(images=np.zeros((24, 16, 16), np.uint8)))
    (d / "noimages.npz").write_bytes(_npz_bytes(pixels=u8))
    (d / "object.npz").write_bytes(_npz_bytes(images=np.array([None, 1], dtype=object)))
    (d / "zero.npz").write_bytes(b"")
    full = _npz_bytes(images=u8)
    (d / "trunc.npz").write_bytes(full[: len(full) // 2])
    (d / "somefile.txt").write_text("not a folder\n")
    (d / "emptydir").mkdir()
    np.save(d / "in.npy", u8[0])
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 1
    np.save(d / "mask.npy", mask)
    np.save(d / "halfmask.npy", mask * 0.5)
    np.save(d / "nan.npy", nan[0])
    m = 0xFFFFFFFF
    _write_idx_dir(d / "idx_overflow", _idx((m, m, m), bytes(16)))  # product far beyond int64
    _write_idx_dir(d / "idx_wrap", _idx((2**31, 2**31, 4)))  # product 2^64: wraps to exactly 0 in int64
    _write_idx_dir(d / "idx_big", _idx((60000, 28, 28), bytes(10)))  # header larger than the file
    _write_idx_dir(d / "idx_empty", _idx((0, 28, 28)), _idx((0,)))  # no images at all
    (d / "idx_ndim").mkdir()
    (d / "idx_ndim" / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 200]) + bytes(8))
    (d / "idx_ndim" / "train-labels-idx1-ubyte").write_bytes(_idx((4,), bytes(4)))
    _write_idx_dir(d / "idx_zerodim", _idx((4, 0, 28)))  # four images of 0 x 28 pixels

    o = e.outs
    o.mkdir()
    (o / "existing.npz").write_bytes(_npz_bytes(images=u8))
    (o / "existing.png").write_bytes(b"\x89PNG fake")
    (o / "grid_only.png").write_bytes(b"\x89PNG fake")
    (o / "existing.json").write_text('{"keep": true}\n')
    (o / "dir.npz").mkdir()
    (o / "clf").mkdir()
    (o / "notes").mkdir()
    (o / "notes" / "todo.txt").write_text("mine\n")
    (o / "clf" / "classifier.json").write_text("{}")
    (o / "clf" / "classifier.safetensors").write_bytes(b"weights")


def make_tampered_runs(e: Env) -> None:
    """Copies of the trained run whose config.json a user has edited badly."""
    edits = {"bad_model": ("model", "base_channels", "x"), "bad_T": ("process", "T", "abc"),
             "bad_seed": ("train", "seed", -1), "bad_size": ("model", "image_size", 100000),
             "bad_key": ("train", "lrr", 0.1)}
    for name, (section, key, value) in edits.items():
        dst = e.root / "runs" / name
        shutil.copytree(e.run, dst)
        cfg = json.loads((dst / "config.json").read_text())
        cfg[section][key] = value
        (dst / "config.json").write_text(json.dumps(cfg))
        for state in dst.glob("checkpoints/*/state.json"):  # the copy of the config every checkpoint carries
            d = json.loads(state.read_text())
            d["config"][section][key] = value
            state.write_text(json.dumps(d))


def tree_digest(*folders: Path) -> dict[str, str]:
    """path -> sha256 of every file (and 'dir' for every folder) under the folders."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


TINY_RUN = ["train", "--preset", "digits", "--steps", "2", "--base-channels", "8", "--channel-mult", "1",
            "--num-res-blocks", "1", "--attention-resolutions", "", "--checkpoint-every", "2", "--sample-every", "1000",
            "--grid-n", "4", "--grid-steps", "2", "--progress", "lines"]


def build_env(root: Path, trained: Path | None = None) -> Env:
    """Train the one tiny run (or copy `trained`), then write the inputs, outputs and tampered copies around it."""
    run = root / "run"
    if trained is not None:
        shutil.copytree(trained, run)
    else:
        assert main([*TINY_RUN, "--out", str(run)]) == 0
    # An upsampler of the same size (8x8 from 4x4), for the super-resolution cases.
    assert main([*TINY_RUN, "--task", "superres", "--factor", "2", "--out", str(root / "runs" / "sr")]) == 0
    for kind in ("gan", "vae"):  # the baselines' cases
        assert main(["train", "--method", kind, "--steps", "2", "--base-channels", "8", "--latent-dim", "4",
                     "--checkpoint-every", "2", "--sample-every", "1000", "--progress", "lines",
                     "--out", str(root / "runs" / kind)]) == 0
    e = Env(root, run)
    make_inputs(e)
    make_tampered_runs(e)
    (root / "new").mkdir()
    return e


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """The shared run and files (built once per module)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_env(tmp_path_factory.mktemp("bad_input"))
    torch.set_num_threads(before)


def test_the_corpus_is_large_and_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) >= 70 and len(set(ids)) == len(ids)
    assert set(NEEDLES) == set(ids)  # every case says what its one line must name


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_before_any_work(case: Case, env: Env, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    case_id, build = case
    install_sentinels(monkeypatch, deep=case_id.startswith(DEEP))
    monkeypatch.setenv("DIFFUSIONLAB_CACHE", str(env.root / "cache"))
    monkeypatch.delenv("DIFFUSIONLAB_DEBUG", raising=False)
    argv = build(env)
    watched = (env.run, env.inputs, env.outs, env.root / "runs", env.root / "new")
    before = tree_digest(*watched)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err and "WorkStarted" not in err, err
    assert NEEDLES[case_id] in err, (NEEDLES[case_id], err)
    assert tree_digest(*watched) == before, f"{argv} changed files"
    assert not (env.root / "cache").exists()


def test_the_edges_of_what_is_allowed_still_work(env: Env, tmp_path: Path) -> None:
    """The largest seed, an int where a float belongs, and --overwrite onto an existing output are accepted."""
    from diffusionlab.training.config import RunConfig, deep_update, preset_config

    cfg = RunConfig.from_dict(deep_update(preset_config("digits"), {"train": {"seed": 2**63 - 1, "lr": 1, "minutes": 2},
                                                                   "model": {"dropout": 0}}))
    assert cfg.train.seed == 2**63 - 1 and cfg.train.adam_betas == (0.9, 0.999)
    out = tmp_path / "s.npz"
    out.write_bytes(b"old")
    argv = ["sample", str(env.run), "--n", "2", "--steps", "2", "--seed", str(2**63 - 1), "--out", str(out)]
    assert main(argv) == 2 and out.read_bytes() == b"old"  # refused: the file exists
    assert main([*argv, "--overwrite"]) == 0 and out.read_bytes() != b"old"
    edit = ["edit", str(env.run), "--image", env.p("in.npy"), "--strength", "0.5", "--steps", "2", "--n", "1",
            "--out", str(out), "--overwrite"]
    assert main(edit) == 0
