"""What a resumed run may change, compared with the config stored in the checkpoint it continues from.

Three kinds of field:
- the budget and the bookkeeping (steps, minutes, how often to log, draw grids and checkpoint): free to change;
- the optimisation (learning rate, betas, weight decay, warm-up, clipping, EMA decay, batch size, label dropout,
  precision, the autoencoder's loss weights): changed only when the user says so (`--allow-change`), and recorded in
  the run's history.jsonl;
- everything else -- the model, the process (method, schedule, prediction, T, ...), the data, the codec and the
  seed: frozen. A resumed run with another of these would silently be a different experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

BOOKKEEPING = frozenset({"train.steps", "train.minutes", "train.log_every", "train.log", "train.sample_every",
                         "train.checkpoint_every", "train.keep_checkpoints", "train.nonfinite_patience",
                         "train.posthoc_ema_every", "train.max_rollbacks", "train.rollback_lr_factor", "preview_n", "preset",
                         "task.aug_level"})  # an upsampler's sampling level: the preview grids' only
BOOKKEEPING_SECTIONS = ("sample.",)  # the training-time preview grids
TUNABLE = frozenset({"train.lr", "train.lr_schedule", "train.weight_decay", "train.adam_betas", "train.warmup_steps", "train.grad_clip",
                     "train.ema_decay", "train.ema_warmup", "train.ema_sigma_rel", "train.batch_size",
                     "train.label_dropout",
                     "train.mixed_precision", "loss.kl_weight", "loss.perceptual_weight", "loss.disc_weight",
                     "loss.disc_lr", "loss.d_steps", "loss.r1_gamma", "loss.kl_warmup_steps"})


@dataclass(frozen=True)
class Change:
    """One field that differs: its dotted path, the old and the new value, and its kind."""

    path: str
    old: Any
    new: Any

    @property
    def kind(self) -> str:
        """'bookkeeping', 'tunable' or 'frozen'."""
        if self.path in BOOKKEEPING or self.path.startswith(BOOKKEEPING_SECTIONS):
            return "bookkeeping"
        return "tunable" if self.path in TUNABLE else "frozen"

    def __str__(self) -> str:
        if self.old is None:
            return f"{self.path} = {_short(self.new)}"
        return f"{self.path} {_short(self.old)} -> {_short(self.new)}"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not prefix.startswith(("model.", "codec.")):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The fields of `new` that differ from `old` (both complete run configs as dicts), in a stable order."""
    a, b = _flatten(old), _flatten(new)
    return [Change(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if _norm(a.get(k)) != _norm(b.get(k))]


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def check_changes(changes: list[Change], allow_change: bool, where: str) -> list[Change]:
    """Refuse frozen changes (always) and tunable ones (unless `allow_change`); returns the changes to record."""
    frozen = [c for c in changes if c.kind == "frozen"]
    if frozen:
        raise ConfigError(f"{where} changes what the run is: {'; '.join(map(str, frozen[:3]))}"
                          f"{' ...' if len(frozen) > 3 else ''}. A resumed run keeps its model, process, data and "
                          "seed: undo the change, or start a new run")
    tunable = [c for c in changes if c.kind == "tunable"]
    if tunable and not allow_change:
        raise ConfigError(f"{where} changes the optimisation: {'; '.join(map(str, tunable))}. Resume with "
                          "--allow-change to adopt it (it is recorded in the run's history.jsonl)")
    return changes


__all__ = ["BOOKKEEPING", "TUNABLE", "Change", "check_changes", "config_changes"]
