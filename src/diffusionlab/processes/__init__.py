"""Forward (noising) processes and their training losses, one module per family."""

from .gaussian import DiscreteVPPath, GaussianDiffusion, normal_kl, q_posterior, q_sample

__all__ = ["DiscreteVPPath", "GaussianDiffusion", "normal_kl", "q_posterior", "q_sample"]
