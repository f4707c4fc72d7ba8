"""diffusionlab: train, sample and evaluate diffusion-family generative models.

SPEC.md section -> module:
  1  schedules.py (beta, alpha, alpha_bar, SNR), processes/gaussian.py (q, posterior, L_simple, KL)
  1  prediction.py (eps / x0 / v / score / velocity conversions), denoiser.py (the model contract)
  1  samplers/ddpm.py (Algorithm 2)     3  samplers/ddim.py (DDIM and its inversion)
  8  models/unet.py                     data/, training/, cli.py
"""

__version__ = "0.1.0"
