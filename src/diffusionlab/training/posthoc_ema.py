"""Post-hoc EMA (Karras et al. 2024, EDM2, section 3 and appendix C): choose the length of the weight average after
training, from snapshots of two or more power-function EMAs (docs/maths.md section 13).

During training (loop.py) each tracked PowerEMA is written every `posthoc_ema_every` steps and at every checkpoint
to RUN/ema_snapshots/step_N.safetensors. Afterwards, the average of any relative length sigma_rel at a checkpoint
step is the combination sum_i x_i theta_i of the snapshots whose weight profiles sum_i x_i p_i come closest
(least squares over the training updates) to that average's own profile. The inner products of the profiles are
exact sums over the discrete updates, so a target equal to a snapshot is that snapshot.

    diffusionlab posthoc-ema RUN --sigma-rel 0.05,0.10,0.20   # -> RUN/posthoc_ema/sigma_rel_0.100-step_N/
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import Tensor

from ..atomic import atomic_write_bytes, atomic_write_folder
from ..errors import CheckpointError, ConfigError
from .checkpoint import list_checkpoints
from .ema import PowerEMA, profile, sigma_rel_to_gamma

SNAPSHOT_DIR = "ema_snapshots"  # RUN/ema_snapshots/step_00001000.safetensors
SUPERSEDED_DIR = "superseded"  # RUN/ema_snapshots/superseded/: snapshots of steps a resume or rollback went back over
OUTPUT_DIR = "posthoc_ema"  # RUN/posthoc_ema/sigma_rel_0.100-step_00004460/: a checkpoint folder per reconstruction
FORMAT = "diffusionlab.ema_snapshot/1"


@dataclass(frozen=True)
class Profile:
    """One power-function average in a snapshot: its relative width, exponent and update count t."""

    sigma_rel: float
    gamma: float
    t: int


@dataclass(frozen=True)
class Snapshot:
    """RUN/ema_snapshots/step_N.safetensors: the tracked averages at training step N (tensors `I/NAME`)."""

    path: Path
    step: int
    profiles: tuple[Profile, ...]

    def weights(self) -> list[dict[str, Tensor]]:
        """The state dict of each profile, in order."""
        try:
            flat = load_file(str(self.path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"EMA snapshot {self.path} is unreadable ({str(e).splitlines()[0][:100]})") from None
        out: list[dict[str, Tensor]] = [{} for _ in self.profiles]
        for key, v in flat.items():
            i, _, name = key.partition("/")
            out[int(i)][name] = v
        return out


def snapshot_path(run_dir: Path, step: int) -> Path:
    """RUN/ema_snapshots/step_N.safetensors."""
    return Path(run_dir) / SNAPSHOT_DIR / f"step_{step:08d}.safetensors"


def write_snapshot(run_dir: Path, step: int, emas: list[PowerEMA]) -> Path:
    """Write the averages of `emas` at training `step` (atomically; the same step again replaces the file)."""
    tensors = {f"{i}/{k}": v.detach().cpu().contiguous() for i, ema in enumerate(emas) for k, v in ema.shadow.items()}
    profiles = [{"sigma_rel": e.sigma_rel, "gamma": e.gamma, "t": e.num_updates} for e in emas]
    meta = {"format": FORMAT, "step": str(step), "profiles": json.dumps(profiles)}
    return atomic_write_bytes(snapshot_path(run_dir, step), save_safetensors(tensors, metadata=meta))


def read_snapshot(path: Path) -> Snapshot:
    """A snapshot's step and profiles (its metadata only); CheckpointError if it is not one."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        profiles = tuple(Profile(float(p["sigma_rel"]), float(p["gamma"]), int(p["t"]))
                         for p in json.loads(meta["profiles"]))
        return Snapshot(Path(path), int(meta["step"]), profiles)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable EMA snapshot ({str(e).splitlines()[0][:100]})") from None


def list_snapshots(run_dir: Path) -> list[Snapshot]:
    """The run's snapshots, oldest first."""
    root = Path(run_dir) / SNAPSHOT_DIR
    return sorted((read_snapshot(p) for p in root.glob("step_*.safetensors")), key=lambda s: s.step)


