"""Helpers shared by the tests of the delay, modulation, colour and de-esser effects."""

import numpy as np
from scipy import signal
from scipy.ndimage import maximum_filter1d


def cut(x, sizes):
    """``x`` cut into blocks of ``sizes`` (then the rest), along the last axis."""
    out, pos = [], 0
    for s in sizes:
        out.append(x[..., pos:pos + s])
        pos = min(x.shape[-1], pos + s)
    out.append(x[..., pos:])
    return out


def run_with_change(make, x, fs, at, change, sizes=(), smoothing_ms=None):
    """Output of a fresh ``make()`` on ``x``: the first ``at`` samples in one
    block, then ``change`` (parameters), then the rest in blocks of ``sizes``."""
    fx = make()
    if smoothing_ms is not None:
        fx.smoothing_ms = smoothing_ms
    first = fx.process(x[..., :at], fs)
    fx.set_params(**change)
    rest = [fx.process(b, fs) for b in cut(x[..., at:], sizes)]
    return np.concatenate([first] + rest, axis=-1)


def random_sizes(seed, count=60):
    """Block sizes from 0 to 1000 samples, in a reproducible random order."""
    r = np.random.default_rng(seed)
    return [int(s) for s in r.choice([0, 1, 2, 7, 64, 129, 480, 1000], size=count)]


def assert_block_invariant_through_change(make, x, fs, at, change, atol=1e-5, seeds=3):
    """The output with ``change`` at sample ``at`` does not depend on how the
    rest is cut into blocks (random cuts of 0 to 1000 samples)."""
    whole = run_with_change(make, x, fs, at, change)
    for seed in range(seeds):
        np.testing.assert_allclose(run_with_change(make, x, fs, at, change, random_sizes(seed)),
                                   whole, rtol=0, atol=atol)


def roughness(y, fs, f_max, a, b):
    """Largest second difference of ``y`` over samples ``a:b``, relative to
    that of a sine of ``f_max`` Hz with the local amplitude (the Hilbert
    envelope's maximum within 10 ms).

    Signals whose content lies below ``f_max`` score at most about 1; a step
    of a fraction ``e`` of the amplitude scores about ``e / (2 pi f_max / fs)
    ** 2``, e.g. 2600 e for 150 Hz at 48 kHz.
    """
    y = np.atleast_2d(np.asarray(y, np.float64))
    env = maximum_filter1d(np.abs(signal.hilbert(y, axis=1)), int(0.01 * fs), axis=1)
    d2 = np.abs(y[:, a - 1:b - 1] - 2.0 * y[:, a:b] + y[:, a + 1:b + 1])
    w2 = (2.0 * np.pi * f_max / fs) ** 2
    return float((d2 / (w2 * np.maximum(env[:, a:b], 1e-3 * env.max()))).max())


def lagrange_read(w, n, delay):
    """``w`` read ``delay`` samples before sample ``n`` by third-order Lagrange
    interpolation on the four samples around it (written as the textbook
    product formula, not the kernel's expanded one)."""
    whole = int(np.floor(delay))
    nodes = [whole - 1, whole, whole + 1, whole + 2]
    value = 0.0
    for k, dk in enumerate(nodes):
        weight = 1.0
        for j, dj in enumerate(nodes):
            if j != k:
                weight *= (delay - dj) / (dk - dj)
        value += weight * w[n - dk]
    return value


def spectrum_db(y, fs):
    """(frequencies, power in dB) of ``y`` with a Blackman-Harris window."""
    y = np.asarray(y, np.float64)
    win = signal.windows.blackmanharris(y.size)
    p = np.abs(np.fft.rfft(y * win)) ** 2
    return np.fft.rfftfreq(y.size, 1.0 / fs), 10.0 * np.log10(np.maximum(p, 1e-300))


def band_power(y, fs, lo, hi):
    """Power of ``y`` between ``lo`` and ``hi`` Hz (periodogram, Hann window)."""
    y = np.asarray(y, np.float64)
    p = np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2
    f = np.fft.rfftfreq(y.size, 1.0 / fs)
    return float(p[(f >= lo) & (f < hi)].sum())
