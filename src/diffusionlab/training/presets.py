"""The named presets: starting points chosen by measurement (README.md "Presets", BENCHMARKS.md).

A preset is a partial config (the layout of config.json) merged over the defaults by `config.preset_config`;
every field can be overridden from a JSON file (`--config`) or the command line.
"""

from __future__ import annotations

from typing import Any

# Presets. Numbers are chosen by measurement on the 2-core CI machine (BENCHMARKS.md, "Presets").
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        # Measured (BENCHMARKS.md "Presets"): samples recognised as all ten digits from step 500; the judge's
        # recognised fraction plateaus (95%; real digits 96%) by step 2000; 2000 steps fit the 5-minute budget on 2 cores.
        "data": {"source": "digits", "split": "all"},
        "model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
                  "dropout": 0.0, "num_heads": 4},
        "process": {"method": "ddpm", "schedule": "cosine", "T": 1000, "prediction": "eps"},
        # float32, not auto: on 8x8 images the convolutions are too small for bf16 to pay; measured with 2 threads on
        # an avx512_bf16 CPU, 300 steps ran at ~11 it/s in float32 and ~10 in bf16 (issue 18).
        "train": {"batch_size": 128, "steps": 2000, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.999,
                  "sample_every": 500, "checkpoint_every": 500, "log_every": 50, "mixed_precision": "no"},
        "sample": {"sampler": "ddim", "steps": 50, "n": 100},
    },
}

# The mnist recipe at 32 base channels, 3,000 steps and DDIM-50: the presets derived from it below (folder32, the
# upsamplers, mnist14 and the families) were measured with this network and keep it.
_MNIST_32: dict[str, Any] = {
    # A CPU recipe: 1.1M-parameter UNet, measured at ~0.4 s/step (batch 64, 2 cores); 3000 steps ~ 20 min.
    "data": {"source": "mnist", "split": "train"},
    "model": {"base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attention_resolutions": [7],
              "dropout": 0.0, "num_heads": 4},
    # Improved DDPM (Nichol & Dhariwal 2021): learned variance with the hybrid loss, so strided
    # ancestral sampling works with few steps and the NLL bound is tighter (BENCHMARKS.md, "Table 2").
    # v prediction (Salimans & Ho 2022), not eps: at 1500 steps the eps-model's x0_hat = x~ - sigma~ eps_hat is
    # wrong at high noise (MSE 1.35 at sigma~ = 100 against 0.26), which ruins the deterministic samplers: FID at
    # 10 NFE (DPM-Solver++) 24 with v against 476 with eps (BENCHMARKS.md, "Preset: mnist, eps against v").
    # Min-SNR-5 weighting (Hang et al. 2023), chosen by measurement (BENCHMARKS.md, "The mnist recipe at an equal
    # budget", issue 18): at 20 minutes on 2 cores with avx512_bf16, this recipe in bf16 (what auto picks there)
    # reached FID 6.97 with DDIM-50 against 13.38 for the float32 preset without it (2,000 samples); at 5 minutes
    # and equal precision it lowered FID from 22.3 to 18.7. On an AVX2-only CPU (float32 from auto, 20 minutes,
    # ~1,450 steps either way) it alone lowered FID with DDIM-50 from 18.55 to 13.95.
    "process": {"method": "ddpm", "schedule": "cosine", "T": 1000, "prediction": "v", "variance": "learned",
                "loss": "hybrid", "weighting": "min_snr"},
    "train": {"batch_size": 64, "steps": 3000, "lr": 1e-3, "warmup_steps": 200, "ema_decay": 0.999,
              "sample_every": 1000, "checkpoint_every": 500, "log_every": 50},
    "sample": {"sampler": "ddim", "steps": 50, "n": 100},
}
# The mnist preset (issue 18): the recipe above at 16 base channels (0.28M parameters; a step costs 0.36x on AVX2 in
# float32, 0.49x in bf16) and 7,000 steps (about 20 minutes in bf16 on 2 cores with avx512_bf16). Chosen by
# measurement at an equal 20-minute budget (BENCHMARKS.md, "The mnist recipe at an equal budget: narrow networks
# with native bf16" and "...: an AVX2-only CPU"; 2,000 samples, domain extractor, floor 0.77-0.84), FID with
# DPM-Solver++(2M) at 10 steps / DDIM-50:
# - bf16 (avx512_bf16): 5.88 / 7.87 in 7,083 steps, against 9.35 / 7.07 at 32 channels (3,511 steps), 8.45 / 7.45
#   at 24 (4,620 steps) and 10.72 / 15.27 for the float32 preset before issue 18 (1,953 steps); with DPM-Solver++ at
#   20 steps 16 and 32 channels are level (6.86 / 6.84);
# - float32 on AVX2 (2 processes from --procs auto): 8.70 / 10.15 and 9.91 / 13.53 for training seeds 0 and 1,
#   against 10.11 / 12.70 at 32 channels.
# The narrower network gains with the 10-step solver on both CPU kinds and is level with DDIM-50 within the seed noise
# (1-2 FID). The grids keep DDIM-50, the DDPM family's default sampler; `sample`, `evaluate`, the API and the
# playground draw with the recommended DPM-Solver++(2M) at 10 steps unless asked for another sampler (10 NFE
# against 50, and 5.88 against 7.87 above).
PRESETS["mnist"] = {
    **_MNIST_32,
    "model": {**_MNIST_32["model"], "base_channels": 16},
    "train": {**_MNIST_32["train"], "steps": 7000},
    "sample": {**_MNIST_32["sample"], "recommended_sampler": "dpmpp2m", "recommended_steps": 10},
}

