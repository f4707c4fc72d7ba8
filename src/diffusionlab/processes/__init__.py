"""Generative processes: the forward corruption, its training loss and its variational bound."""

from .gaussian import DiscreteVPPath, GaussianDiffusion, q_posterior, q_sample
from .vlb import discretized_gaussian_log_likelihood, normal_kl, prior_kl, reverse_log_variance, vlb_term

__all__ = ["DiscreteVPPath", "GaussianDiffusion", "discretized_gaussian_log_likelihood", "normal_kl", "prior_kl",
           "q_posterior", "q_sample", "reverse_log_variance", "vlb_term"]
