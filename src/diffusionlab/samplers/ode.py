"""Time-space ODE solvers: integrate dx/dt = f(x, t) along a grid ts (increasing or decreasing).

Used with f = `Denoiser.velocity` (the probability-flow ODE of a continuous path; for flow matching the
network's v, integrated from t = 0 to 1 as in docs/maths.md section 6) and by the ODE likelihood. The fixed-step
methods are explicit Runge-Kutta methods written as Butcher tableaus (Hairer, Norsett & Wanner, "Solving
ODEs I", section II.1): Euler (1 NFE per step), the midpoint rule and Heun's trapezoidal method (2), and
classical RK4 (4). `adaptive` is SciPy's Dormand-Prince RK45 with error control (rtol, atol) on the
flattened state, so its steps are chosen for the whole batch at once.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

ODEField = Callable[[Tensor, Tensor], Tensor]  # f(x, t) -> dx/dt, t a 0-dim float64 tensor

# (a: the stage coefficients below the diagonal, b: the weights, c: the nodes)
TABLEAUS: dict[str, tuple[list[list[float]], list[float], list[float]]] = {
    "euler": ([], [1.0], [0.0]),
    "midpoint": ([[0.5]], [0.0, 1.0], [0.0, 0.5]),
    "heun": ([[1.0]], [0.5, 0.5], [0.0, 1.0]),
    "rk4": ([[0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], [0.0, 0.5, 0.5, 1.0]),
}
ODE_METHODS = (*TABLEAUS, "adaptive")


def rk_step(f: ODEField, x: Tensor, t: Tensor, h: Tensor, method: str) -> Tensor:
    """One explicit Runge-Kutta step: k_i = f(x + h sum_j a_ij k_j, t + c_i h), x' = x + h sum_i b_i k_i."""
    a, b, c = TABLEAUS[method]
    k = [f(x, t)]
    for i, row in enumerate(a, start=1):
        k.append(f(x + h * sum(a_ij * k_j for a_ij, k_j in zip(row, k) if a_ij), t + c[i] * h))
    return x + h * sum(b_i * k_i for b_i, k_i in zip(b, k) if b_i)


def solve_ode_adaptive(f: ODEField, x: Tensor, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """x(t1) from x(t0) = x by SciPy's RK45 with tolerances rtol, atol (float64 state)."""
    from scipy.integrate import solve_ivp

    if not (rtol > 0 and atol > 0):
        raise ConfigError(f"the adaptive solver needs rtol > 0 and atol > 0, got {rtol}, {atol}")
    shape, dtype, device = x.shape, x.dtype, x.device

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        return f(xt, torch.tensor(t, dtype=torch.float64)).detach().reshape(-1).to("cpu", torch.float64).numpy()

    sol = solve_ivp(fun, (float(t0), float(t1)), x.detach().reshape(-1).to("cpu", torch.float64).numpy(),
                    method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise ConfigError(f"the adaptive ODE solver failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).reshape(shape).to(device=device, dtype=dtype)


@torch.no_grad()  # sampling keeps no autograd graph; the ODE likelihood's field turns grad on inside for its divergence
def solve_ode(f: ODEField, x: Tensor, ts: Tensor, method: str = "rk4", *, rtol: float = 1e-5, atol: float = 1e-5,
              callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Integrate dx/dt = f(x, t) from ts[0] to ts[-1]: fixed steps on the grid, or `adaptive` between its ends."""
    if method not in ODE_METHODS:
        raise ConfigError(f"unknown ODE method {method!r}; choose from {', '.join(ODE_METHODS)}")
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or len(ts) < 2:
        raise ConfigError("an ODE solve needs a grid of at least two times")
    if method == "adaptive":
        return solve_ode_adaptive(f, x, float(ts[0]), float(ts[-1]), rtol=rtol, atol=atol)
    n = len(ts) - 1
    for i in range(n):
        x = rk_step(f, x, ts[i], ts[i + 1] - ts[i], method)
        if callback is not None:
            callback(n - i, x)
    return x