# A user's own folder of RGB images at 32x32 (train --preset folder32 --data-dir DIR): the mnist recipe with four
# levels at 32, 16, 8 and 4 (attention at 8) and random horizontal flips (DDPM's CIFAR-10 augmentation). Measured
# (BENCHMARKS.md, "The folder32 preset"; 2,000 real 32x32 photo crops, 2 cores with avx512_bf16): the digits preset,
# today's default, trains such a folder at 0.69 it/s (batch 128, float32); this recipe at 2.31 it/s (batch 64, bf16),
# faster than the same network with three levels (2.12 it/s: its middle block and attention then run at 8x8) and better
# at an equal 5 minutes (bound 4.96 against 5.02 bits/dim); 64 base channels ran at 0.91 it/s, 2 blocks per level 1.51.
PRESETS["folder32"] = {
    **_MNIST_32,
    "data": {"source": "folder", "split": "all", "image_size": 32, "channels": 3, "hflip": True},
    "model": {**_MNIST_32["model"], "channel_mult": [1, 2, 2, 2], "attention_resolutions": [8]},
    "sample": {**_MNIST_32["sample"], "n": 64},
}

# The image shape (C, H, W) each data preset's network and budget were sized for; training warns when the data is
# much larger (the digits preset on a 32x32 RGB folder ran at 0.2 it/s without a word).
SIZED_FOR: dict[str, tuple[int, int, int]] = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "folder32": (3, 32, 32)}


def size_warning(preset: str | None, shape: tuple[int, int, int]) -> str | None:
    """A warning when the data has 4x or more the values per image that `preset` (or its base preset) was sized for."""
    base = next((name for name in sorted(SIZED_FOR, key=len, reverse=True)
                 if preset == name or (preset or "").startswith(name + "-")), None)
    if base is None:
        return None
    c, h, w = SIZED_FOR[base]
    ratio = shape[0] * shape[1] * shape[2] / (c * h * w)
    if ratio < 4:
        return None
    fits = "--preset folder32" if shape[0] == 3 and max(shape[1:]) <= 48 else "a preset sized for them"
    return (f"preset {preset} is sized for {c}x{h}x{w} images; these are {'x'.join(map(str, shape))} ({ratio:.0f}x "
            f"the values per image), so each step is slower and the step budget means less: use {fits}, or "
            f"--image-size to train smaller")


def warn_if_oversized(preset: str | None, shape: tuple[int, int, int], main: bool = True) -> None:
    """Print `size_warning` (once, on the main process) before training starts."""
    text = size_warning(preset, shape)
    if text and main:
        import sys

        print(f"warning: {text}", file=sys.stderr, flush=True)


