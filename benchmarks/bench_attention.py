"""Attention kernels by size on CPU: the explicit softmax(QK^T / sqrt(d)) V against PyTorch's fused (flash) kernel.

    python benchmarks/bench_attention.py [--threads 2] [--repeats 9] [--write]

For each sequence length L and head dim d (4 heads; batch 64 up to 256 tokens, 8 at 1024): one training call
(forward and backward of the kernel alone) and one inference call (no_grad), both kernels interleaved, float32.
Then the fused kernel in bf16 against float32 (what `layers.attention` chooses between under bf16 autocast). The
rules `EXPLICIT_ATTENTION_MAX_PAIRS` and `FLOAT32_ATTENTION_MAX_PAIRS` of `diffusionlab.models.layers` come from
this table. Medians of paired ratios
(> 1: the explicit kernel, or float32, is faster). One section per CPU kind (report.on_this_cpu).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import interleaved  # noqa: E402
from report import dated_cpu_line, on_this_cpu, publish  # noqa: E402

from diffusionlab.models.layers import EXPLICIT_ATTENTION_MAX_PAIRS, FLOAT32_ATTENTION_MAX_PAIRS  # noqa: E402

HEADING = "## Attention kernels by size (issue 18)"
LENGTHS = (16, 49, 64, 196, 256, 1024)
HEAD_DIMS = (8, 16, 32, 64)


def explicit(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(Q K^T / sqrt(d)) V, materialising the (L, L) matrix."""
    return torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1) @ v


def fused(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PyTorch's fused kernel (flash attention on CPU)."""
    return F.scaled_dot_product_attention(q, k, v)


def calls(kernel: Callable[..., Tensor], q: Tensor, k: Tensor, v: Tensor, grad: Tensor) -> tuple[Callable, Callable]:
    """(one training call: forward + backward, one inference call) of a kernel on fixed inputs."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]

    def train() -> None:
        kernel(*leaves).backward(grad)

    def infer() -> None:
        with torch.no_grad():
            kernel(q, k, v)

    return train, infer


def ratio(slow: list[float], fast: list[float]) -> float:
    """Median over repeats of slow / fast."""
    return statistics.median(s / f for s, f in zip(slow, fast))


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for length in LENGTHS:
        for d in HEAD_DIMS:
            batch = 64 if length <= 256 else 8
            g = torch.Generator().manual_seed(0)
            q, k, v, grad = (torch.randn(batch, 4, length, d, generator=g) for _ in range(4))
            fns = {}
            for name, kernel, dtype in (("explicit", explicit, torch.float32), ("fused", fused, torch.float32),
                                        ("fused bf16", fused, torch.bfloat16)):
                train, infer = calls(kernel, *(t.to(dtype) for t in (q, k, v, grad)))
                fns[f"{name} train"], fns[f"{name} infer"] = train, infer
            times = interleaved(fns, 1, args.repeats)
            med = {key: statistics.median(t) * 1e3 for key, t in times.items()}
            chosen = "explicit" if length * length <= EXPLICIT_ATTENTION_MAX_PAIRS else "fused"
            chosen += ", bf16 in float32" if length * length <= FLOAT32_ATTENTION_MAX_PAIRS else ", bf16 in bf16"
            rows.append(f"| {length} | {d} | {batch} | {med['fused train']:.2f} | {med['explicit train']:.2f} | "
                        f"{ratio(times['fused train'], times['explicit train']):.2f}x | {med['fused infer']:.2f} | "
                        f"{med['explicit infer']:.2f} | {ratio(times['fused infer'], times['explicit infer']):.2f}x | "
                        f"{ratio(times['fused bf16 train'], times['fused train']):.2f}x | "
                        f"{ratio(times['fused bf16 infer'], times['fused infer']):.2f}x | {chosen} |")
            print(rows[-1], file=sys.stderr, flush=True)
    body = "\n".join([
        dated_cpu_line(),
        f"- Command: `python benchmarks/bench_attention.py --threads {args.threads} --repeats {args.repeats}"
        f"{' --write' if args.write else ''}` (4 heads; ms per call, medians of {args.repeats} interleaved repeats; "
        "`train` = forward + backward of the kernel alone; ratios are medians of paired ratios, > 1: the explicit "
        "kernel, or float32, is faster)",
        f"- `layers.attention` takes the explicit kernel up to {EXPLICIT_ATTENTION_MAX_PAIRS} query-key pairs per "
        "head (64 tokens), the fused one above; under bf16 autocast it computes in float32 up to "
        f"{FLOAT32_ATTENTION_MAX_PAIRS} pairs (256 tokens), in bf16 above (the two bf16/fp32 columns).",
        "",
        "| tokens | head dim | batch | fused train | explicit train | fused/explicit | fused infer | explicit infer "
        "| fused/explicit | fused bf16/fp32 train | fused bf16/fp32 infer | our choice |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    publish(on_this_cpu(HEADING), body, args.write)


if __name__ == "__main__":
    main()
