"""Partitioned FFT convolution (overlap-save), for long impulse responses.

One *level* convolves with a stretch of the impulse response cut into P
partitions of B samples, each zero-padded to 2B and transformed once
(``h_re``/``h_im``: real and imaginary parts, ``(ir channels, P, B + 1)``).
The input is collected in blocks of B samples.  When a block is complete,
the last 2B input samples are transformed and stored in a frequency-domain
delay line (``fdl_re``/``fdl_im``, ``(input channels, slots, B + 1)``, a ring
indexed by ``head``), and the level's next output block is the inverse
transform of ``sum_p X[head - p] H[p]``, whose second half is the linear
convolution (overlap-save).  So a level's output comes exactly B samples
after its input: its latency is B.

Two levels run together: the *head* (the first L samples of the response,
partitions of B, at most 10 ms) and the *tail* (the rest, partitions of L, a
multiple of B).  The tail level is fed the input already delayed by B, so
that its own latency L lands its output exactly where the response's tail
belongs.  Compared with one level of B-sample partitions this cuts the
multiply-adds per sample from about N/B to L/B + N/L (N the response's
length): 563 to 50 for 3 s at 48 kHz with B = 256 and L = 4096.

The whole output comes B samples late, and the dry path is delayed by B as
well.  Samples are buffered one at a time, so the result does not depend on
how the input is cut into blocks (the tail's work arrives in bursts, once
every L samples).

FFTs run inside the kernel through rocket-fft's low-level ``r2c``/``c2r``,
which write into arrays passed in.  Spectra and sums are float32.

State per level: ``inbuf`` float32 ``(input channels, 2B)``: the previous
block then the block being filled; ``outbuf`` float32 ``(output channels,
B)``: the output of the last complete block; ``state`` int64 ``[fill, head,
cross-fade wanted]``.  ``ramps`` float64 ``(2, 4)``: wet and dry gains.

When a level's ``state[2]`` is 1, its next block is computed with both the
old spectra (``old_re``/``old_im``) and the current ones and cross-faded
linearly from old to new over the block; this is how an impulse response is
replaced while streaming.
"""

import numba
import numpy as np
from rocket_fft import c2r, r2c

from . import JIT_OPTIONS, kernel
from .common import ramp_next

FILL, HEAD, CROSSFADE = 0, 1, 2


@numba.njit(inline="always", **JIT_OPTIONS)
def _multiply_add(fdl_re, fdl_im, c, head, h_re, h_im, r, acc_re, acc_im):
    """``acc = sum_p X[c, head - p] * H[r, p]`` over the partitions of ``H``."""
    slots = fdl_re.shape[1]
    k_len = acc_re.shape[0]
    for k in range(k_len):
        acc_re[k] = 0.0
        acc_im[k] = 0.0
    for p in range(h_re.shape[1]):
        s = head - p
        if s < 0:
            s += slots
        xr = fdl_re[c, s]
        xi = fdl_im[c, s]
        hr = h_re[r, p]
        hi = h_im[r, p]
        for k in range(k_len):
            acc_re[k] += xr[k] * hr[k] - xi[k] * hi[k]
            acc_im[k] += xr[k] * hi[k] + xi[k] * hr[k]


@numba.njit(inline="always", **JIT_OPTIONS)
def _wet_block(fdl_re, fdl_im, c, head, h_re, h_im, r, acc_re, acc_im, spectrum, frame,
               axes, out):
    """``out[:B]`` = the second half of the inverse FFT of the summed products."""
    b = out.shape[0]
    _multiply_add(fdl_re, fdl_im, c, head, h_re, h_im, r, acc_re, acc_im)
    for k in range(spectrum.shape[0]):
        spectrum[k] = complex(acc_re[k], acc_im[k])
    c2r(spectrum, frame, axes, False, 1.0 / frame.shape[0], 1)
    for t in range(b):
        out[t] = frame[b + t]


@numba.njit(inline="always", **JIT_OPTIONS)
def _complete_block(inbuf, outbuf, fdl_re, fdl_im, h_re, h_im, old_re, old_im, state, in_of,
                    ir_of, acc_re, acc_im, spectrum, frame, fresh, axes):
    """A level's input block is complete: transform it, store it in the delay
    line, and compute the level's next output block (cross-faded if wanted)."""
    b = outbuf.shape[1]
    slots = fdl_re.shape[1]
    head = state[HEAD] + 1
    if head >= slots:
        head = 0
    for c in range(inbuf.shape[0]):
        if slots > 0:
            r2c(inbuf[c], spectrum, axes, True, 1.0, 1)
            for k in range(spectrum.shape[0]):
                fdl_re[c, head, k] = spectrum[k].real
                fdl_im[c, head, k] = spectrum[k].imag
        for t in range(b):
            inbuf[c, t] = inbuf[c, b + t]
    for o in range(outbuf.shape[0]):
        _wet_block(fdl_re, fdl_im, in_of[o], head, h_re, h_im, ir_of[o], acc_re, acc_im,
                   spectrum, frame, axes, outbuf[o])
        if state[CROSSFADE] != 0:
            _wet_block(fdl_re, fdl_im, in_of[o], head, old_re, old_im, ir_of[o], acc_re,
                       acc_im, spectrum, frame, axes, fresh)
            for t in range(b):
                w = (t + 1.0) / b
                outbuf[o, t] = np.float32(w * outbuf[o, t] + (1.0 - w) * fresh[t])
    state[CROSSFADE] = 0
    state[HEAD] = head
    state[FILL] = 0


