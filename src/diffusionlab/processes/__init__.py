"""Model families: one module per family (its path, loss, time convention, defaults and settings) and one registry.

- base.py: the `Process` protocol every family implements, and `Setting` (one config field);
- ddpm.py, flow.py, vpsde.py, vesde.py, ncsn.py: the families (continuous.py: what the continuous ones share);
- vlb.py: DDPM's variational bound; timesteps.py: iDDPM's importance sampling of t;
- registry.py: `METHODS`, the one table that builds processes and feeds the config checks and the CLI.
"""

from .base import Process, Setting
from .continuous import ContinuousProcess
from .ddpm import DiscreteVPPath, GaussianDiffusion, q_posterior, q_sample
from .flow import FlowMatching, OTFlowPath
from .ncsn import NCSN
from .registry import METHODS, build_process
from .vesde import VESDE, VESDEPath
from .vlb import discretized_gaussian_log_likelihood, normal_kl, prior_kl, reverse_log_variance, vlb_term
from .vpsde import VPSDE, VPSDEPath

__all__ = ["METHODS", "NCSN", "VESDE", "VPSDE", "ContinuousProcess", "DiscreteVPPath", "FlowMatching",
           "GaussianDiffusion", "OTFlowPath", "Process", "Setting", "VESDEPath", "VPSDEPath", "build_process",
           "discretized_gaussian_log_likelihood", "normal_kl", "prior_kl", "q_posterior", "q_sample",
           "reverse_log_variance", "vlb_term"]
