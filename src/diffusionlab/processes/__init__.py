"""Generative processes: the forward corruption, its training loss and its variational bound."""

from .continuous import ContinuousProcess
from .flow import FlowMatching, OTFlowPath
from .gaussian import DiscreteVPPath, GaussianDiffusion, q_posterior, q_sample
from .ncsn import NCSN
from .sde import VESDE, VPSDE, VESDEPath, VPSDEPath
from .vlb import discretized_gaussian_log_likelihood, normal_kl, prior_kl, reverse_log_variance, vlb_term

# Every training process: what the trainer, `runs.build_process` and `sampling.generate` accept.
Process = GaussianDiffusion | ContinuousProcess

__all__ = ["NCSN", "VESDE", "VPSDE", "ContinuousProcess", "DiscreteVPPath", "FlowMatching",
           "GaussianDiffusion", "OTFlowPath", "Process", "VESDEPath", "VPSDEPath",
           "discretized_gaussian_log_likelihood", "normal_kl", "prior_kl", "q_posterior", "q_sample",
           "reverse_log_variance", "vlb_term"]
