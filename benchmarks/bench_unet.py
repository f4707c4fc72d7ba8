"""Benchmark: diffusionlab UNet vs diffusers UNet2DModel on CPU, at matched architecture and parameter count.

Times (a) one training step (forward + MSE + backward + AdamW step) and (b) one sampling forward pass
(eval, no_grad), interleaving the models in the same run, and reports medians and theirs/ours.

    .venv/bin/python benchmarks/bench_unet.py            # full run
    .venv/bin/python benchmarks/bench_unet.py --quick    # smoke run (a few repeats)
    .venv/bin/python benchmarks/bench_unet.py --write    # also update BENCHMARKS.md

Needs the `bench` extra (diffusers). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusionlab.models import UNet, UNetConfig, count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cpu_name, write_section  # noqa: E402

HEADING = "## UNet vs diffusers UNet2DModel"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """One benchmark setting: our config and the matching diffusers config."""

    name: str
    ours: UNetConfig
    theirs: dict
    batch: int


def cases(quick: bool) -> list[Case]:
    """The two settings of the brief: 28x28x1 (MNIST-sized) and 32x32x3 (CIFAR-sized)."""
    heads = 4
    mnist = UNetConfig(image_size=28, in_channels=1, base_channels=64, channel_mult=(1, 2, 2),
                       num_res_blocks=2, attention_resolutions=(7,), num_heads=heads)
    # diffusers: the last down block does not downsample, so 3 blocks -> 28, 14, 7 like ours.
    mnist_d = dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(64, 128, 128),
                   layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=128 // heads)
    cifar = UNetConfig(image_size=32, in_channels=3, base_channels=64, channel_mult=(1, 2, 2, 2),
                       num_res_blocks=2, attention_resolutions=(16,), num_heads=heads)
    cifar_d = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128, 128),
                   layers_per_block=2,
                   down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                   attention_head_dim=128 // heads)
    batch = 16 if quick else 32
    return [Case("28x28x1", mnist, mnist_d, batch), Case("32x32x3", cifar, cifar_d, batch)]


class DiffusersWrapper(nn.Module):
    """Gives UNet2DModel our call signature net(x, t) -> Tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Return the `.sample` field of the diffusers output."""
        return self.model(x, t).sample


def make_train_step(net: nn.Module, x: Tensor, t: Tensor, target: Tensor) -> Callable[[], None]:
    """A closure doing one forward + MSE + backward + AdamW step."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        net.train()
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(net(x, t), target)
        loss.backward()
        opt.step()

    return step


def make_sample_step(net: nn.Module, x: Tensor, t: Tensor) -> Callable[[], None]:
    """A closure doing one eval forward pass without gradients."""

    def step() -> None:
        net.eval()
        with torch.no_grad():
            net(x, t)

    return step


def timed(fn: Callable[[], None]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn, calling them round-robin so drift hits all equally."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        # Alternate the order every repeat so neither model always runs right after the other.
        order = list(fns) if i % 2 == 0 else list(reversed(list(fns)))
        for k in order:
            times[k].append(timed(fns[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def run(quick: bool, threads: int, with_cl: bool) -> tuple[list[list[str]], str]:
    """Run all cases; return the table rows and a notes string."""
    from diffusers import UNet2DModel

    torch.set_num_threads(threads)
    warmup, repeats = (1, 3) if quick else (2, 9)
    rows: list[list[str]] = []
    for case in cases(quick):
        torch.manual_seed(0)
        ours = UNet(case.ours)
        theirs = DiffusersWrapper(UNet2DModel(**case.theirs))
        n_ours, n_theirs = count_parameters(ours), count_parameters(theirs)
        h, w = case.ours.height_width
        x = torch.randn(case.batch, case.ours.in_channels, h, w)
        t = torch.randint(1, 1001, (case.batch,)).float()
        target = torch.randn_like(x)
        nets: dict[str, nn.Module] = {"ours": ours, "diffusers": theirs}
        if with_cl:
            # The same diffusers model given channels_last weights and input: what a tuned user could get.
            theirs_cl = DiffusersWrapper(UNet2DModel(**case.theirs)).to(memory_format=torch.channels_last)
            nets["diffusers+CL"] = theirs_cl
        x_for = {k: (x.contiguous(memory_format=torch.channels_last) if k.endswith("+CL") else x) for k in nets}
        train = interleaved({k: make_train_step(n, x_for[k], t, target) for k, n in nets.items()}, warmup, repeats)
        sample = interleaved({k: make_sample_step(n, x_for[k], t) for k, n in nets.items()}, warmup, repeats)
        for k in nets:
            if k == "ours":
                continue
            for what, res in (("train step", train), ("sample forward", sample)):
                rows.append([case.name, str(case.batch), what, k, f"{n_ours:,}", f"{count_parameters(nets[k]):,}",
                             f"{res['ours'] * 1e3:.1f}", f"{res[k] * 1e3:.1f}", f"{res[k] / res['ours']:.2f}x"])
        print(f"{case.name}: params ours={n_ours:,} diffusers={n_theirs:,} "
              f"({100 * (n_theirs - n_ours) / n_ours:+.2f}%)", file=sys.stderr)
    notes = f"warmup {warmup}, repeats {repeats}, threads {threads}"
    return rows, notes


def table(rows: list[list[str]]) -> str:
    """A Markdown table of the rows."""
    head = ["input", "batch", "measure", "peer", "params ours", "params peer",
            "ours median (ms)", "peer median (ms)", "peer/ours"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats, smaller batch (smoke run)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    ap.add_argument("--no-channels-last-peer", action="store_true",
                    help="skip the extra diffusers row with channels_last weights/input")
    ap.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    rows, notes = run(args.quick, args.threads, not args.no_channels_last_peer)
    notes += f"; 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    tab = table(rows)
    print(tab)
    if args.write:
        import diffusers

        cmd = "/work/main/.venv/bin/python " + " ".join(["benchmarks/bench_unet.py", *(argv or sys.argv[1:])])
        body = "\n".join([
            f"- Date: {_dt.date.today().isoformat()}",
            f"- Machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
            f"diffusers {diffusers.__version__}, Python {platform.python_version()}",
            f"- Command: `{cmd}` ({notes})",
            "- Times are medians of wall-clock per call, ours and peers interleaved in one process. "
            "`peer/ours` > 1 means ours is faster.",
            "",
            tab,
        ])
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