def set_aside_after(run_dir: Path, step: int) -> list[Path]:
    """Move the snapshots of steps after `step` to ema_snapshots/superseded/ (a resume or a rollback to `step` makes
    them history of another trajectory: kept, but never mixed into a reconstruction). Returns their new paths."""
    root = Path(run_dir) / SNAPSHOT_DIR
    moved = []
    for path in sorted(root.glob("step_*.safetensors")):
        if int(path.stem.split("_")[1]) > step:
            target = root / SUPERSEDED_DIR / path.name
            target.parent.mkdir(exist_ok=True)
            if target.exists():  # an older superseded copy of the same step: keep both
                target = target.with_name(f"{path.stem}-{len(list(target.parent.glob(path.stem + '*')))}.safetensors")
            path.rename(target)
            moved.append(target)
    return moved


def _scaled_increments(gamma: float, t_max: int) -> np.ndarray:
    """d(tau) / t_max^(gamma+1) for tau = 1..t_max, where d(tau) = tau^(g+1) - (tau-1)^(g+1) is the unnormalised weight
    of update tau in every power average of exponent gamma; computed as (tau/t_max)^(g+1) (1 - (1 - 1/tau)^(g+1))
    so that it neither overflows nor cancels."""
    tau = np.arange(1, t_max + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):  # tau = 1: log1p(-1) = -inf, and 1 - 0^(g+1) = 1 comes out exactly
        return np.exp((gamma + 1) * np.log(tau / t_max)) * -np.expm1((gamma + 1) * np.log1p(-1 / tau))


