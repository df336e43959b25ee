"""Distortion kernels: waveshapers with antiderivative anti-aliasing, and a
bit crusher.

Antiderivative anti-aliasing (ADAA, first order; Parker, Zavalishin and
Le Bivic, "Reducing the aliasing of nonlinear waveshaping using continuous-
time convolution", DAFx 2016): instead of ``f(u[n])`` the shaper outputs
the mean of ``f`` over the straight line from ``u[n-1]`` to ``u[n]``,

    (F(u[n]) - F(u[n-1])) / (u[n] - u[n-1]),   F' = f,

which is ``f`` convolved with a one-sample box in continuous time: the
harmonics that a sharp corner of ``f`` puts above the Nyquist frequency are
attenuated before they fold back.  Cost: a half-sample delay and a gentle
high-frequency roll-off (that of ``(u[n] + u[n-1]) / 2`` on small signals).
When the two inputs are closer than ADAA_EPS the quotient is replaced by
``f`` at their midpoint (the same to second order).

Shapes (``u`` the driven input):

* SOFT: ``tanh(u)``, ``F = log(cosh(u))``;
* HARD: ``u`` clipped to [-1, 1], ``F = u**2 / 2`` inside, ``|u| - 1/2`` outside;
* TUBE: ``(tanh(u + b) - tanh(b)) / (1 + tanh(b))`` with ``b = TUBE_BIAS``,
  asymmetric (even harmonics): it saturates at -1 below and at
  ``(1 - tanh b) / (1 + tanh b)`` above, and its output has a DC offset
  that the processor removes.
"""

import math

import numba
import numpy as np

from . import JIT_OPTIONS, kernel
from .common import ramp_next

SOFT, HARD, TUBE = 0, 1, 2
N_MODES = 3

#: Offset of the tube shape's tanh (sets its asymmetry).
TUBE_BIAS = 0.3
_TUBE_T = math.tanh(TUBE_BIAS)
_TUBE_SCALE = 1.0 / (1.0 + _TUBE_T)
_LOG2 = math.log(2.0)

#: Below this input step the ADAA quotient is replaced by ``f`` at the midpoint.
ADAA_EPS = 1e-4

# Rows of ``bitcrush``'s ``ramps``.
B_BITS, B_FACTOR, B_MIX = range(3)
# ``bitcrush``'s ``state``: hold phase, then the held sample of each channel.
B_HOLD = 0


@numba.njit(inline="always", **JIT_OPTIONS)
def log_cosh(u):
    """``log(cosh(u))`` without overflow for any ``u``."""
    a = abs(u)
    return a + math.log1p(math.exp(-2.0 * a)) - _LOG2


@numba.njit(inline="always", **JIT_OPTIONS)
def shape(mode, u):
    """The shaper ``f`` of ``mode`` (SOFT, HARD or TUBE) at ``u``."""
    if mode == SOFT:
        return math.tanh(u)
    if mode == HARD:
        return min(1.0, max(-1.0, u))
    return (math.tanh(u + TUBE_BIAS) - _TUBE_T) * _TUBE_SCALE


@numba.njit(inline="always", **JIT_OPTIONS)
def antiderivative(mode, u):
    """An antiderivative ``F`` of ``shape(mode, .)`` at ``u``."""
    if mode == SOFT:
        return log_cosh(u)
    if mode == HARD:
        a = abs(u)
        return 0.5 * u * u if a <= 1.0 else a - 0.5
    return (log_cosh(u + TUBE_BIAS) - _TUBE_T * u) * _TUBE_SCALE


@kernel("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[:, ::1], float64[::1],"
        " boolean)")
def waveshape(x, y, drive, weights, state, normalize):
    """``y = sum_k w_k ADAA(f_k)(g x)``, or that divided by ``g`` when ``normalize``.

    ``drive``: ramp of the linear gain ``g``; ``weights``: ``(N_MODES, 4)``
    ramps of each mode's weight (one is 1 and the others 0 except while a
    change of mode cross-fades them); ``state``: each channel's previous
    driven input ``u[n-1]``.
    """
    n = x.shape[1]
    w = np.empty(N_MODES)
    for i in range(n):
        g = ramp_next(drive)
        for k in range(N_MODES):
            w[k] = ramp_next(weights[k])
        scale = 1.0 / g if normalize else 1.0
        for c in range(x.shape[0]):
            u = g * x[c, i]
            p = state[c]
            out = 0.0
            if abs(u - p) > ADAA_EPS:
                inv = 1.0 / (u - p)
                for k in range(N_MODES):
                    if w[k] != 0.0:
                        out += w[k] * (antiderivative(k, u) - antiderivative(k, p)) * inv
            else:
                mid = 0.5 * (u + p)
                for k in range(N_MODES):
                    if w[k] != 0.0:
                        out += w[k] * shape(k, mid)
            state[c] = u
            y[c, i] = np.float32(out * scale)


@kernel("void(float32[:, ::1], float32[:, ::1], float64[:, ::1], float64[::1])")
def bitcrush(x, y, ramps, state):
    """Sample-and-hold then quantization, mixed with the input.

    Every ``factor`` samples (a hold phase advancing by ``1 / factor`` a
    sample; fractional factors take a new sample at irregular but on
    average ``factor`` spacing) each channel takes a new sample, rounded to
    the nearest multiple of ``2 ** (1 - bits)`` (so 0 stays 0); ``y = (1 -
    mix) x + mix held``.  ``ramps`` rows B_BITS, B_FACTOR, B_MIX; ``state``:
    ``[hold phase, held sample of each channel]``, the phase starting at 1
    (take the first sample).
    """
    n = x.shape[1]
    levels = 2.0 ** (ramps[B_BITS, 0] - 1.0)
    for i in range(n):
        if ramps[B_BITS, 3] > 0.0:
            levels = 2.0 ** (ramp_next(ramps[B_BITS]) - 1.0)
        factor = ramp_next(ramps[B_FACTOR])
        mix = ramp_next(ramps[B_MIX])
        take = state[B_HOLD] >= 1.0 - 1e-9
        if take:
            state[B_HOLD] -= 1.0
        for c in range(x.shape[0]):
            s = float(x[c, i])
            if take:
                state[1 + c] = math.floor(s * levels + 0.5) / levels
            y[c, i] = np.float32((1.0 - mix) * s + mix * state[1 + c])
        state[B_HOLD] += 1.0 / factor