@kernel("void(float32[:, ::1], float32[:, ::1], int64[::1], int64[::1], float64[:, ::1],"
        " float32[:, ::1], float32[:, ::1], float32[:, :, ::1], float32[:, :, ::1],"
        " float32[:, :, ::1], float32[:, :, ::1], float32[:, :, ::1], float32[:, :, ::1],"
        " int64[::1],"
        " float32[:, ::1], float32[:, ::1], float32[:, :, ::1], float32[:, :, ::1],"
        " float32[:, :, ::1], float32[:, :, ::1], float32[:, :, ::1], float32[:, :, ::1],"
        " int64[::1])")
def partitioned_convolution(x, y, in_of, ir_of, ramps,
                            inbuf, outbuf, fdl_re, fdl_im, h_re, h_im, old_re, old_im, state,
                            t_inbuf, t_outbuf, t_fdl_re, t_fdl_im, t_h_re, t_h_im, t_old_re,
                            t_old_im, t_state):
    """Convolve ``x`` with the impulse response into ``y`` (see the module docstring).

    x: ``(input channels, n)``; y: ``(output channels, n)``.  Output channel
    ``o`` is input channel ``in_of[o]`` convolved with impulse-response
    channel ``ir_of[o]`` times the wet gain (``ramps[0]``), plus that input
    delayed by B times the dry gain (``ramps[1]``).

    Two levels: the head (the first L samples of the response, partitions of
    B; arrays without prefix) and the tail (the rest, partitions of L, a
    multiple of B; arrays prefixed ``t_``, with no partitions if the response
    is short).  The tail level is fed the input delayed by B, so its own
    latency of L puts its output exactly where the tail belongs.  A level
    whose spectra have no partitions still keeps time (and outputs zeros).
    Each level's ``fdl`` must have at least as many slots as its ``h`` and
    ``old`` have partitions.
    """
    n = x.shape[1]
    b = outbuf.shape[1]
    tail_b = t_outbuf.shape[1]
    acc_re = np.empty(tail_b + 1, np.float32)
    acc_im = np.empty(tail_b + 1, np.float32)
    spectrum = np.empty(tail_b + 1, np.complex64)
    frame = np.empty(2 * tail_b, np.float32)
    fresh = np.empty(tail_b, np.float32)
    axes = np.zeros(1, np.int64)
    run = min(n, b)
    wet = np.empty(run)
    dry = np.empty(run)
    i = 0
    while i < n:
        fill = state[FILL]
        t_fill = t_state[FILL]
        m = min(b - fill, n - i)
        for t in range(m):
            wet[t] = ramp_next(ramps[0])
            dry[t] = ramp_next(ramps[1])
        for c in range(x.shape[0]):
            for t in range(m):
                inbuf[c, b + fill + t] = x[c, i + t]
            for t in range(m):  # the tail level hears the input delayed by B
                t_inbuf[c, tail_b + t_fill + t] = inbuf[c, fill + t]
        for o in range(y.shape[0]):
            c = in_of[o]
            for t in range(m):
                y[o, i + t] = np.float32(wet[t] * (outbuf[o, fill + t] + t_outbuf[o, t_fill + t])
                                         + dry[t] * inbuf[c, fill + t])
        i += m
        state[FILL] = fill + m
        t_state[FILL] = t_fill + m
        if fill + m == b:
            _complete_block(inbuf, outbuf, fdl_re, fdl_im, h_re, h_im, old_re, old_im, state,
                            in_of, ir_of, acc_re[:b + 1], acc_im[:b + 1], spectrum[:b + 1],
                            frame[:2 * b], fresh[:b], axes)
        if t_fill + m == tail_b:
            _complete_block(t_inbuf, t_outbuf, t_fdl_re, t_fdl_im, t_h_re, t_h_im, t_old_re,
                            t_old_im, t_state, in_of, ir_of, acc_re, acc_im, spectrum, frame,
                            fresh, axes)