# One preset per model family and data set: the digits / mnist recipe (network, optimiser, budget) with the
# family's process. NOT tuned by measurement like `digits` and `mnist`: starting points for comparisons at an
# equal training budget. The training-time grids use DDIM on the path (sampling.path_schedule).
FAMILY_PROCESSES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {"flow": {}, "vpsde": {}, "vesde": {"sigma_max": 10.0}, "ncsn": {"sigma_max": 10.0, "num_levels": 22}},
    "mnist": {"flow": {}, "vpsde": {}, "vesde": {}, "ncsn": {}},
}
_FAMILY_RECIPES = {"digits": PRESETS["digits"], "mnist": _MNIST_32}  # the recipes the families were measured with
for _data, _families in FAMILY_PROCESSES.items():
    for _method, _settings in _families.items():
        PRESETS[f"{_data}-{_method}"] = {**_FAMILY_RECIPES[_data], "process": {"method": _method, **_settings}}




# Latent diffusion (Rombach et al. 2022): the same families on an autoencoder's latents. These presets need
# `--latent AE_RUN` (an autoencoder run: `train-autoencoder --preset digits-ae|mnist-ae`); `train --preset digits` or
# `mnist` with `--latent` uses them. The network is sized for the latents (8x8x4 for mnist-ae, 4x4x2 for digits-ae).
# L_vlb's last term is a decoder over 256 pixel bins, which means nothing for latents: loss simple, fixed variance.
PRESETS["mnist-ldm"] = {
    # Chosen by measurement (BENCHMARKS.md, "Latent diffusion against pixel diffusion"): on mnist-ae's 4x8x8 latents a
    # UNet of the pixel preset's width with 1 block per level runs 8.3x more steps per second than the pixel preset
    # (26 against 3.0 it/s; base 64 with 2 blocks: 7.8 it/s). lr 2e-3 reached FID 10.4 at 5,500 steps (lr 1e-3:
    # 12.7; batch 128 with lr 2e-3 or 3e-3: 11.1 and 11.4 in the same wall time).
    "data": {"source": "mnist", "split": "train"},
    "model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4],
              "dropout": 0.0, "num_heads": 4},
    "process": {"method": "ddpm", "schedule": "cosine", "T": 1000, "prediction": "v"},
    "codec": {"kind": "autoencoder"},
    "train": {"batch_size": 64, "steps": 6000, "lr": 2e-3, "warmup_steps": 200, "ema_decay": 0.999,
              "sample_every": 1000, "checkpoint_every": 500, "log_every": 50},
    "sample": {"sampler": "ddim", "steps": 50, "n": 100},
}
PRESETS["digits-ldm"] = {
    # Measured (BENCHMARKS.md, "Latent diffusion: findings"): on digits-ae's 2x4x4 latents the independent judge
    # recognises 95% / 96% / 97% / 98% of 200 DDIM-50 samples at steps 500 / 1000 / 1500 / 2000, 10/10 classes
    # from step 500 (the pixel `digits` preset: 82% at 500, 95% at 2000; real held-out digits: 96%). 1000 steps.
    "data": {"source": "digits", "split": "all"},
    "model": {"base_channels": 64, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [2],
              "dropout": 0.0, "num_heads": 4},
    "process": {"method": "ddpm", "schedule": "cosine", "T": 1000, "prediction": "v"},
    "codec": {"kind": "autoencoder"},
    "train": {"batch_size": 128, "steps": 1000, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.999,
              "sample_every": 500, "checkpoint_every": 500, "log_every": 50},
    "sample": {"sampler": "ddim", "steps": 50, "n": 100},
}
# Text-to-image (issue 15): the data's captions through a text encoder trained with the model (GLIDE), cross-attention
# in the middle block (and at attention_resolutions), captions dropped to the empty one at label_dropout = 0.1 for
# classifier-free guidance. Split train: the test captions stay held out for `evaluate` and bench_text.py.
PRESETS["digits-text"] = {
    # Measured (BENCHMARKS.md, "Text-to-image: findings"): 2,000 steps (4.6 min on 2 cores) draw the asked digit for
    # 99% of the 297 held-out test captions at S = 1 and 100% at S = 2-5, and follow thick/thin/slant words in
    # 87-100% at S = 2 (FID 8.7 with the domain extractor; 5.7 at S = 1). The frozen MiniLM encoder (--text-encoder
    # minilm) scores the same (99% / 100%, FID 10.8 against 10.7 at S = 3) in 3.9 min instead of 4.6, but needs
    # the [text] extra: the joint encoder stays the default.
    **PRESETS["digits"],
    "data": {"source": "digits-text", "split": "train"},
    "train": {**PRESETS["digits"]["train"], "text_conditional": True},
}
PRESETS["mnist-text"] = {
    # Chosen by measurement (BENCHMARKS.md, "Text-to-image: findings"): at an equal 12-minute budget on MNIST's
    # captions, this latent recipe (mnist-ae's 4x8x8 latents, 7,805 steps) drew the asked digit for 100% of 300
    # held-out test captions at S = 3 with FID 15.1, and sampled 7.7x faster; the pixel `mnist` recipe (1,259
    # steps) also reached 100% but with FID 18.1. Needs `--latent AE_RUN` (train-autoencoder --preset mnist-ae).
    **PRESETS["mnist-ldm"],
    "data": {"source": "mnist-text", "split": "train"},
    "train": {**PRESETS["mnist-ldm"]["train"], "steps": 8000, "text_conditional": True},
}
# Super-resolution and cascades (issue 16; SR3, Saharia et al. 2021; CDM, Ho et al. 2022): the upsampler is the
# mnist recipe on 28x28 images, its network also given the low-resolution image (models/lowres.py); training degrades
# each image on the fly and augments the condition at s ~ U[0, 0.2] (CDM's Gaussian conditioning augmentation).
# Measured (BENCHMARKS.md, "Super-resolution and cascades"): after 10 min, x2 restores the MNIST test digits at PSNR
# 28.2 dB, SSIM 0.936, FID 3.8 (bicubic: 20.2 dB, 0.844, 195); x4 at 20.8 dB, 0.845, FID 5.4 (bicubic: 14.7 dB,
# 0.412, 508). In the cascade mnist14 -> mnist-sr2, sampling at aug level 0.1 gave FID 21.2 against 26.5 at 0 and
# 22.4 at 0.2, so 0.1 is the sampling default. mnist14 is a cascade's base: the mnist recipe on 14x14 images
# (resized as superres.degrade resizes, so the base draws what the x2 upsampler was trained to take).
_SUPERRES = {"kind": "superres", "aug_max": 0.2, "aug_level": 0.1}
# These were measured before the mnist recipe took Min-SNR weighting (issue 18), so they keep the unweighted loss.
_MNIST_MEASURED = {**_MNIST_32, "process": {**_MNIST_32["process"], "weighting": "none"}}
PRESETS["mnist-sr2"] = {**_MNIST_MEASURED, "task": {**_SUPERRES, "factor": 2}}
PRESETS["mnist-sr4"] = {**_MNIST_MEASURED, "task": {**_SUPERRES, "factor": 4}}
PRESETS["mnist14"] = {**_MNIST_MEASURED, "data": {"source": "mnist", "split": "train", "image_size": 14},
                      "model": {**_MNIST_32["model"], "channel_mult": [1, 2], "attention_resolutions": [7]}}
