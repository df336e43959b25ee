"""Algorithmic reverb: a 16-line feedback delay network (FDN).

Design (see ``kernels.reverb`` for the signal path):

* **Decay** (Jot's method).  A line of ``d`` samples has the loop gain
  ``g = 10 ** (-3 d / (rt60_s * fs))``, so every path through the network
  loses 60 dB in ``rt60_s`` seconds whatever lines it takes.  With
  ``damping`` > 0 the loop gain is a first-order high shelf: gain ``g`` at
  1 kHz exactly, ``g ** (1 / ratio)`` at the Nyquist frequency, where
  ``ratio = 1 - 0.8 damping`` is the high-frequency decay time over the
  mid-frequency one (damping 1: highs die five times faster).  The shelf's
  corner is 3 kHz (at most 0.3 fs).  Below 1 kHz the decay is a few percent
  longer than ``rt60_s``.
* **Delays.**  16 distinct primes (so mutually prime), spread geometrically
  over a factor 2.6 around a mean of ``10 + 0.7 room_size`` ms (10 ms for
  room size 0, 80 ms for 100), interleaved between the mid and side groups.
* **Density.**  Four all-pass diffusers (gain 0.7, 2.7-7.3 ms) on each of
  the mid and side paths make the onset dense; the Hadamard feedback keeps
  the tail dense.
* **Level.**  The wet output is scaled so that its impulse response has
  about unit energy whatever ``rt60_s`` and ``room_size`` are: at
  ``wet_level_db = 0`` the reverberation of a steady sound is about as loud
  as the sound.
* **Stereo.**  Mono input with ``width`` > 0 gives stereo output whose two
  tails are decorrelated; ``width`` is the side-to-mid balance of the wet
  signal (0 mono wet, 1 fully decorrelated), loudness-compensated for mono
  input.  Stereo input gives stereo output; its mid and side are
  reverberated separately, so equal channels give equal outputs.  More than
  two channels raise ``ValueError``.  The output layout is chosen when the
  processor is prepared (first block, a change of sample rate or channel
  count, ``reset()``): a mono input then gives two channels if ``width`` > 0
  and one otherwise, for every later block whatever its size.
* **Changes while streaming** are smooth: gains and loop coefficients ramp
  over ``smoothing_ms``; room-size and pre-delay changes cross-fade between
  the old and new delay lengths over the same time (a change asked for
  during a cross-fade starts when it ends).
"""

import math

import numpy as np

from .audio import db_to_gain, raise_non_finite
from .lazykernels import kernels
from .processor import Float, Processor, make_ramp, ramp_to

kern = kernels("reverb")

#: Frequency (Hz) at which the decay time is exactly ``rt60_s``.
MID_FREQUENCY_HZ = 1000.0
#: Corner of the damping shelf (Hz), capped at ``0.3 * sample_rate``.
DAMPING_CORNER_HZ = 3000.0
#: High-frequency over mid-frequency decay time at ``damping = 1``.
MIN_DECAY_RATIO = 0.2
#: Mean delay-line length (ms) at room size 0 and its growth per unit of room size.
MEAN_DELAY_MS = 10.0
DELAY_MS_PER_ROOM = 0.7
#: Longest over shortest line length.
DELAY_SPREAD = 2.6
#: All-pass diffusers: delays (ms) of the mid and the side path, and gain.
DIFFUSER_MS = ((7.31, 5.53, 4.07, 2.93), (6.79, 5.07, 3.71, 2.71))
DIFFUSER_GAIN = 0.7
MAX_PRE_DELAY_MS = 200.0
MAX_ROOM_SIZE = 100.0
#: Energy returned by the network relative to the estimate (fitted, see
#: ``wet_normalization``), and the largest normalization gain.
WET_ENERGY = 0.85
MAX_WET_NORMALIZATION = 4.0
#: Shortest all-pass ring (samples); see ``Reverb._prepare``.
DIFFUSER_RING = 4096


