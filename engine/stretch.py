"""Pitch-synchronous time stretching of one decoded frame, for the jitter buffer.

The jitter buffer moves its playout point by shortening or lengthening a
decoded frame by one pitch period (speech keeps its pitch and its words; only
the duration changes).  ``shorten`` cross-fades the first period into the
second and drops one; ``lengthen`` repeats one period with a cross-fade.  Both
keep the first and last samples of the frame continuous with their
neighbours, so the joins do not click.
"""

import numpy as np

#: Pitch periods searched, in seconds (400 Hz down to about 67 Hz).
MIN_PERIOD_S = 0.0025
MAX_PERIOD_S = 0.015
#: Length of the window compared at each candidate period, in seconds.
MATCH_S = 0.005


def best_period(frame, sample_rate, max_period=None):
    """The lag, in samples, at which ``frame`` best repeats itself.

    ``frame``: float32 (channels, n).  Candidates run from ``MIN_PERIOD_S`` to
    ``MAX_PERIOD_S`` (and at most ``max_period`` and ``n // 2``); the score is
    the normalised correlation of the first ``MATCH_S`` with the window one
    lag later, summed over channels.  Returns 0 when the frame is too short to
    hold two of the shortest periods.
    """
    n = frame.shape[1]
    lo = int(MIN_PERIOD_S * sample_rate)
    hi = min(int(MAX_PERIOD_S * sample_rate), n // 2)
    if max_period is not None:
        hi = min(hi, max_period)
    match = min(int(MATCH_S * sample_rate), n - hi)
    if hi < lo or match < lo // 2:
        return 0
    mono = frame.mean(axis=0, dtype=np.float64)
    head = mono[:match]
    # corr[k] = <head, mono[lo + k : lo + k + match]>
    corr = np.correlate(mono[lo:hi + match], head, mode="valid")
    energy = np.convolve(mono[lo:hi + match] ** 2, np.ones(match), mode="valid")
    score = corr / np.sqrt(energy * float(head @ head) + 1e-12)
    # The first peak nearly as good as the best: one period, not a multiple.
    k = int(np.flatnonzero(score >= score.max() - 0.03 * abs(score.max()))[0])
    while k + 1 < len(score) and score[k + 1] > score[k]:
        k += 1
    return lo + k


def _two_periods_fit(frame, sample_rate):
    """The frame's pitch period when two of them fit in it, else 0."""
    period = best_period(frame, sample_rate)
    return period if 0 < 2 * period <= frame.shape[1] else 0


def _fades(period):
    ramp = np.arange(period, dtype=np.float32) / (period - 1)
    return 1.0 - ramp, ramp


def shorten(frame, sample_rate):
    """``frame`` one pitch period shorter (or unchanged when it is too short).

    Returns ``(new_frame, removed_samples)``.
    """
    period = _two_periods_fit(frame, sample_rate)
    if period == 0:
        return frame, 0
    out_fade, in_fade = _fades(period)
    joined = frame[:, :period] * out_fade + frame[:, period:2 * period] * in_fade
    return np.concatenate([joined, frame[:, 2 * period:]], axis=1).astype(np.float32), period


def lengthen(frame, sample_rate):
    """``frame`` one pitch period longer (or unchanged when it is too short).

    Returns ``(new_frame, added_samples)``.
    """
    period = _two_periods_fit(frame, sample_rate)
    if period == 0:
        return frame, 0
    out_fade, in_fade = _fades(period)
    repeat = frame[:, period:2 * period] * out_fade + frame[:, :period] * in_fade
    # x[:P] | blend from x[P:2P] into x[:P] | x[P:]: both joins are continuous.
    out = np.concatenate([frame[:, :period], repeat, frame[:, period:]], axis=1)
    return out.astype(np.float32), period
