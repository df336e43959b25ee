"""Kernels of the client's music mixing (``engine.music``): a ring that
keeps the music for the local playout, and one frame of the published voice
plus the music, done in one call, since the frame path runs every 10 ms and
each call after a wake-up pays for cold caches.

A ring is a ``float32 (channels, size)`` array with an ``int64`` state
``[start, count]``: the index of its oldest sample and how many it holds.
"""

import numpy as np

from . import kernel


@kernel("void(float32[:, ::1], int64[::1], float32[:, ::1])")
def ring_write(ring, state, x):
    """Append ``x`` (as many channels as ``ring``) to the ring; beyond its
    size the oldest samples go."""
    size = ring.shape[1]
    n = x.shape[1]
    skip = n - size if n > size else 0      # older than the ring can hold
    end = (state[0] + state[1]) % size
    for i in range(skip, n):
        for c in range(ring.shape[0]):
            ring[c, end] = x[c, i]
        end += 1
        if end == size:
            end = 0
    kept = n - skip
    over = state[1] + kept - size
    if over > 0:
        state[0] = (state[0] + over) % size
        state[1] = size
    else:
        state[1] += kept


@kernel("void(float32[:, ::1], int64[::1], float32[:, ::1])")
def ring_read(ring, state, out):
    """Fill ``out`` with the oldest samples of the ring, which are taken
    out of it; zeros beyond what it holds."""
    size = ring.shape[1]
    n = out.shape[1]
    k = min(n, state[1])
    j = state[0]
    for i in range(k):
        for c in range(out.shape[0]):
            out[c, i] = ring[c, j]
        j += 1
        if j == size:
            j = 0
    for i in range(k, n):
        for c in range(out.shape[0]):
            out[c, i] = 0.0
    state[0] = j
    state[1] -= k


@kernel("void(float32[:, ::1], float32[:, ::1], int64, float64, float64, float64,"
        " float32[:, ::1], float32[:, ::1], float32[:, ::1], int64[::1])")
def mix_music(voice, music, start, gain_from, gain_to, local_gain, out, local, ring, state):
    """One frame: ``out = voice + music * g`` and ``local = music * local_gain``,
    then ``local`` appended to the ring (``ring_write``).

    ``music``: stereo, the frame's samples from column ``start`` on; ``g``
    goes from ``gain_from`` to ``gain_to`` in even steps over the frame,
    reaching it on the last sample (the ducking's ramp; equal for a steady
    gain).  A mono ``voice`` gets the mean of the two music channels."""
    n = voice.shape[1]
    mono = voice.shape[0] == 1
    step = np.float32(gain_to - gain_from) / np.float32(n)
    g0 = np.float32(gain_from)
    lg = np.float32(local_gain)
    for i in range(n):
        g = g0 + step * np.float32(i + 1)
        m0 = music[0, start + i]
        m1 = music[1, start + i]
        if mono:
            out[0, i] = voice[0, i] + np.float32(0.5) * (m0 * g + m1 * g)
        else:
            out[0, i] = voice[0, i] + m0 * g
            out[1, i] = voice[1, i] + m1 * g
        local[0, i] = m0 * lg
        local[1, i] = m1 * lg
    ring_write(ring, state, local)
