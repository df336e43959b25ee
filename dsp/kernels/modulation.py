"""Modulation kernels: modulated delay lines (chorus, flanger, vibrato),
tremolo and ring modulation.

Every modulator runs a phase accumulator: ``phase[0]`` in cycles, in
``[0, 1)``, advanced by the rate in cycles per sample after each sample and
carried over calls, so the modulation does not depend on how the input is
cut into blocks.  Rates, depths and gains are ``kernels.common`` ramps that
step once a sample, so parameter changes glide instead of jumping.
"""

import math

import numba
import numpy as np

from . import JIT_OPTIONS, kernel
from .common import ramp_next
from .delay import MIN_DELAY, glide_next, read_fractional

TWO_PI = 2.0 * math.pi

# Rows of ``modulated_delay``'s ``ramps``, and of its ``sweep`` glides.
RATE, FEEDBACK, DRY, WET, WIDTH = range(5)
N_DELAY_RAMPS = 5
BASE, DEPTH = range(2)

#: Layouts of ``modulated_delay``: each channel on its own; mono in, stereo
#: out; stereo in and out (mid and side).
INDEPENDENT, MONO_TO_STEREO, STEREO = 0, 1, 2

# Rows of ``tremolo``'s ``ramps``: rate, depth, then the weight of each shape.
T_RATE, T_DEPTH, T_SINE, T_TRIANGLE, T_SQUARE = range(5)
N_TREMOLO_RAMPS = 5

# Rows of ``ring_modulator``'s ``ramps``.
R_FREQUENCY, R_MIX = range(2)

#: Steepness of the square LFO, ``tanh(k cos) / tanh(k)``: an edge (from
#: -0.9 to +0.9) takes 7.9 % of a period.
SQUARE_SHARPNESS = 6.0
_SQUARE_NORM = 1.0 / math.tanh(SQUARE_SHARPNESS)


@numba.njit(inline="always", **JIT_OPTIONS)
def advance(phase, increment):
    """``phase + increment`` wrapped into ``[0, 1)`` (``0 <= increment < 1``)."""
    phase += increment
    if phase >= 1.0:
        phase -= 1.0
    return phase


@numba.njit(inline="always", **JIT_OPTIONS)
def lfo_sine(phase):
    """``cos(2 pi phase)``: +1 at phase 0, -1 at 0.5."""
    return math.cos(TWO_PI * phase)


@numba.njit(inline="always", **JIT_OPTIONS)
def lfo_triangle(phase):
    """Triangle: +1 at phase 0, falling linearly to -1 at 0.5 and back."""
    return abs(4.0 * phase - 2.0) - 1.0


@numba.njit(inline="always", **JIT_OPTIONS)
def lfo_square(phase):
    """Square with smooth edges: ``tanh(k cos(2 pi phase)) / tanh(k)``,
    ``k = SQUARE_SHARPNESS``; +1 at phase 0, -1 at 0.5."""
    return math.tanh(SQUARE_SHARPNESS * math.cos(TWO_PI * phase)) * _SQUARE_NORM


@kernel("void(float32[:, ::1], float32[:, ::1], int64, float32[:, ::1], int64[::1],"
        " float64[::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], float64[:, ::1],"
        " float64[::1])")
