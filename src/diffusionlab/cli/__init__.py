"""The `diffusionlab` command line: one module per command group, the shared argument groups in args.py.

  train.py      train, train-autoencoder
  sample.py     sample (and the cascade: sample BASE --then UPSAMPLER)
  upsample.py   upsample (super-resolution runs)
  evaluate.py   evaluate, classify
  guidance.py   train-classifier, inpaint, edit (and the guided model of `sample`)
  serve.py      serve (the web playground of serve/)
  explain.py    explain (the papers' figures from a run), report (a run's page)
  posthoc_ema.py  posthoc-ema (EDM2: the EMA of any length from a run's snapshots, scored by FID)

Every user error (bad argument, missing or corrupt file) ends as one line on stderr and exit code 2; a training run
that diverged beyond recovery exits 3, one stopped by SIGINT/SIGTERM (after checkpointing) 130/143. Set
DIFFUSIONLAB_DEBUG=1 to see the traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from .. import __version__
from ..errors import DiffusionLabError, TrainingInterrupted
from . import evaluate, explain, guidance, posthoc_ema, sample, serve, train, upsample
from .args import add_threads_argument
from .train import config_for_train

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": train.run, "train-autoencoder": train.run_autoencoder, "sample": sample.run, "upsample": upsample.run, "evaluate": evaluate.run, "classify": evaluate.run_classify,
    "train-classifier": guidance.cmd_train_classifier, "inpaint": guidance.cmd_inpaint, "edit": guidance.cmd_edit,
    "serve": serve.run,
    "explain": explain.run_explain, "report": explain.run_report, "posthoc-ema": posthoc_ema.run,
}


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block), exit code 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all sub-commands."""
    p = Parser(prog="diffusionlab", description="Train, sample and evaluate diffusion models.")
    p.add_argument("--version", action="version", version=f"diffusionlab {__version__}")
    sub: Any = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train.add_parser(sub)
    train.add_autoencoder_parser(sub)
    sample.add_parser(sub)
    upsample.add_parser(sub)
    evaluate.add_parsers(sub)
    guidance.add_parsers(sub)
    serve.add_parser(sub)
    explain.add_parsers(sub)
    posthoc_ema.add_parser(sub)
    for command in sub.choices.values():
        add_threads_argument(command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `diffusionlab` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line argument error (Parser.error)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `--procs N` runs again under torchrun
    import torch

    from ..threads import apply_threads, forget_plan

    threads_before = torch.get_num_threads()
    try:
        # The command line's process plans its threads; a program that calls main(argv) keeps its own setting unless
        # it passes --threads (and gets it back afterwards).
        if argv is None or args.threads is not None:
            apply_threads(args.threads)
        else:
            forget_plan()
        return HANDLERS[args.command](args)
    except DiffusionLabError as e:
        kind = "interrupted" if isinstance(e, TrainingInterrupted) else "error"
        print(f"diffusionlab {args.command}: {kind}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"diffusionlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal bug: still one line, traceback on request
        if os.environ.get("DIFFUSIONLAB_DEBUG"):
            raise
        print(f"diffusionlab {args.command}: internal error: {type(e).__name__}: {e} "
              f"(set DIFFUSIONLAB_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        if argv is not None:
            torch.set_num_threads(threads_before)


__all__ = ["HANDLERS", "build_parser", "config_for_train", "main"]