def _is_prime(k):
    if k < 2:
        return False
    if k % 2 == 0:
        return k == 2
    f = 3
    while f * f <= k:
        if k % f == 0:
            return False
        f += 2
    return True


def nearest_primes(targets):
    """Distinct primes, each the nearest not yet taken to its target (samples)."""
    taken = set()
    out = []
    for t in targets:
        t = max(2, int(round(t)))
        for step in range(0, 10 * t + 10):
            for cand in (t - step, t + step):
                if cand >= 2 and cand not in taken and _is_prime(cand):
                    break
            else:
                continue
            break
        taken.add(cand)
        out.append(cand)
    return out


def line_delays(room_size, sample_rate):
    """The 16 line lengths in samples for ``room_size`` (0-100) at ``sample_rate``.

    Lines 0-7 (mid group) and 8-15 (side group) take alternate lengths of the
    sorted set, so both groups span the same range.
    """
    mean = (MEAN_DELAY_MS + DELAY_MS_PER_ROOM * room_size) * 1e-3 * sample_rate
    spread = np.geomspace(1.0 / math.sqrt(DELAY_SPREAD), math.sqrt(DELAY_SPREAD), kern.LINES)
    primes = sorted(nearest_primes(mean * spread))
    return np.array(primes[0::2] + primes[1::2], dtype=np.int64)


def diffuser_delays(sample_rate):
    """All-pass lengths in samples, ``(2, 4)``: distinct primes."""
    flat = nearest_primes([ms * 1e-3 * sample_rate for path in DIFFUSER_MS for ms in path])
    return np.array(flat, dtype=np.int64).reshape(2, 4)


def damping_pole(sample_rate):
    """Pole ``p`` of the damping shelf: that of a bilinear one-pole low-pass
    with its corner at DAMPING_CORNER_HZ (at most 0.3 ``sample_rate``)."""
    corner = min(DAMPING_CORNER_HZ, 0.3 * sample_rate)
    k = math.tan(math.pi * corner / sample_rate)
    return (1.0 - k) / (1.0 + k)


def loop_coefficients(delays, rt60_s, damping, sample_rate):
    """``(b0, b1)`` of each line's loop filter ``b0 v[n] + b1 v[n-1] + p y[n-1]``.

    The filter is ``c (k + (1 - k) lp(z))``: a first-order high shelf made of
    the bilinear low-pass ``lp(z) = a0 (1 + 1/z) / (1 - p/z)``, with ``k``
    its Nyquist-to-DC gain ratio.  Jot's method: its gain at
    MID_FREQUENCY_HZ is exactly ``g = 10 ** (-3 d / (rt60_s fs))`` and at
    Nyquist ``g ** (1 / ratio)``, where ``ratio = 1 - 0.8 damping`` is the
    high- over mid-frequency decay time.  Its largest gain (at 0 Hz, ``c``)
    is below 1 for every parameter in range, so the network is stable.
    """
    p = damping_pole(sample_rate)
    a0 = (1.0 - p) / 2.0
    ratio = 1.0 - (1.0 - MIN_DECAY_RATIO) * damping
    z = np.exp(-1j * 2.0 * np.pi * MID_FREQUENCY_HZ / sample_rate)
    lp_mid = a0 * (1.0 + z) / (1.0 - p * z)
    g = 10.0 ** (-3.0 * np.asarray(delays, dtype=np.float64) / (rt60_s * sample_rate))
    k = g ** (1.0 / ratio - 1.0)
    c = g / np.abs(k + (1.0 - k) * lp_mid)
    # c (k + (1 - k) lp(z)) = (b0 + b1 / z) / (1 - p / z)
    b0 = c * (k + (1.0 - k) * a0)
    b1 = c * ((1.0 - k) * a0 - k * p)
    return b0, b1


