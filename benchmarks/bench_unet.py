"""Benchmark: diffusionlab UNet vs diffusers UNet2DModel on CPU, at matched architecture and parameter count.

Times (a) one training step (forward + MSE + backward + AdamW step) and (b) one sampling forward pass
(eval, no_grad), in float32 and under CPU bf16 autocast (`torch.autocast("cpu", torch.bfloat16)`, what the
trainer's `mixed_precision="bf16"` runs), interleaving all models of a case in one process. diffusers runs with its
default SDPA attention and with its classic `AttnProcessor` (its faster setting in bf16 on CPU), and both sides
step the trainer's fused AdamW. Reports
median ms, images/s and the median over repeats of the paired ratio peer_time / ours_time (> 1: ours faster).

    .venv/bin/python benchmarks/bench_unet.py                  # full run, 1 thread
    .venv/bin/python benchmarks/bench_unet.py --quick          # smoke run (smaller batch, 3 repeats)
    .venv/bin/python benchmarks/bench_unet.py --threads 2      # torch.set_num_threads(2)
    .venv/bin/python benchmarks/bench_unet.py --write          # also update BENCHMARKS.md

--write replaces only the generated block of this thread count (between `<!-- bench_unet.py ... -->`
markers) inside the "UNet vs diffusers UNet2DModel" section; everything else in the section (the
hand-written findings, profile, other thread counts) is kept. Where a lever comes from:
benchmarks/profile_unet.py. Needs the `bench` extra (diffusers). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import datetime as _dt
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusionlab.models import UNet, UNetConfig, count_parameters
from diffusionlab.models.unet import preferred_memory_format

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import cpu_name, on_this_cpu, write_section  # noqa: E402

HEADING = "## UNet vs diffusers UNet2DModel"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """One benchmark setting: our config (the diffusers config is derived from it) and the batch size."""

    name: str
    ours: UNetConfig
    batch: int


# The mnist recipe's network at the 32 base channels it had before issue 18 (training/presets.py `_MNIST_32`;
# out_channels 2: learned variance), and the preset's network since: the same at 16 base channels.
MNIST_32 = UNetConfig(image_size=28, in_channels=1, out_channels=2, base_channels=32, channel_mult=(1, 2, 2),
                          num_res_blocks=1, attention_resolutions=(7,), num_heads=4)
MNIST_PRESET = replace(MNIST_32, base_channels=16)


def training_inputs(cfg: UNetConfig, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded batch for timing a training step of `cfg`: x, integer-valued t in [1, 1000], and the target."""
    torch.manual_seed(0)
    h, w = cfg.height_width
    return (torch.randn(batch, cfg.in_channels, h, w), torch.randint(1, 1001, (batch,)).float(),
            torch.randn(batch, cfg.resolved_out_channels, h, w))