PRESETS["mnist-sr2-ldm"] = {**PRESETS["mnist-ldm"], "task": {**_SUPERRES, "factor": 2}}
PRESETS["digits-sr"] = {**PRESETS["digits"], "data": {"source": "digits", "split": "train"},
                        "task": {**_SUPERRES, "factor": 2}}

# The preset `--latent` switches a pixel preset to.
LATENT_PRESETS = {"digits": "digits-ldm", "mnist": "mnist-ldm", "mnist-sr2": "mnist-sr2-ldm"}

# KL autoencoders (`train-autoencoder`; Rombach et al. 2022, appendix G), the first stage of the -ldm presets.
# Adam with betas (0.5, 0.9) and no gradient clipping, as LDM trains its first stage: the loss sums L1 over pixels.
AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "mnist-ae": {
        # f = 4 on MNIST padded to 32x32: latents 4 x 8 x 8 (256 numbers for 784 pixels). Measured at 3,000 steps
        # (17.5 min, 3.1 it/s): PSNR 32.1 dB and rFID 0.14 against a floor of 0.18 on the 10,000 test images, so the
        # first stage costs the latent models no FID (BENCHMARKS.md, "Latent diffusion against pixel diffusion").
        "data": {"source": "mnist", "split": "train"},
        "model": {"base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "latent_channels": 4,
                  "attention": True, "pad_to": 32},
        "loss": {"kl_weight": 1e-6, "perceptual_weight": 0.0, "disc_start": None},
        "train": {"batch_size": 64, "steps": 3000, "lr": 1e-3, "adam_betas": [0.5, 0.9], "grad_clip": 0.0,
                  "warmup_steps": 100, "ema_decay": 0.999, "sample_every": 1000, "checkpoint_every": 500,
                  "log_every": 50},
    },
    "digits-ae": {
        # f = 2 on the 8x8 digits: latents 2 x 4 x 4 (32 numbers for 64 pixels). Measured at 2,000 steps (2.3 min):
        # PSNR 39.6 dB on the 297 test digits (which split "all" trains on).
        "data": {"source": "digits", "split": "all"},
        "model": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "latent_channels": 2,
                  "attention": True},
        "loss": {"kl_weight": 1e-6, "perceptual_weight": 0.0, "disc_start": None, "disc_layers": 1},
        "train": {"batch_size": 128, "steps": 2000, "lr": 2e-3, "adam_betas": [0.5, 0.9], "grad_clip": 0.0,
                  "warmup_steps": 100, "ema_decay": 0.999, "sample_every": 500, "checkpoint_every": 500,
                  "log_every": 50},
    },
}