def wet_normalization(delays, rt60_s, sample_rate):
    """Gain that gives the wet impulse response about unit energy.

    A group of 8 lines with unit-norm input and output vectors returns about
    ``WET_ENERGY * mean(g**2 / (1 - g**2)) / 8`` of the energy put in, where
    ``g`` is each line's loop gain (fitted within +-1 dB over the whole
    parameter range).  The gain is capped at MAX_WET_NORMALIZATION, which
    only matters when ``rt60_s`` is shorter than about three line lengths.
    """
    g = 10.0 ** (-3.0 * np.asarray(delays, dtype=np.float64) / (rt60_s * sample_rate))
    energy = WET_ENERGY * float(np.mean(g * g / (1.0 - g * g))) / kern.GROUP
    return min(MAX_WET_NORMALIZATION, 1.0 / math.sqrt(energy))


def _pow2_above(n):
    return 1 << int(n).bit_length()


class Reverb(Processor):
    """Algorithmic reverb: a 16-line feedback delay network (FDN), smooth and dense.

    Parameters: ``rt60_s`` decay time at 1 kHz (s); ``damping`` 0-1 (how much
    faster highs decay); ``room_size`` 0-100 (line lengths 10-80 ms);
    ``wet_delay_ms`` pre-delay; ``strength`` 0-100 (the share of the input
    sent into the reverberator, linear: 50 sends half the amplitude);
    ``wet_level_db`` and ``dry_level_db`` (-20 to +10 dB, or ``-inf`` to mute
    that path, as in the SDK's ``setLocalVoiceReverb``); ``width`` 0-1 stereo
    spread of the wet signal.  Latency 0.  ``tail_at`` covers 60 dB of decay.
    """

    rt60_s = Float(1.5, 0.1, 10.0, unit="s", doc="decay time (-60 dB) at 1 kHz")
    damping = Float(0.4, 0.0, 1.0, doc="high-frequency damping, 0 none to 1 most")
    room_size = Float(50.0, 0.0, MAX_ROOM_SIZE, doc="room size (delay-line lengths)")
    wet_delay_ms = Float(20.0, 0.0, MAX_PRE_DELAY_MS, unit="ms", doc="pre-delay of the wet path")
    strength = Float(100.0, 0.0, 100.0, unit="%", doc="share of the input sent to the reverb")
    wet_level_db = Float(-6.0, -20.0, 10.0, off=True, unit="dB", doc="level of the wet path")
    dry_level_db = Float(0.0, -20.0, 10.0, off=True, unit="dB", doc="level of the dry path")
    width = Float(1.0, 0.0, 1.0, doc="stereo spread of the wet path, 0 mono to 1 widest")

    channel_independent = False
    checks_finite = True  # the kernel scans its input first

    # -- layout and targets ----------------------------------------------------
    def _setup(self, sample_rate, num_channels):
        if num_channels > 2:
            raise ValueError(f"Reverb takes mono or stereo audio, got {num_channels} channels")
        super()._setup(sample_rate, num_channels)

    def _gain_targets(self):
        """Targets of the send, dry, wet, mid and side ramps."""
        fs = self.sample_rate
        send = self.strength / 100.0
        wet = db_to_gain(self.wet_level_db) * wet_normalization(
            line_delays(self.room_size, fs), self.rt60_s, fs)
        w = self.width
        if self._layout == kern.STEREO:
            mid, side = 1.0, w
        elif self._layout == kern.MONO_TO_STEREO:
            norm = math.sqrt(2.0 / (1.0 + w * w))
            mid, side = norm, norm * w
        else:
            mid, side = math.sqrt(2.0), 0.0
        return send, db_to_gain(self.dry_level_db), wet, mid, side

    def _pre_delay_samples(self):
        return int(round(self.wet_delay_ms * 1e-3 * self.sample_rate))

    # -- protocol --------------------------------------------------------------
    def _prepare(self):
        fs = self.sample_rate
        if self.num_channels == 2:
            self._layout = kern.STEREO
        else:
            self._layout = kern.MONO_TO_STEREO if self.width > 0.0 else kern.MONO
        self._out_channels = 1 if self._layout == kern.MONO else 2
        longest = int(line_delays(MAX_ROOM_SIZE, fs).max())
        # Rings are a power of two long, and MAX_CHUNK longer than their
        # longest delay (the kernel's chunks need both).
        self._lines = np.zeros((kern.LINES, _pow2_above(longest + kern.MAX_CHUNK)), np.float32)
        longest_pre = round(MAX_PRE_DELAY_MS * 1e-3 * fs)
        self._pre = np.zeros((2, _pow2_above(longest_pre + kern.MAX_CHUNK)), np.float32)
        self._diff_delays = diffuser_delays(fs)
        # The all-pass rings are short, and each wrap-around of one of their
        # nine read and write positions ends a chunk; at DIFFUSER_RING
        # samples or more they wrap about once per 10 ms frame at 48 kHz.
        diff_ring = max(DIFFUSER_RING, _pow2_above(self._diff_delays.max() + kern.MAX_CHUNK))
        self._diff = np.zeros((2, 4, diff_ring), np.float32)
        self._filt = np.zeros((kern.LINES, 2))
        self._p = damping_pole(fs)
        delays = line_delays(self.room_size, fs)
        self._delays = np.tile(delays, (3, 1))
        g1, g2 = loop_coefficients(delays, self.rt60_s, self.damping, fs)
        self._coef = np.zeros((6, kern.LINES))
        self._coef[0], self._coef[1] = g1, g2
        self._coef[2], self._coef[3] = g1, g2
        d = self._pre_delay_samples()
        self._pre_delay = np.array([d, d, d], dtype=np.int64)
        self._counters = np.zeros(7, dtype=np.int64)
        self._counters[kern.FADE_LEN] = self.ramp_samples()
        self._ramps = np.array([make_ramp(g) for g in self._gain_targets()])

    def _param_changed(self, name):
        n = self.ramp_samples()
        fs = self.sample_rate
        for ramp, target in zip(self._ramps, self._gain_targets()):
            ramp_to(ramp, target, n)
        if name == "wet_delay_ms":
            self._pre_delay[2] = self._pre_delay_samples()
            self._counters[kern.PRE_WANT] = 1
        if name in ("room_size", "rt60_s", "damping"):
            delays = line_delays(self.room_size, fs)
            if name == "room_size":
                self._delays[2] = delays
                self._counters[kern.LINE_WANT] = 1
            g1, g2 = loop_coefficients(delays, self.rt60_s, self.damping, fs)
            self._coef[2], self._coef[3] = g1, g2
            self._coef[4] = (g1 - self._coef[0]) / n
            self._coef[5] = (g2 - self._coef[1]) / n
            self._counters[kern.COEF_LEFT] = n

    def _process(self, block):
        out = np.empty((self._out_channels, block.shape[1]), dtype=np.float32)
        bad = kern.fdn_reverb(block, out, self._layout, self._lines, self._pre, self._diff,
                              self._diff_delays, DIFFUSER_GAIN, self._filt, self._coef, self._p,
                              self._delays, self._pre_delay, self._counters, self._ramps)
        if bad >= 0:
            raise_non_finite(block, bad)
        return out

    def tail_at(self, sample_rate):
        """Samples for the wet path to decay by 60 dB after the input ends.

        1.25 ``rt60_s`` (the decay below 1 kHz is slightly longer than at
        1 kHz) plus the pre-delay, the longest line and the diffusers; 0 when
        the wet path is muted or nothing is sent to it.
        """
        if self.wet_level_db == -math.inf or self.strength == 0.0:
            return 0
        seconds = 1.25 * self.rt60_s + self.wet_delay_ms * 1e-3
        extra = int(line_delays(self.room_size, sample_rate).max()) + int(
            diffuser_delays(sample_rate).sum())
        return int(math.ceil(seconds * sample_rate)) + extra

    def state_arrays(self):
        """The arrays holding the audio state (for tests of denormal flushing)."""
        if self.sample_rate is None:
            return []
        return [self._lines, self._pre, self._diff, self._filt]