def modulated_delay(x, y, layout, ring, position, phase, sweep, ramps, voice_gain, voice_pan,
                    offsets):
    """Voices read from a delay line whose delay a sine LFO sweeps.

    Voice ``v`` (gain ``g_v``, pan ``p_v``) reads each input channel at
    ``base + depth * sin(2 pi (phase + offsets[v]))`` samples (clamped at
    MIN_DELAY).  Per channel the voices sum to ``m = sum_v g_v tap_v``; the
    ring is written with ``x + feedback * m``.  Outputs, by ``layout``:

    * INDEPENDENT: ``y[c] = dry x[c] + wet m[c]`` (``y`` as ``x``);
    * MONO_TO_STEREO (``x`` one channel, ``y`` two): with
      ``s = sum_v g_v p_v tap_v``, ``y = dry x + wet (m +- width s)``;
    * STEREO (two channels each): with ``M, S = (m[0] +- m[1]) / 2``,
      ``y[0], y[1] = dry x[0], dry x[1] + wet (M +- width S)``.

    ``sweep``: glides (``kernels.delay``) of BASE and DEPTH (samples);
    ``ramps`` rows RATE (cycles a sample), FEEDBACK, DRY, WET, WIDTH;
    ``voice_gain``, ``voice_pan``: one ramp per
    voice; ``offsets``: each voice's LFO phase offset in cycles.  ``ring``:
    ``(input channels, R)``, ``R`` a power of two at least 3 more than the
    longest delay; ``position[0]``: samples written; ``phase[0]``: the LFO
    phase.  A voice whose gain rests at 0 is not read.
    """
    n = x.shape[1]
    n_in = x.shape[0]
    voices = offsets.shape[0]
    mask = ring.shape[1] - 1
    pos = position[0]
    ph = phase[0]
    gains = np.empty(voices)
    pans = np.empty(voices)
    delays = np.empty(voices)
    mids = np.empty(n_in)
    for i in range(n):
        rate = ramp_next(ramps[RATE])
        base = glide_next(sweep[BASE])
        depth = glide_next(sweep[DEPTH])
        fb = ramp_next(ramps[FEEDBACK])
        dry = ramp_next(ramps[DRY])
        wet = ramp_next(ramps[WET])
        width = ramp_next(ramps[WIDTH])
        for v in range(voices):
            gains[v] = ramp_next(voice_gain[v])
            pans[v] = ramp_next(voice_pan[v])
            delays[v] = max(base + depth * math.sin(TWO_PI * (ph + offsets[v])), MIN_DELAY)
        side = 0.0
        w = pos & mask
        for c in range(n_in):
            m = 0.0
            for v in range(voices):
                if gains[v] != 0.0:
                    tap = gains[v] * read_fractional(ring[c], mask, pos, delays[v])
                    m += tap
                    if layout == MONO_TO_STEREO:
                        side += pans[v] * tap
            mids[c] = m
            ring[c, w] = np.float32(x[c, i] + fb * m)
        if layout == INDEPENDENT:
            for c in range(n_in):
                y[c, i] = np.float32(dry * x[c, i] + wet * mids[c])
        elif layout == MONO_TO_STEREO:
            s = float(x[0, i])
            y[0, i] = np.float32(dry * s + wet * (mids[0] + width * side))
            y[1, i] = np.float32(dry * s + wet * (mids[0] - width * side))
        else:
            mid = 0.5 * (mids[0] + mids[1])
            side = 0.5 * (mids[0] - mids[1])
            y[0, i] = np.float32(dry * x[0, i] + wet * (mid + width * side))
            y[1, i] = np.float32(dry * x[1, i] + wet * (mid - width * side))
        ph = advance(ph, rate)
        pos += 1
    position[0] = pos
    phase[0] = ph


@kernel("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[:, ::1])")
def tremolo(x, y, phase, ramps):
    """``y = x * (1 - depth (1 - l) / 2)``: gain from 1 (LFO ``l = +1``) down
    to ``1 - depth`` (``l = -1``).

    ``l`` is the sum of the sine, triangle and square LFOs (``lfo_*``)
    weighted by their ramps (rows T_SINE, T_TRIANGLE, T_SQUARE; a change of
    shape cross-fades the weights); rows T_RATE (cycles a sample) and
    T_DEPTH.  ``phase[0]``: the LFO phase; one gain for all channels.
    """
    ph = phase[0]
    for i in range(x.shape[1]):
        rate = ramp_next(ramps[T_RATE])
        depth = ramp_next(ramps[T_DEPTH])
        ws = ramp_next(ramps[T_SINE])
        wt = ramp_next(ramps[T_TRIANGLE])
        wq = ramp_next(ramps[T_SQUARE])
        lfo = 0.0
        if ws != 0.0:
            lfo += ws * lfo_sine(ph)
        if wt != 0.0:
            lfo += wt * lfo_triangle(ph)
        if wq != 0.0:
            lfo += wq * lfo_square(ph)
        g = 1.0 - depth * 0.5 * (1.0 - lfo)
        for c in range(x.shape[0]):
            y[c, i] = np.float32(x[c, i] * g)
        ph = advance(ph, rate)
    phase[0] = ph


@kernel("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[:, ::1])")
def ring_modulator(x, y, phase, ramps):
    """``y = x * ((1 - mix) + mix sin(2 pi phase))``, the phase advancing by
    the R_FREQUENCY ramp (cycles a sample); R_MIX ramps the mix."""
    ph = phase[0]
    for i in range(x.shape[1]):
        inc = ramp_next(ramps[R_FREQUENCY])
        mix = ramp_next(ramps[R_MIX])
        g = (1.0 - mix) + mix * math.sin(TWO_PI * ph)
        for c in range(x.shape[0]):
            y[c, i] = np.float32(x[c, i] * g)
        ph = advance(ph, inc)
    phase[0] = ph