# The models diffusion is compared against (docs/maths.md section 9; `train --method gan|vae|nf`, baselines/): one recipe
# per family and data set, with each paper's optimiser (DCGAN: Adam lr 2e-4, betas (0.5, 0.999), no clipping; the
# VAE and Glow: Adam 1e-3). Starting points for the comparison at an equal wall-clock budget (BENCHMARKS.md,
# "The families side by side"), not tuned beyond it. The budget is the digits / mnist diffusion presets' order.
_LOOP = {"warmup_steps": 100, "ema_decay": 0.999, "sample_every": 1000, "checkpoint_every": 500, "log_every": 50}
_GAN_TRAIN = {**_LOOP, "lr": 2e-4, "adam_betas": [0.5, 0.999], "grad_clip": 0.0, "warmup_steps": 0}
BASELINE_PRESETS: dict[str, dict[str, Any]] = {
    "digits-gan": {"kind": "gan", "data": {"source": "digits", "split": "all"},
                   "model": {"base_channels": 64, "channel_mult": [1, 2], "latent_dim": 32},
                   "train": {**_GAN_TRAIN, "batch_size": 128, "steps": 3000}},
    "digits-vae": {"kind": "vae", "data": {"source": "digits", "split": "all"},
                   "model": {"base_channels": 32, "channel_mult": [1, 2], "latent_dim": 16, "likelihood": "logistic"},
                   "train": {**_LOOP, "batch_size": 128, "steps": 3000, "lr": 1e-3}},
    "digits-nf": {"kind": "nf", "data": {"source": "digits", "split": "all"},
                  "model": {"levels": 2, "depth": 8, "hidden_channels": 64},
                  "train": {**_LOOP, "batch_size": 128, "steps": 3000, "lr": 1e-3}},
    "mnist-gan": {"kind": "gan", "data": {"source": "mnist", "split": "train"},
                  "model": {"base_channels": 64, "channel_mult": [1, 2], "latent_dim": 64},
                  "train": {**_GAN_TRAIN, "batch_size": 64, "steps": 6000}},
    "mnist-vae": {"kind": "vae", "data": {"source": "mnist", "split": "train"},
                  "model": {"base_channels": 32, "channel_mult": [1, 2], "latent_dim": 32, "likelihood": "logistic"},
                  "train": {**_LOOP, "batch_size": 128, "steps": 6000, "lr": 1e-3}},
    "mnist-nf": {"kind": "nf", "data": {"source": "mnist", "split": "train"},
                 "model": {"levels": 2, "depth": 8, "hidden_channels": 64},
                 "train": {**_LOOP, "batch_size": 64, "steps": 6000, "lr": 1e-3}},
}
