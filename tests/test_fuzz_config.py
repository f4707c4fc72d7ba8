"""Fuzzing the bad-input side (issue 14): the config loaders and the command line raise nothing but their own one-line
errors, whatever they are given.

- `RunConfig.from_dict` / `AutoencoderRunConfig.from_dict` on presets mutated at random (any JSON value at any key,
  extra keys, whole sections replaced, keys dropped): a config or a DiffusionLabError, never TypeError & co.
- `build_parser().parse_args` on argv of each command's real flags with hostile values: a Namespace or exit 2.
- `main` on the same argv: exit 0 or 2 and never an internal error. Nothing is trained or sampled: every expensive
  step is replaced by a sentinel, and reaching one counts as "accepted".

Seeded (derandomize=True) so that a failure reproduces; about 20 s in all.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from diffusionlab.cli import build_parser, main
from diffusionlab.errors import DiffusionLabError
from diffusionlab.training.config import (AutoencoderRunConfig, RunConfig, autoencoder_preset_config, merge_config,
                                          preset_config)

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# JSON values, the hostile ones included: NaN, +-inf, huge integers, strings where numbers belong, nested containers.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 3), st.floats(), st.text(max_size=6),
                    st.sampled_from(["", "nan", "1", "cosine", "ddim", "digits", "auto", "pixel", "flow", "unet"]),
                    st.sampled_from([0, 1, 2, 8, 10**9, 2**63, -(2**63), 10**400, 1e308, 0.5, -0.5]))
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                    max_leaves=5)


def _paths(d: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every section and every key of every section of a config dict."""
    return [(s,) for s in d] + [(s, k) for s, sec in d.items() if isinstance(sec, dict) for k in sec]


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with one to four random mutations."""
    d = copy.deepcopy(base)
    paths = _paths(base)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "set", "set", "extra", "drop"]))
        holder = d
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder.get(key), dict) else None  # type: ignore[assignment]
            if holder is None:
                break
        if holder is None:
            continue
        if action == "set":
            holder[path[-1]] = draw(JSON)
        elif action == "extra":
            holder[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
        else:
            holder.pop(path[-1], None)
    return d


RUN_BASES = [preset_config(name) for name in ("digits", "digits-flow", "digits-ncsn", "digits-vesde")]
# A run's config.json as written after training: the model section complete.
RUN_BASES.append(merge_config(preset_config("digits"), {"model": {"network": "unet", "image_size": 8, "in_channels": 1,
                                                                   "out_channels": None, "num_classes": None}}))
# A latent run's config: its codec section names an autoencoder run and carries the autoencoder's config.
RUN_BASES.append(merge_config(preset_config("digits-ldm"), {"codec": {
    "kind": "autoencoder", "source": "/nowhere/ae", "checkpoint": "step_00000010", "sha256": "0" * 64,
    "scale_factor": 1.5, "model": {**autoencoder_preset_config("digits-ae")["model"], "image_size": 8,
                                   "in_channels": 1}}}))
AE_BASES = [autoencoder_preset_config(name) for name in ("digits-ae", "mnist-ae")]


def _parse(loader: Any, d: dict[str, Any]) -> None:
    try:
        loader(d)
    except DiffusionLabError as e:
        assert "\n" not in str(e) and str(e), repr(e)


@settings(max_examples=400, **SETTINGS)
@given(st.sampled_from(range(len(RUN_BASES))).flatmap(lambda i: mutated(RUN_BASES[i])))
def test_run_config_loader_raises_only_its_own_errors(d: dict[str, Any]) -> None:
    _parse(RunConfig.from_dict, d)


@settings(max_examples=250, **SETTINGS)
@given(st.sampled_from(range(len(AE_BASES))).flatmap(lambda i: mutated(AE_BASES[i])))
def test_autoencoder_config_loader_raises_only_its_own_errors(d: dict[str, Any]) -> None:
    _parse(AutoencoderRunConfig.from_dict, d)


@settings(max_examples=50, **SETTINGS)
@given(JSON)
def test_any_json_document_is_a_config_or_a_one_line_error(d: Any) -> None:
    _parse(RunConfig.from_dict, d)
    _parse(AutoencoderRunConfig.from_dict, d)


# --- the command line -------------------------------------------------------------------------------------------

def _commands() -> dict[str, list[tuple[str, tuple[str, ...] | None, bool]]]:
    """command -> (flag, choices, takes a value) for each of its options."""
    sub = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps no public handle
    out = {}
    for name, p in sub.items():
        out[name] = [(a.option_strings[-1], tuple(a.choices) if a.choices else None, a.nargs != 0)
                     for a in p._actions if a.option_strings and a.dest != "help"]  # noqa: SLF001
    return out


COMMANDS = _commands()
# What a hostile user may type as a value (argv cannot hold NUL, so neither do these).
VALUES = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1", "2", "1e999", "9223372036854775808",
                                    "1" * 30, "", "-", "all", "ddim", "x.npz", "/proc/x.npz", "a,b", "1,0", "0.5"]),
                   st.integers().map(str), st.floats().map(repr),
                   st.text(st.characters(blacklist_characters="\x00/~.", blacklist_categories=("Cs",)), max_size=8))


@st.composite
def argv_for(draw: st.DrawFn, command: str, positional: list[str]) -> list[str]:
    """`command POSITIONAL` and up to six of its flags, with hostile values (or a valid choice)."""
    argv = [command, *positional]
    for flag, choices, takes_value in draw(st.lists(st.sampled_from(COMMANDS[command]), max_size=6)):
        if flag in ("--help", "--overwrite") and draw(st.booleans()):
            continue
        argv.append(flag)
        if takes_value:
            argv.append(draw(st.sampled_from(choices).map(str) if choices and draw(st.booleans()) else VALUES))
    return argv


@settings(max_examples=300, **SETTINGS)
@given(st.sampled_from(sorted(COMMANDS)).flatmap(lambda c: argv_for(c, ["RUN"])))
def test_parser_accepts_or_exits_2_in_one_line(argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            assert e.code in (0, 2), (argv, e.code)
            if e.code == 2:
                assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()


class Accepted(BaseException):
    """Raised where the work would start: main let the input through (a BaseException, so main does not catch it)."""


WORK = [("diffusionlab.training.trainer", "train"), ("diffusionlab.training.trainer", "train_autoencoder"),
        ("diffusionlab.sampling", "generate"), ("diffusionlab.evaluation.evaluate", "build_extractor"),
        ("diffusionlab.evaluation.evaluate", "nll_report"), ("diffusionlab.evaluation.evaluate", "ode_nll_report"),
        ("diffusionlab.training.classifier", "train_classifier"), ("diffusionlab.inpainting", "sample_inpaint"),
        ("diffusionlab.editing", "sdedit"), ("diffusionlab.evaluation.digits", "_classifier")]


def _accept(*args: object, **kwargs: object) -> None:
    raise Accepted


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A working folder for relative paths, and every expensive step replaced by `_accept` (for the module)."""
    import importlib

    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        for module, name in WORK:
            mp.setattr(importlib.import_module(module), name, _accept)
        mp.chdir(root)
        mp.setenv("DIFFUSIONLAB_CACHE", str(root / "cache"))
        mp.delenv("DIFFUSIONLAB_DEBUG", raising=False)
        yield root


# Positional arguments that fail before any work: a run that does not exist, a samples file that does not exist.
POSITIONAL = {"sample": ["no-run"], "evaluate": ["no-run"], "classify": ["none.npz"], "train-classifier": ["no-run"],
              "inpaint": ["no-run"], "edit": ["no-run"], "train": [], "train-autoencoder": [], "upsample": ["no-run"],
              "serve": ["no-run"], "explain": ["no-run"], "report": ["no-run"], "posthoc-ema": ["no-run"]}


@settings(max_examples=250, **SETTINGS)
@given(st.sampled_from(sorted(COMMANDS)).flatmap(lambda c: argv_for(c, POSITIONAL[c])))
def test_main_exits_0_or_2_never_internal(sandbox: Path, argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except Accepted:
            code = 0
    text = err.getvalue()
    event(f"{argv[0]}: exit {code}")
    assert code in (0, 2), (argv, code, text)
    assert "internal error" not in text and "Traceback" not in text, (argv, text)
    if code == 2:
        assert len(text.strip().splitlines()) == 1, (argv, text)