def cases(quick: bool) -> list[Case]:
    """The mnist preset's network (16 and 32 base channels), and the 28x28x1 and 32x32x3 DDPM-layout networks of the
    brief."""
    mnist = UNetConfig(image_size=28, in_channels=1, base_channels=64, channel_mult=(1, 2, 2),
                       num_res_blocks=2, attention_resolutions=(7,), num_heads=4)
    cifar = UNetConfig(image_size=32, in_channels=3, base_channels=64, channel_mult=(1, 2, 2, 2),
                       num_res_blocks=2, attention_resolutions=(16,), num_heads=4)
    half = 2 if quick else 1
    return [Case("28x28x1 (mnist preset, 16 ch)", MNIST_PRESET, 64 // half),
            Case("28x28x1 (mnist recipe, 32 ch)", MNIST_32, 64 // half), Case("28x28x1", mnist, 32 // half),
            Case("32x32x3", cifar, 32 // half)]


def diffusers_config(c: UNetConfig) -> dict:
    """UNet2DModel kwargs for the same DDPM/iDDPM layout as our config (identical parameter count).

    diffusers' last down block does not downsample, so len(channel_mult) blocks give the same resolutions;
    a level gets Attn*Block2D where our config has attention; the mid block always has attention, as ours.
    """
    sizes = c.level_sizes
    attn = [s in c.attention_resolutions for s in sizes]
    heads_dim = {c.base_channels * m // c.num_heads for m, a in zip(c.channel_mult, attn) if a}
    heads_dim.add(c.base_channels * c.channel_mult[-1] // c.num_heads)
    if len(heads_dim) != 1:
        raise ValueError("diffusers' attention_head_dim is one number; use equal widths at attention levels")
    return dict(sample_size=c.height_width, in_channels=c.in_channels, out_channels=c.resolved_out_channels,
                block_out_channels=tuple(c.base_channels * m for m in c.channel_mult),
                layers_per_block=c.num_res_blocks, norm_num_groups=math.gcd(c.groups, c.base_channels),
                down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
                up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
                attention_head_dim=heads_dim.pop())


class DiffusersWrapper(nn.Module):
    """Gives UNet2DModel our call signature net(x, t) -> Tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Return the `.sample` field of the diffusers output."""
        return self.model(x, t).sample


def classic_attention(model: nn.Module) -> nn.Module:
    """Give every diffusers attention layer the classic `AttnProcessor` instead of its default SDPA processor."""
    from diffusers.models.attention_processor import AttnProcessor

    for m in model.modules():
        if hasattr(m, "set_processor"):
            m.set_processor(AttnProcessor())
    return model


def make_train_step(net: nn.Module, x: Tensor, t: Tensor, target: Tensor, bf16: bool) -> Callable[[], None]:
    """A closure doing one forward + MSE + backward + AdamW step (under CPU bf16 autocast if bf16)."""
    # The trainer's optimizer (training/diffusion.py: fused AdamW) on both sides.
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        net.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x, t)
        loss = F.mse_loss(out.float(), target)
        loss.backward()
        opt.step()

    return step


def make_sample_step(net: nn.Module, x: Tensor, t: Tensor, bf16: bool) -> Callable[[], None]:
    """A closure doing one eval forward pass without gradients."""

    def step() -> None:
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x, t)

    return step


def timed(fn: Callable[[], None]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, calling them round-robin so drift hits all equally."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        # Alternate the order every repeat so no model always runs right after another.
        order = list(fns) if i % 2 == 0 else list(reversed(list(fns)))
        for k in order:
            times[k].append(timed(fns[k]))
    return times


def paired_ratio(peer: list[float], ours: list[float]) -> float:
    """Median over repeats of peer_time / ours_time (the two ran next to each other in each repeat)."""
    return statistics.median(p / o for p, o in zip(peer, ours))


def run(quick: bool, threads: int, precisions: list[str], with_cl: bool) -> tuple[list[list[str]], list[str], str]:
    """Run all cases; return the table rows, the best-vs-best summary lines and a notes string."""
    from diffusers import UNet2DModel

    torch.set_num_threads(threads)
    warmup, repeats = (1, 3) if quick else (2, 9)
    rows: list[list[str]] = []
    summary: list[str] = []
    for case in cases(quick):
        x, t, target = training_inputs(case.ours, case.batch)
        theirs_cfg = diffusers_config(case.ours)
        # name -> (net, input, bf16); one fresh model per variant (each has its own optimizer state).
        variants: dict[str, tuple[nn.Module, Tensor, bool]] = {}
        default_cl = preferred_memory_format() == torch.channels_last
        for prec in precisions:
            bf16 = prec == "bf16"
            variants[f"ours {prec}"] = (UNet(case.ours), x, bf16)  # the layout UNet picks on this machine
            if with_cl:
                # Ours in the other layout, to show what `preferred_memory_format()` gains here.
                alt = torch.contiguous_format if default_cl else torch.channels_last
                variants[f"ours {'std' if default_cl else '+CL'} {prec}"] = (UNet(case.ours, memory_format=alt), x, bf16)
            variants[f"diffusers {prec}"] = (DiffusersWrapper(UNet2DModel(**theirs_cfg)), x, bf16)
            # diffusers' classic attention processor (baddbmm + softmax): faster than its default SDPA on CPU at
            # short sequences, and in bf16 it avoids the slow bf16 flash-attention backward.
            classic = DiffusersWrapper(classic_attention(UNet2DModel(**theirs_cfg)))
            variants[f"diffusers+classic-attn {prec}"] = (classic, x, bf16)
            if with_cl and not bf16:
                # The same diffusers model given channels_last weights and input: what a tuned user could get.
                cl = DiffusersWrapper(UNet2DModel(**theirs_cfg)).to(memory_format=torch.channels_last)
                variants[f"diffusers+CL {prec}"] = (cl, x.contiguous(memory_format=torch.channels_last), bf16)
        n_ours = count_parameters(variants[f"ours {precisions[0]}"][0])
        n_theirs = count_parameters(variants[f"diffusers {precisions[0]}"][0])
        print(f"{case.name}: params ours={n_ours:,} diffusers={n_theirs:,} "
              f"({100 * (n_theirs - n_ours) / n_ours:+.2f}%)", file=sys.stderr, flush=True)
        for what, maker in (("train step", make_train_step), ("sample forward", make_sample_step)):
            fns = {k: (maker(net, xi, t, target, bf16) if maker is make_train_step else maker(net, xi, t, bf16))
                   for k, (net, xi, bf16) in variants.items()}
            times = interleaved(fns, warmup, repeats)
            med = {k: statistics.median(v) for k, v in times.items()}
            for prec in precisions:
                ours = f"ours {prec}"
                for peer in [k for k in variants if k != ours and k.endswith(prec)]:
                    rows.append([case.name, f"{n_ours:,}", str(case.batch), what, prec, peer.rsplit(" ", 1)[0],
                                 f"{med[ours] * 1e3:.1f}", f"{med[peer] * 1e3:.1f}",
                                 f"{case.batch / med[ours]:.0f}", f"{case.batch / med[peer]:.0f}",
                                 f"{paired_ratio(times[peer], times[ours]):.2f}x"])
            best_ours = min((k for k in variants if k.startswith("ours")), key=med.__getitem__)
            best_peer = min((k for k in variants if k.startswith("diffusers")), key=med.__getitem__)
            fp32_peer = "diffusers fp32" if "diffusers fp32" in med else best_peer
            summary.append(
                f"- {case.name}, {what}: fastest ours = `{best_ours}` ({case.batch / med[best_ours]:.0f} img/s), "
                f"fastest diffusers = `{best_peer}` ({case.batch / med[best_peer]:.0f} img/s): "
                f"**{paired_ratio(times[best_peer], times[best_ours]):.2f}x**; "
                f"vs diffusers as shipped (`{fp32_peer}`): "
                f"{paired_ratio(times[fp32_peer], times[best_ours]):.2f}x")
            print(summary[-1], file=sys.stderr, flush=True)
    layout = "channels_last" if preferred_memory_format() == torch.channels_last else "standard (contiguous)"
    notes = (f"warmup {warmup}, {repeats} interleaved repeats, threads {threads}; our layout here: {layout}, "
             f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    return rows, summary, notes


def table(rows: list[list[str]]) -> str:
    """A Markdown table of the rows."""
    head = ["input", "params (both)", "batch", "measure", "precision", "peer", "ours median (ms)", "peer median (ms)",
            "ours img/s", "peer img/s", "peer/ours"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def block_key(threads: int) -> str:
    """The marker key of a generated block: one block per thread count and CPU kind (AVX2 and AVX-512 side by side)."""
    return on_this_cpu(f"--threads {threads}")


def merge_block(section_body: str, block: str, key: str) -> str:
    """Put the generated `block` for `key` (thread count and CPU kind) into the section body, keeping the rest.

    Replaces an earlier block with the same key; else goes after the last generated block; else
    (a section written by hand or by an older version of this script) goes first, with the old text kept below.
    """
    begin, end = f"<!-- bench_unet.py {key}: generated by --write -->", f"<!-- end bench_unet.py {key} -->"
    new = f"{begin}\n{block.strip()}\n{end}"
    same = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if same.search(section_body):
        return same.sub(lambda _: new, section_body)
    ends = list(re.finditer(r"<!-- end bench_unet\.py --threads [^>]*-->", section_body))
    if ends:
        i = ends[-1].end()
        return section_body[:i] + "\n\n" + new + section_body[i:]
    if not section_body.strip():
        return new
    kept = "*(Kept from the earlier version of this section, written before the generated block above:)*"
    return f"{new}\n\n{kept}\n\n{section_body.strip()}"


def current_section_body() -> str:
    """The body of the section HEADING in BENCHMARKS.md ('' if absent)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else ""
    m = re.search(rf"^{re.escape(HEADING)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return m.group(1).strip() if m else ""


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats, half batch (smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: the robust setting on a shared machine)")
    ap.add_argument("--precision", default="fp32,bf16", help="comma list of fp32 and/or bf16 (CPU bf16 autocast)")
    ap.add_argument("--no-channels-last-peer", action="store_true",
                    help="skip the extra diffusers fp32 row with channels_last weights/input")
    ap.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    args = ap.parse_args(argv)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        ap.error("--precision takes fp32 and/or bf16")

    load_before = os.getloadavg()[0]
    rows, summary, notes = run(args.quick, args.threads, precisions, not args.no_channels_last_peer)
    notes += f"; 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    tab = table(rows)
    print(tab)
    print("\n".join(summary))
    if args.write:
        import diffusers

        cmd = "/work/main/.venv/bin/python " + " ".join(["benchmarks/bench_unet.py", *(argv or sys.argv[1:])])
        block = "\n".join([
            f"### {args.threads} thread{'s' if args.threads > 1 else ''}, {torch.backends.cpu.get_cpu_capability()}",
            "",
            f"- Date: {_dt.date.today().isoformat()}",
            f"- Machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
            f"diffusers {diffusers.__version__}, Python {platform.python_version()}",
            f"- Command: `{cmd}` ({notes})",
            "- Same layout and parameter count on both sides (diffusers config derived from ours). Times are medians "
            "of wall-clock per call, all variants interleaved in one process; `peer/ours` is the median over repeats "
            "of the paired ratio, > 1 means ours is faster. bf16 = `torch.autocast(\"cpu\", torch.bfloat16)`.",
            "",
            tab,
            "",
            "Fastest vs fastest (each side's best precision/layout):",
            "",
            *summary,
        ])
        write_section(HEADING, merge_block(current_section_body(), block, block_key(args.threads)))


if __name__ == "__main__":
    main()
