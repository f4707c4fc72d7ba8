"""High-level sampling: the sampler table (spec.py), the grids (grids.py) and the batch loop `generate` (generate.py).

Every sampler works on every model family through the `Denoiser` contract; the family supplies its grids.
"""

from .generate import Frame, SampleResult, generate
from .grids import langevin_sigmas, ode_times, sigma_grid
from .spec import (ODE_SAMPLERS, SAMPLER_NAMES, SAMPLERS, SIGMA_SAMPLERS, VP_SAMPLERS, SamplerOptions, SamplerSpec,
                   sampler_spec)

__all__ = ["Frame", "ODE_SAMPLERS", "SAMPLERS", "SAMPLER_NAMES", "SIGMA_SAMPLERS", "VP_SAMPLERS", "SampleResult",
           "SamplerOptions", "SamplerSpec", "generate", "langevin_sigmas", "ode_times", "sampler_spec", "sigma_grid"]
