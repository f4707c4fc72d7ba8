"""Guided models: classifier-free and classifier guidance as `Denoiser`s (docs/maths.md section 4).

Guidance changes what the model answers, not how a sampler walks, so both kinds wrap a `Denoiser` and
override `__call__`: every sampler (and `Denoiser.vp()`, `.score()`) gets them for free.

Conventions
- Classifier-free guidance (Ho & Salimans 2022) with `guidance_scale` S in the spelling
  eps_bar = eps(x_t, null) + S (eps(x_t, y) - eps(x_t, null)):
  S = 1 is plain conditional sampling, S = 0 unconditional, S > 1 sharpens toward the class.
  (Ho & Salimans write (1 + w) eps_c - w eps_null, i.e. S = 1 + w.)
- Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2):
  eps_bar = eps(x_t) - W sigma(t) grad_x log f_phi(y | x_t, t), with sigma(t) = sqrt(1 - abar_t) on
  the VP path and the path's own sigma(t) otherwise (the same score identity, score = -eps / sigma).
- NFE: one guided call is one NFE. CFG batches the conditional and unconditional passes into a
  single network call of 2B examples, so an NFE of a guided model costs two network passes per image
  (one at S = 0 or S = 1, where the other pass is not needed).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .denoiser import Denoiser
from .paths import batch_time, expand_like
from .errors import ConfigError
from .prediction import Prediction, x0_from_eps

# classifier(x_t, t) -> logits (B, num_classes), t the network time of the model it guides
Classifier = Callable[[Tensor, Tensor], Tensor]


def check_labels(y: Tensor, num_classes: int | None) -> None:
    """One-line errors for labels a conditional model cannot take (negative, >= num_classes, or no classes)."""
    if num_classes is None:
        raise ConfigError("this model is unconditional: it takes no class labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ConfigError(f"class {bad} is out of range: the model has classes 0..{num_classes - 1}")


class ClassifierFreeGuidance(Denoiser):
    """eps_null + S (eps_c - eps_null) (and the same for x0_hat); S = 1 conditional, S = 0 unconditional."""

    def __init__(self, model: Denoiser, guidance_scale: float, null_label: int | Tensor):
        """`null_label`: the null class index, or for a text model the empty caption's token ids (L,)."""
        super().__init__(model.net, model.prediction, model.path, model.learned_variance)
        self.model, self.guidance_scale = model, float(guidance_scale)
        self.null_label = null_label if isinstance(null_label, Tensor) else int(null_label)

    def __call__(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Prediction:
        """The guided Prediction at (x_t, t) for labels y (None: the unconditional model)."""
        S = self.guidance_scale
        if y is None or S == 0.0:
            return self.model(x, t, None)
        if S == 1.0:
            return self.model(x, t, y)
        t = batch_time(t, x)
        if isinstance(self.null_label, Tensor):  # a caption: every row gets the empty caption's ids
            null = self.null_label.to(y.device).expand_as(y)
        else:
            null = torch.full_like(y, self.null_label)
        # One network call on 2B examples: [conditional; unconditional].
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        (x0_c, x0_u), (eps_c, eps_u) = both.x0.chunk(2), both.eps.chunk(2)
        # Ho & Salimans 2022, eq. 6 with S = 1 + w. x0_hat is linear in eps_hat at fixed x_t, so
        # combining x0 the same way keeps x0_bar = (x_t - sigma eps_bar) / alpha exactly.
        var_frac = None if both.var_frac is None else both.var_frac.chunk(2)[0]  # the conditional model's variance
        return Prediction(x0_u + S * (x0_c - x0_u), eps_u + S * (eps_c - eps_u), var_frac)


def classifier_log_prob_grad(classifier: Classifier, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """grad_x log f_phi(y | x_t, t), summed over the batch (examples are independent)."""
    with torch.enable_grad():  # samplers run under no_grad
        x_in = x.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x_in, t).double(), dim=-1)
        picked = log_p.gather(1, y.long().view(-1, 1).to(log_p.device)).sum()
        (grad,) = torch.autograd.grad(picked, x_in)
    return grad


class ClassifierGuidance(Denoiser):
    """eps_bar = eps - W sigma(t) grad_x log f_phi(y | x_t, t) (Dhariwal & Nichol 2021, Algorithm 2)."""

    def __init__(self, model: Denoiser, classifier: Classifier, classifier_scale: float, pass_label: bool = False):
        super().__init__(model.net, model.prediction, model.path, model.learned_variance)
        self.model, self.classifier, self.classifier_scale = model, classifier, float(classifier_scale)
        self.pass_label = pass_label  # also give y to the wrapped model (a conditional or CFG model)

    def __call__(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Prediction:
        """The guided Prediction at (x_t, t) toward classes y."""
        if y is None:
            raise ConfigError("classifier guidance needs class labels y")
        t = batch_time(t, x)
        pred = self.model(x, t, y if self.pass_label else None)
        if self.classifier_scale == 0.0:
            return pred
        grad = classifier_log_prob_grad(self.classifier, x, t.to(x.dtype), y).to(x.dtype)
        sigma, alpha = expand_like(self.path.sigma(t), x), expand_like(self.path.alpha(t), x)
        # score(x_t | y) = score(x_t) + grad log p(y | x_t) and eps = -sigma score, hence the minus sign.
        eps = pred.eps - self.classifier_scale * sigma * grad
        return Prediction(x0_from_eps(x, eps, alpha, sigma), eps, pred.var_frac)


__all__ = ["Classifier", "ClassifierFreeGuidance", "ClassifierGuidance", "check_labels", "classifier_log_prob_grad"]
