"""Test signals and measurements shared by several test files."""

import math

import numpy as np


def tone(freq, fs, seconds, amplitude=0.25):
    """A float32 sine of ``freq`` Hz lasting ``seconds`` at rate ``fs``."""
    t = np.arange(int(round(seconds * fs))) / fs
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tone_amplitude(y, freq, fs):
    """Amplitude of the ``freq`` component of ``y`` by least squares (any length)."""
    n = np.arange(len(y))
    basis = np.column_stack([np.sin(2 * np.pi * freq * n / fs), np.cos(2 * np.pi * freq * n / fs)])
    coef, *_ = np.linalg.lstsq(basis, np.asarray(y, np.float64), rcond=None)
    return math.hypot(*coef)
