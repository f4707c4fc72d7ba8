"""Run-directory checkpoints: tensors in safetensors, everything else in JSON, written atomically.

Layout of one checkpoint, `RUN/checkpoints/step_00001000/`:
  model.safetensors      the trained weights
  ema.safetensors        the EMA weights (used for sampling)
  optimizer.safetensors  the optimizer's tensors (Adam moments, step counts)
  state.json             step, optimizer hyper-parameters, RNG states, EMA count, config, metadata
and, for a model kind that trains a second network with its own optimizer (a discriminator: `extra`),
  NAME.safetensors, optimizer_NAME.safetensors   its weights and its optimizer's tensors

A checkpoint is written into a hidden temporary folder and renamed into place (rename is atomic on
POSIX), so a checkpoint directory either exists complete or not at all; a crash mid-write can never
damage an earlier checkpoint. A checkpoint of the same step written again (after a rollback) is exchanged
atomically with the old one. A checkpoint holding a non-finite tensor is never written (NonFiniteError),
so every checkpoint on disk is a good state and pruning the oldest can never delete the last good one.
A checkpoint that cannot be read is skipped by `load_newest`, which falls back to the one before it.
Nothing here unpickles anything.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import fsync_dir, replace_folder, temp_name
from ..errors import CheckpointError
from ..faults import maybe_fault

_STEP_DIR = re.compile(r"^step_(\d+)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class NonFiniteError(ValueError):
    """A checkpoint was asked to save NaN or infinite values (a diverged run); nothing was written."""


def nonfinite_tensors(groups: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    """The names ("group/tensor") of floating-point tensors holding NaN or inf."""
    bad = []
    for group, tensors in groups.items():
        for name, t in tensors.items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(f"{group}/{name}")
    return bad


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer state_dict into safetensors-able tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().clone(memory_format=torch.contiguous_format)  # a snapshot, not a view
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = json.loads(json.dumps(state["param_groups"], default=list))
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, numpy, python) as JSON-able values."""
    np_state = np.random.get_state()
    return {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": [np_state[0], np_state[1].tolist(), *[int(v) if isinstance(v, (int, np.integer)) else float(v) for v in np_state[2:]]],
        "python": json.loads(json.dumps(random.getstate(), default=list)),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by `rng_state`."""
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    state: dict[str, Any]
    extra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # second networks, by name
    extra_optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # further state (post-hoc EMAs), by name


def checkpoint_dir(run_dir: Path) -> Path:
    """RUN/checkpoints."""
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: dict[str, Any],
    keep: int | None = None,
    extra: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write checkpoint `step` atomically and prune to the newest `keep`; returns its folder.

    `extra` maps the name of each further trained network to (its weights, its optimizer's state_dict); `tensors`
    maps a name to further state saved as NAME.safetensors (the post-hoc EMAs' averages).
    """
    extra, tensors = extra or {}, tensors or {}
    for name in (*extra, *tensors):
        if not _NAME.match(name) or name in ("model", "ema", "optimizer", "state") or name.startswith("optimizer_"):
            raise ValueError(f"invalid extra network name {name!r}")
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer)
    extra_files = {}
    for name, (weights, opt_state) in extra.items():
        extra_tensors, meta = flatten_optimizer_state(opt_state)
        extra_files[name] = (weights, extra_tensors, meta)
    groups = {"model": model, "ema": ema, "optimizer": opt_tensors,
              **{name: w for name, (w, _, _) in extra_files.items()},
              **{f"optimizer_{name}": t for name, (_, t, _) in extra_files.items()}, **tensors}
    bad = nonfinite_tensors(groups)
    if bad:
        raise NonFiniteError(f"step {step}: non-finite values in {', '.join(bad[:3])}"
                             f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}")
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = temp_name(final)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, str(tmp / "model.safetensors"))
        maybe_fault("checkpoint:tensors", step)
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        extra_meta = {}
        for name, (weights, extra_tensors, meta) in extra_files.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / f"{name}.safetensors"))
            save_file(extra_tensors, str(tmp / f"optimizer_{name}.safetensors"))
            extra_meta[name] = meta
        for name, group in tensors.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in group.items()}, str(tmp / f"{name}.safetensors"))
        full_state = {**state, "step": step, "optimizer": opt_meta}
        if extra_meta:
            full_state["extra_optimizers"] = extra_meta
        if tensors:
            full_state["tensors"] = sorted(tensors)
        (tmp / "state.json").write_text(json.dumps(full_state, indent=1))
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        replace_folder(tmp, final)  # the same step again (after a rollback): an atomic exchange, never a gap
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    maybe_fault("checkpoint:renamed", step)
    if keep is not None:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt or unreadable ({str(e).splitlines()[0][:120]})") from None


def load_checkpoint(path: Path, with_optimizer: bool = True) -> Checkpoint:
    """Load one checkpoint folder; a missing or damaged file gives a CheckpointError naming it."""
    path = Path(path)
    state_path = path / "state.json"
    if not state_path.is_file():
        raise CheckpointError(f"checkpoint file missing: {state_path}")
    try:
        state = json.loads(state_path.read_text())
        step = int(state["step"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint file {state_path} is corrupt or unreadable") from None
    model = _load_tensors(path / "model.safetensors")
    ema = _load_tensors(path / "ema.safetensors")
    optimizer = None
    extra_meta = state.get("extra_optimizers") or {}
    extra, extra_optimizers = {}, {}
    for name in extra_meta:
        if not _NAME.match(str(name)):
            raise CheckpointError(f"checkpoint file {state_path} names an invalid network {name!r}")
        extra[name] = _load_tensors(path / f"{name}.safetensors")
    tensors = {}
    for name in state.get("tensors") or []:
        if not _NAME.match(str(name)):
            raise CheckpointError(f"checkpoint file {state_path} names an invalid tensor file {name!r}")
        tensors[name] = _load_tensors(path / f"{name}.safetensors")
    if with_optimizer:
        try:
            optimizer = unflatten_optimizer_state(_load_tensors(path / "optimizer.safetensors"), state["optimizer"])
            for name, meta in extra_meta.items():
                extra_optimizers[name] = unflatten_optimizer_state(_load_tensors(path / f"optimizer_{name}.safetensors"),
                                                                   meta)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"checkpoint {path} has unreadable optimizer state") from None
    return Checkpoint(path, step, model, ema, optimizer, state, extra, extra_optimizers, tensors)


def load_newest(run_dir: Path, with_optimizer: bool = True,
                accept: Any = None) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint of a run that can be read (and that `accept(checkpoint)` takes without raising a
    CheckpointError), falling back to older ones; returns it (None if the run has none) and one line per
    checkpoint skipped, saying why."""
    skipped: list[str] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            ckpt = load_checkpoint(path, with_optimizer)
            if accept is not None:
                accept(ckpt)
            return ckpt, skipped
        except CheckpointError as e:
            skipped.append(f"{path.name} is unreadable ({e})")
    return None, skipped


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run, or a CheckpointError saying there is none."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    return found[-1][1]
