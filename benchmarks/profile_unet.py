"""Where a UNet training step spends its time on CPU, and what each speed lever buys.

Two modes, both on one training step (forward + MSE + backward + AdamW step):

    .venv/bin/python benchmarks/profile_unet.py profile --model mnist [--bf16] [--contiguous]
        torch.profiler table of one model's step, grouped into conv / GroupNorm / SiLU / attention / ...
        (--peer: the same for diffusers' UNet2DModel at the same layout and parameter count)
    .venv/bin/python benchmarks/profile_unet.py levers --model mnist [--repeats 9] [--compile]
        every lever side by side, interleaved in one process (order alternated every repeat), as the median
        of per-repeat ratios baseline_time / lever_time (> 1: the lever is faster).

Models: "mnist" (the mnist recipe's network before issue 18, 32 base channels, batch 64), "mnist16" (the mnist
preset's network since, 16 base channels), "digits" (the digits preset's, batch 128),
"bench28" (bench_unet.py's 28x28 case, batch 32). Default 1 thread (--threads): on a shared 2-core
machine the 1-thread ratios are the stable ones. diffusers is used only by `profile --peer`
(bench_unet.py times the two side by side). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import types
import warnings
from collections import defaultdict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusionlab.models import UNet, UNetConfig, count_parameters
from diffusionlab.models import layers

MODELS: dict[str, tuple[dict, int]] = {
    "mnist": (dict(image_size=28, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                   attention_resolutions=(7,), num_heads=4, out_channels=2), 64),
    "mnist16": (dict(image_size=28, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
                     attention_resolutions=(7,), num_heads=4, out_channels=2), 64),
    "digits": (dict(image_size=8, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                    attention_resolutions=(), num_heads=4), 128),
    "bench28": (dict(image_size=28, base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                     attention_resolutions=(7,), num_heads=4), 32),
}
CL, CONTIG = torch.channels_last, torch.contiguous_format


def batch_for(cfg: UNetConfig, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """A fixed random (x, t, target) batch."""
    g = torch.Generator().manual_seed(0)
    h, w = cfg.height_width
    x = torch.randn(batch, cfg.in_channels, h, w, generator=g)
    t = torch.randint(1, 1001, (batch,), generator=g).float()
    return x, t, torch.randn(batch, cfg.resolved_out_channels, h, w, generator=g)


def build(cfg: UNetConfig, fmt: torch.memory_format = CL) -> UNet:
    """Our UNet with weights (and therefore activations) in memory format `fmt`."""
    torch.manual_seed(0)
    return UNet(cfg, memory_format=fmt)


def train_step(net: nn.Module, x: Tensor, t: Tensor, target: Tensor, bf16: bool = False,
               setup: Callable[[], contextlib.AbstractContextManager] | None = None) -> Callable[[], None]:
    """A closure: one forward + MSE + backward + AdamW step (optionally under CPU bf16 autocast)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()

    def step() -> None:
        with setup() if setup is not None else contextlib.nullcontext():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(x, t)
            F.mse_loss(out.float(), target).backward()
            opt.step()

    return step


# ---- variants: patches that restore the pre-optimisation behaviour, or try an alternative ----------------

def stock_group_norm(net: nn.Module) -> nn.Module:
    """Use nn.GroupNorm's stock forward (no standard-layout detour for bf16 channels_last)."""
    for m in net.modules():
        if isinstance(m, nn.GroupNorm):
            m.forward = types.MethodType(nn.GroupNorm.forward, m)
    return net


def group_norm_detour_fp32(net: nn.Module) -> nn.Module:
    """Also route float32 channels_last GroupNorm through the standard layout (measured: not faster in float32)."""

    def forward(self: nn.GroupNorm, x: Tensor) -> Tensor:
        if x.ndim == 4 and not x.is_contiguous():
            return layers._GroupNormViaStandardLayout.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    for m in net.modules():
        if isinstance(m, nn.GroupNorm):
            m.forward = types.MethodType(forward, m)
    return net