def profile_gram(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> np.ndarray:
    """<p_i, p_j> = sum_tau p_i(tau) p_j(tau) for profiles a_i = (t, gamma) and b_j, exactly over the discrete updates.

    p_(t,g)(tau) = d_g(tau) / t^(g+1) for tau <= t, so the sum is a cumulative sum of d_ga d_gb up to min(t_a, t_b),
    one per pair of exponents, rescaled by (t_max / t_a)^(ga+1) (t_max / t_b)^(gb+1).
    """
    t_max = max(t for t, _ in a + b)
    inc = {g: _scaled_increments(g, t_max) for g in {g for _, g in a + b}}
    cums: dict[tuple[float, float], np.ndarray] = {}
    out = np.empty((len(a), len(b)))
    for i, (ta, ga) in enumerate(a):
        for j, (tb, gb) in enumerate(b):
            key = (ga, gb)
            if key not in cums:
                cums[key] = np.concatenate([[0.0], np.cumsum(inc[ga] * inc[gb])])
            scale = math.exp((ga + 1) * math.log(t_max / ta) + (gb + 1) * math.log(t_max / tb))
            out[i, j] = cums[key][min(ta, tb)] * scale
    return out


def solve(sources: list[tuple[int, float]], target: tuple[int, float]) -> tuple[np.ndarray, float]:
    """Coefficients x minimising ||sum_i x_i p_i - p_target|| over the updates, and that distance relative to
    ||p_target|| (0: exact; by Cauchy-Schwarz the reconstructed weights are then off by at most that fraction)."""
    gram = profile_gram(sources, sources)
    b = profile_gram(sources, [target])[:, 0]
    target_norm2 = float(profile_gram([target], [target])[0, 0])
    x = np.linalg.lstsq(gram, b, rcond=None)[0]
    residual2 = float(x @ gram @ x - 2 * x @ b + target_norm2)
    return x, math.sqrt(max(residual2, 0.0) / target_norm2)


@dataclass
class Reconstruction:
    """The weights of the power average of relative width sigma_rel after `step`, rebuilt from snapshots."""

    sigma_rel: float
    gamma: float
    step: int
    t: int
    weights: dict[str, Tensor]
    coefficients: list[float]
    sources: list[tuple[int, Profile]]  # (snapshot step, profile), in coefficient order
    fit_error: float  # ||sum_i x_i p_i - p_target|| / ||p_target||

    def record(self) -> dict[str, Any]:
        """What state.json says about it."""
        return {"sigma_rel": self.sigma_rel, "gamma": self.gamma, "step": self.step, "t": self.t,
                "fit_error": self.fit_error, "snapshots": len({s for s, _ in self.sources}),
                "tracked_sigma_rels": sorted({p.sigma_rel for _, p in self.sources})}


def reconstruct(run_dir: Path, sigma_rel: float, step: int | None = None) -> Reconstruction:
    """The average of relative width `sigma_rel` after training step `step` (default: the newest snapshot), from
    every snapshot up to that step; ConfigError if the run has no snapshots or none at `step`."""
    try:
        gamma = sigma_rel_to_gamma(sigma_rel)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise ConfigError(f"{run_dir} has no EMA snapshots: train it with --posthoc-ema 0.05,0.1 (the sigma_rel of "
                          "the averages to track)")
    at = {s.step: s for s in snaps}
    step = snaps[-1].step if step is None else step
    if step not in at:
        raise ConfigError(f"{run_dir} has no EMA snapshot at step {step}; snapshot steps: "
                          f"{', '.join(map(str, sorted(at)[-8:]))}")
    last = at[step]
    t = last.profiles[0].t
    used = [s for s in snaps if s.step <= step and s.profiles[0].t >= 1]  # t = 0: no update yet, an empty profile
    sources = [(s.step, p) for s in used for p in s.profiles]
    x, err = solve([(p.t, p.gamma) for _, p in sources], (t, gamma))
    coefs = iter(float(c) for c in x)
    weights: dict[str, Tensor] = {}
    states: list[dict[str, Tensor]] = []
    for s in used:
        states = s.weights()
        for state in states:
            coef = next(coefs)
            for name, v in state.items():
                if v.dtype.is_floating_point:  # float64 sums: the coefficients can be large with opposite signs
                    acc = weights.get(name)
                    weights[name] = v.double() * coef if acc is None else acc.add_(v.double(), alpha=coef)
    newest = states[0]  # integer buffers (and the names and dtypes) from the newest snapshot, `last`
    weights = {name: weights[name].to(v.dtype) if v.dtype.is_floating_point else v for name, v in newest.items()}
    return Reconstruction(sigma_rel, gamma, step, t, weights, [float(c) for c in x], sources, err)


def output_dir(run_dir: Path, sigma_rel: float, step: int) -> Path:
    """RUN/posthoc_ema/sigma_rel_0.100-step_00004460."""
    return Path(run_dir) / OUTPUT_DIR / f"sigma_rel_{sigma_rel:.3f}-step_{step:08d}"


def write_checkpoint(run_dir: Path, rec: Reconstruction) -> Path:
    """A checkpoint folder for `rec` (the checkpoint of its step with ema.safetensors replaced by the reconstruction,
    no optimizer state), so `sample`, `evaluate` and the API read it with --checkpoint; written atomically."""
    checkpoints = dict(list_checkpoints(run_dir))
    if rec.step not in checkpoints:
        raise ConfigError(f"no checkpoint of {run_dir} at step {rec.step} (reconstructions are made at checkpoint "
                          f"steps: {', '.join(map(str, sorted(checkpoints))) or 'none'})")
    source = checkpoints[rec.step]
    state = json.loads((source / "state.json").read_text())
    state["posthoc_ema"] = rec.record()
    files = {p.name: p.read_bytes() for p in source.glob("*.safetensors")
             if p.name not in ("ema.safetensors",) and not p.name.startswith("optimizer")}
    files["ema.safetensors"] = save_safetensors({k: v.contiguous() for k, v in rec.weights.items()})
    files["state.json"] = json.dumps(state, indent=1).encode()
    return atomic_write_folder(output_dir(run_dir, rec.sigma_rel, rec.step), files)


def profiles_of(rec: Reconstruction, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target profile, reconstructed profile) over updates `taus`, for the plot."""
    target = profile(rec.t, rec.gamma, taus)
    got = sum(c * profile(p.t, p.gamma, taus) for c, (_, p) in zip(rec.coefficients, rec.sources))
    return target, np.asarray(got)


__all__ = ["OUTPUT_DIR", "SNAPSHOT_DIR", "Profile", "Reconstruction", "Snapshot", "list_snapshots", "output_dir",
           "profile_gram", "profiles_of", "read_snapshot", "reconstruct", "set_aside_after", "snapshot_path", "solve",
           "write_checkpoint", "write_snapshot"]