def attention_variant(net: nn.Module, mode: str) -> nn.Module:
    """mode 'sdpa_native': SDPA in the autocast dtype (bf16 under autocast); 'sdpa_fp32': SDPA in float32 (the block
    before the size-chosen kernel of 2026-12-07); 'math': explicit softmax(QK^T)V."""

    def forward(self: layers.AttentionBlock, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        heads = self.num_heads
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if mode == "sdpa_native":
            out = F.scaled_dot_product_attention(q, k, v)
        elif mode == "sdpa_fp32":
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(v.dtype)
        else:
            att = torch.softmax((q * (c // heads) ** -0.5) @ k.transpose(-1, -2), dim=-1)
            out = att.to(v.dtype) @ v
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.reshape(b, h, w, c).permute(0, 3, 1, 2)

    for m in net.modules():
        if isinstance(m, layers.AttentionBlock):
            m.forward = types.MethodType(forward, m)
    return net


def without_conv1_bias(net: nn.Module) -> nn.Module:
    """Drop each ResBlock's conv1 bias (redundant with emb_proj's bias, which is added right after it)."""
    for m in net.modules():
        if isinstance(m, layers.ResBlock):
            m.conv1.bias = None
    return net


@contextlib.contextmanager
def mkldnn_fp32_precision(value: str):
    """Let oneDNN compute float32 convs/matmuls in `value` ('bf16' = AMX bf16 with float32 accumulation)."""
    m = torch.backends.mkldnn
    before = (m.conv.fp32_precision, m.matmul.fp32_precision)
    m.conv.fp32_precision = m.matmul.fp32_precision = value
    try:
        yield
    finally:
        m.conv.fp32_precision, m.matmul.fp32_precision = before


@contextlib.contextmanager
def mkldnn_disabled():
    """Use PyTorch's own (non-oneDNN) CPU convolution kernels."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def threads(n: int):
    """A setup context that runs the step with n intra-op threads."""

    @contextlib.contextmanager
    def ctx():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return ctx


def compile_whole_step(net: nn.Module, x: Tensor, t: Tensor, target: Tensor) -> Callable[[], None]:
    """torch.compile of the whole step function (forward, loss, backward call, optimizer step)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()

    @torch.compile
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.mse_loss(net(x, t), target).backward()
        opt.step()

    return step


# ---- runners -------------------------------------------------------------------------------------------

def interleaved(fns: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, round-robin with the order reversed every repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for i in range(repeats):
        for k in keys if i % 2 == 0 else keys[::-1]:
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
    return times


def levers(model: str, repeats: int, with_compile: bool, nthreads: int) -> None:
    """Print every lever's median paired speed-up over fp32, channels_last and layers.attention."""
    kw, batch = MODELS[model]
    cfg = UNetConfig(**kw)
    x, t, tgt = batch_for(cfg, batch)
    fns: dict[str, Callable[[], None]] = {
        "baseline: fp32, channels_last, layers.attention": train_step(build(cfg), x, t, tgt),
        "fp32 contiguous": train_step(build(cfg, CONTIG), x, t, tgt),
        "fp32 GroupNorm via standard layout": train_step(group_norm_detour_fp32(build(cfg)), x, t, tgt),
        "fp32 math attention": train_step(attention_variant(build(cfg), "math"), x, t, tgt),
        "fp32 no conv1 bias": train_step(without_conv1_bias(build(cfg)), x, t, tgt),
        "fp32 oneDNN bf16 math (fp32_precision=bf16)": train_step(build(cfg), x, t, tgt,
                                                                  setup=lambda: mkldnn_fp32_precision("bf16")),
        "fp32 mkldnn disabled": train_step(build(cfg), x, t, tgt, setup=mkldnn_disabled),
        f"fp32 {2 * nthreads} threads": train_step(build(cfg), x, t, tgt, setup=threads(2 * nthreads)),
        "bf16 autocast, before (stock GN, bf16 SDPA), CL": train_step(
            attention_variant(stock_group_norm(build(cfg)), "sdpa_native"), x, t, tgt, bf16=True),
        "bf16 autocast, before, contiguous": train_step(
            attention_variant(stock_group_norm(build(cfg, CONTIG)), "sdpa_native"), x, t, tgt, bf16=True),
        "bf16 autocast, GN detour + fp32 SDPA (before 2026-12-07), CL": train_step(
            attention_variant(build(cfg), "sdpa_fp32"), x, t, tgt, bf16=True),
        "bf16 autocast, fp32 SDPA (before 2026-12-07), contiguous": train_step(
            attention_variant(build(cfg, CONTIG), "sdpa_fp32"), x, t, tgt, bf16=True),
        "bf16 autocast, now (GN detour + layers.attention), CL": train_step(build(cfg), x, t, tgt, bf16=True),
        "bf16 autocast, now, contiguous": train_step(build(cfg, CONTIG), x, t, tgt, bf16=True),
    }
    if with_compile:
        for name, bf16 in (("compile (net.compile()) fp32", False), ("compile (net.compile()) bf16", True)):
            net = build(cfg)
            net.compile()
            fn = train_step(net, x, t, tgt, bf16=bf16)
            start = time.perf_counter()
            fn()
            print(f"{name}: first step (includes compilation) {time.perf_counter() - start:.1f} s", flush=True)
            fns[name] = fn
        fn = compile_whole_step(build(cfg), x, t, tgt)
        start = time.perf_counter()
        try:
            fn()
            print(f"compile whole step fp32: first step {time.perf_counter() - start:.1f} s", flush=True)
            fns["compile whole step fp32"] = fn
        except Exception as e:  # report, do not abort the other levers
            print(f"compile whole step fp32 failed: {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)
    print(f"{model}: {count_parameters(build(cfg)):,} parameters, batch {batch}, {nthreads} thread(s), "
          f"{repeats} interleaved repeats", flush=True)
    times = interleaved(fns, 2, repeats)
    base = times["baseline: fp32, channels_last, layers.attention"]
    print("| lever | median ms | speed-up vs baseline (median of paired ratios) |\n|---|---|---|")
    for k, v in times.items():
        ratio = statistics.median(b / s for b, s in zip(base, v))
        print(f"| {k} | {statistics.median(v) * 1e3:.1f} | {ratio:.2f}x |")


CATEGORIES = [
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "_convolution", "thnn_conv", "slow_conv")),
    ("GroupNorm", ("native_group_norm",)),  # forward and backward
    ("SiLU", ("silu",)),
    ("attention (SDPA/bmm/softmax)", ("scaled_dot_product", "flash_attention", "bmm", "softmax")),
    ("layout/dtype copies", ("copy_", "clone", "contiguous", "_to_copy")),
    ("optimizer (AdamW) + zero_grad", ("Optimizer",)),
    ("linear (mm/addmm)", ("addmm", "aten::mm", "linear")),
    ("elementwise add/mul, cat, upsample, AdamW's per-tensor ops", ("add", "mul", "cat", "upsample", "sum", "fill_",
                                                                     "lerp", "div", "sqrt")),
]


def diffusers_peer(cfg: UNetConfig, fmt: torch.memory_format) -> nn.Module:
    """diffusers' UNet2DModel in the same layout and parameter count as our config (bench_unet.py's mapping)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_unet import DiffusersWrapper, diffusers_config
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return DiffusersWrapper(UNet2DModel(**diffusers_config(cfg))).to(memory_format=fmt)


def profile(model: str, bf16: bool, contiguous: bool, steps: int, peer: bool = False) -> None:
    """Self-time of one step by category (torch.profiler, after two warm-up steps)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    kw, batch = MODELS[model]
    cfg = UNetConfig(**kw)
    x, t, tgt = batch_for(cfg, batch)
    fmt = CONTIG if contiguous else CL
    net = diffusers_peer(cfg, fmt) if peer else build(cfg, fmt)
    step = train_step(net, x, t, tgt, bf16=bf16)
    for _ in range(2):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if not e.key.startswith(("autograd::", "Optimizer.zero_grad"))]
    total = sum(e.self_cpu_time_total for e in events)
    by_cat: dict[str, float] = defaultdict(float)
    for e in events:
        name = e.key
        cat = "optimizer (AdamW) + zero_grad" if name.startswith("Optimizer") else next(
            (c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        by_cat[cat] += e.self_cpu_time_total
    layout = "contiguous" if contiguous else "channels_last"
    what = f"{'diffusers UNet2DModel' if peer else 'ours'}: {model}, batch {batch}, {'bf16 autocast' if bf16 else 'fp32'}, {layout}"
    print(f"{what}: {total / 1e3 / steps:.0f} ms of op self-time per step")
    for cat, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"  {cat:40s} {100 * us / total:5.1f}%")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["levers", "profile"])
    ap.add_argument("--model", choices=list(MODELS), default="mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9, help="levers: interleaved repeats")
    ap.add_argument("--compile", action="store_true", help="levers: also torch.compile (slow: minutes of compilation)")
    ap.add_argument("--bf16", action="store_true", help="profile: under CPU bf16 autocast")
    ap.add_argument("--contiguous", action="store_true", help="profile: standard layout instead of channels_last")
    ap.add_argument("--steps", type=int, default=3, help="profile: profiled steps")
    ap.add_argument("--peer", action="store_true", help="profile: diffusers' UNet2DModel of the same layout instead")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.mode == "levers":
        levers(args.model, args.repeats, args.compile, args.threads)
    else:
        profile(args.model, args.bf16, args.contiguous, args.steps, args.peer)


if __name__ == "__main__":
    main()
