"""Modulation effects: Chorus, Flanger, Vibrato (a delay line swept by an
LFO), Tremolo (amplitude) and RingModulator (multiplication by a sine).

Every LFO is a phase accumulator carried from block to block
(``kernels.modulation``), starting at phase 0 when the processor is
prepared, so the output does not depend on how the input is cut into
blocks.  Parameter changes while streaming ramp over ``smoothing_ms``:
rates glide (the phase stays continuous), gains move linearly, a change of
LFO shape or voice count cross-fades, and delay times glide along a raised
cosine (``dsp.delay.glide_to``: longer for large changes, so the playback
speed stays between 0.5 and 1.5).
"""

import math

import numpy as np

from .delay import glide_to, make_glide, pow2_at_least
from .lazykernels import kernels
from .processor import Choice, Float, Int, make_ramp, ramp_to
from .ramped import RampedProcessor

kern = kernels("modulation")

MAX_VOICES = 4
#: LFO phase of each chorus voice (cycles), whatever the number of voices.
VOICE_PHASES = (0.0, 0.5, 0.25, 0.75)
#: Stereo position of each voice (-1 left, +1 right) by number of voices.
VOICE_PANS = {1: (0.0,), 2: (-1.0, 1.0), 3: (-1.0, 1.0, 0.0), 4: (-1.0, 1.0, -1 / 3, 1 / 3)}

#: Vibrato: centre of the delay sweep (and latency).  It holds the widest
#: sweep in range (100 cents at 1 Hz: 9.2 ms) with 0.8 ms to spare.
VIBRATO_CENTRE_MS = 10.0

TREMOLO_SHAPES = ("sine", "triangle", "square")


def _ms(value_ms, sample_rate):
    return value_ms * 1e-3 * sample_rate


def sweep_samples(delay_ms, depth_ms, sample_rate):
    """``(base, amplitude)`` in samples of a sweep from ``delay_ms`` to
    ``delay_ms + depth_ms``: the delay is ``base + amplitude sin(...)``."""
    return _ms(delay_ms + 0.5 * depth_ms, sample_rate), _ms(0.5 * depth_ms, sample_rate)


def vibrato_amplitude(rate_hz, depth_cents, sample_rate):
    """Delay-sweep amplitude (samples) that swings the pitch by ``+-depth_cents``.

    With the delay ``D + A sin(2 pi f t)`` the playback speed is
    ``1 - A 2 pi f / fs cos(...)``, between ``1 - a`` and ``1 + a``; their
    ratio is ``2 ** (2 depth_cents / 1200)`` when ``a = tanh(depth_cents
    ln 2 / 1200)``.
    """
    a = math.tanh(depth_cents * math.log(2.0) / 1200.0)
    return a * sample_rate / (2.0 * math.pi * rate_hz)


def feedback_tail(feedback, loop_samples, db=-60.0):
    """Samples for a feedback loop of ``loop_samples`` to decay by ``db``."""
    f = abs(feedback)
    repeats = 1 if f == 0.0 else 1 + int(math.ceil(db / 20.0 / math.log10(f)))
    return int(math.ceil(repeats * loop_samples))


class _ModulatedDelay(RampedProcessor, register=False):
    """Shared machinery: voices read a delay line swept by a sine LFO
    (``kernels.modulation.modulated_delay``)."""

    #: Longest delay (ms) the ring must hold.
    _longest_ms = 0.0
    #: LFO phase offset of each voice (cycles).
    _offsets = (0.0,)

    def _layout(self):
        return kern.INDEPENDENT

    def _voice_targets(self):
        """(gains, pans) of the voices."""
        return (1.0,), (0.0,)

    def _sweep_targets(self):
        """(base, amplitude) of the delay sweep in samples."""
        raise NotImplementedError

    def _prepare(self):
        fs = self.sample_rate
        self._mode = self._layout()
        super()._prepare()
        self._out_channels = 2 if self._mode == kern.MONO_TO_STEREO else self.num_channels
        self._ring = np.zeros((self.num_channels, pow2_at_least(_ms(self._longest_ms, fs) + 4)),
                              np.float32)
        self._position = np.zeros(1, np.int64)
        self._phase = np.zeros(1)
        self._sweep = np.array([make_glide(v) for v in self._sweep_targets()])
        gains, pans = self._voice_targets()
        self._gain_ramps = np.array([make_ramp(v) for v in gains])
        self._pan_ramps = np.array([make_ramp(v) for v in pans])
        self._phase_offsets = np.array(self._offsets, dtype=np.float64)

    def _param_changed(self, name):
        super()._param_changed(name)
        n = self.ramp_samples()
        for glide, target in zip(self._sweep, self._sweep_targets()):
            glide_to(glide, target, n)
        gains, pans = self._voice_targets()
        for ramps, targets in ((self._gain_ramps, gains), (self._pan_ramps, pans)):
            for ramp, target in zip(ramps, targets):
                ramp_to(ramp, target, n)

    def _process(self, block):
        out = np.empty((self._out_channels, block.shape[1]), np.float32)
        kern.modulated_delay(block, out, self._mode, self._ring, self._position, self._phase,
                             self._sweep, self._ramps, self._gain_ramps, self._pan_ramps,
                             self._phase_offsets)
        return out


class Chorus(_ModulatedDelay):
    """Chorus: ``voices`` copies of the input, each delayed by a time swept
    between ``delay_ms`` and ``delay_ms + depth_ms`` at ``rate_hz``, their
    LFOs a quarter or half a cycle apart; ``mix`` cross-fades from the dry
    input (0) to the mean of the voices (1).

    Stereo: a mono input with ``width`` > 0 gives stereo output, the voices
    spread from left to right (two voices: one each side); the wet signal
    keeps its power whatever the width.  A stereo input gives stereo output:
    each channel is chorused, and ``width`` is the side-to-mid balance of the
    wet signal (0: the same wet signal in both channels), so equal channels
    give equal outputs.  As for ``Reverb``, the output layout is chosen when
    the processor is prepared; more than two channels raise ``ValueError``.
    With ``rate_hz = 0`` the voices rest where their sweeps start: voice 1
    at ``delay_ms``, voice 2 at ``delay_ms + depth_ms``, voices 3 and 4
    half way.  Latency 0.
    """

    rate_hz = Float(0.8, 0.0, 10.0, unit="Hz", doc="sweep rate")
    depth_ms = Float(3.0, 0.0, 10.0, unit="ms", doc="sweep width")
    delay_ms = Float(12.0, 1.0, 40.0, unit="ms", doc="shortest delay of the sweep")
    voices = Int(2, 1, MAX_VOICES, doc="number of delayed copies")
    mix = Float(0.5, 0.0, 1.0, doc="0 dry only, 1 voices only")
    width = Float(1.0, 0.0, 1.0, doc="stereo spread of the voices, 0 mono to 1 widest")

    channel_independent = False
    _longest_ms = 40.0 + 10.0
    # The sweep delay + depth (1 - cos) / 2 is base + amplitude sin(phase - 1/4).
    _offsets = tuple(p - 0.25 for p in VOICE_PHASES)

    def _setup(self, sample_rate, num_channels):
        if num_channels > 2:
            raise ValueError(f"Chorus takes mono or stereo audio, got {num_channels} channels")
        super()._setup(sample_rate, num_channels)

    def _layout(self):
        if self.num_channels == 2:
            return kern.STEREO
        return kern.MONO_TO_STEREO if self.width > 0.0 else kern.INDEPENDENT

    def _voice_targets(self):
        v = self.voices
        gains = [1.0 / v if k < v else 0.0 for k in range(MAX_VOICES)]
        pans = list(VOICE_PANS[v]) + [0.0] * (MAX_VOICES - v)
        return gains, pans

    def _wet_norm(self):
        """Power compensation of the spread (mono in, stereo out)."""
        if self._mode != kern.MONO_TO_STEREO:
            return 1.0
        pans = np.array(VOICE_PANS[self.voices])
        return math.sqrt(len(pans) / float(np.sum(1.0 + (self.width * pans) ** 2)))

    def _sweep_targets(self):
        return sweep_samples(self.delay_ms, self.depth_ms, self.sample_rate)

    def _targets(self):
        t = np.zeros(kern.N_DELAY_RAMPS)
        t[kern.RATE] = self.rate_hz / self.sample_rate
        t[kern.DRY] = 1.0 - self.mix
        t[kern.WET] = self.mix * self._wet_norm()
        t[kern.WIDTH] = self.width
        return t

    def tail_at(self, sample_rate):
        """The longest delay of the sweep; 0 when ``mix`` is 0."""
        if self.mix == 0.0:
            return 0
        return int(math.ceil(_ms(self.delay_ms + self.depth_ms, sample_rate))) + 3


class Flanger(_ModulatedDelay):
    """Flanger: the input plus a copy delayed by a time swept between
    ``delay_ms`` and ``delay_ms + depth_ms`` at ``rate_hz``, fed back with
    ``feedback`` (negative: inverted); ``mix`` cross-fades from the dry input
    (0) to the delayed copy (1).

    At mix 0.5 and no feedback the notches are complete: ``delay = D``
    samples cancels ``(k + 1/2) fs / D``.  The response of a resting sweep
    (``rate_hz = 0``: the delay stays at ``delay_ms``) is
    ``(1 - mix) + mix sqrt(1 - g**2) z^-D / (1 - g z^-D)`` for ``g =
    feedback``: the wet path is scaled so that its broadband power does not
    change with the feedback, while its resonances (at ``k fs / D`` for
    positive feedback, ``(k + 1/2) fs / D`` for negative) rise to
    ``sqrt((1 + |g|) / (1 - |g|))`` (+16 dB at 0.95).  Channels are
    independent; latency 0.
    """

    rate_hz = Float(0.25, 0.0, 5.0, unit="Hz", doc="sweep rate")
    depth_ms = Float(2.5, 0.0, 10.0, unit="ms", doc="sweep width")
    delay_ms = Float(1.0, 0.25, 15.0, unit="ms", doc="shortest delay of the sweep")
    feedback = Float(0.5, -0.95, 0.95, doc="delayed signal fed back (negative: inverted)")
    mix = Float(0.5, 0.0, 1.0, doc="0 dry only, 1 delayed only")

    _longest_ms = 15.0 + 10.0
    _offsets = (-0.25,)

    def _sweep_targets(self):
        return sweep_samples(self.delay_ms, self.depth_ms, self.sample_rate)

    def _targets(self):
        t = np.zeros(kern.N_DELAY_RAMPS)
        t[kern.RATE] = self.rate_hz / self.sample_rate
        t[kern.FEEDBACK] = self.feedback
        t[kern.DRY] = 1.0 - self.mix
        t[kern.WET] = self.mix * math.sqrt(1.0 - self.feedback ** 2)
        return t

    def tail_at(self, sample_rate):
        """Until the feedback has decayed by 60 dB at the longest delay; 0
        when ``mix`` is 0."""
        if self.mix == 0.0:
            return 0
        return feedback_tail(self.feedback, _ms(self.delay_ms + self.depth_ms, sample_rate)) + 3


class Vibrato(_ModulatedDelay):
    """Vibrato: the pitch swings by ``+-depth_cents`` at ``rate_hz`` (wet only).

    The input is read from a delay swept sinusoidally around
    VIBRATO_CENTRE_MS (10 ms), which is the latency; the sweep's amplitude
    follows from the rate and depth (``vibrato_amplitude``), so the
    highest and lowest pitch are ``2 ** (2 depth_cents / 1200)`` apart and
    centred (in the geometric sense) on the input's.  The sweep starts at the
    centre going up in delay (down in pitch).  Channels are independent.
    """

    rate_hz = Float(5.5, 1.0, 15.0, unit="Hz", doc="vibrato rate")
    depth_cents = Float(30.0, 0.0, 100.0, unit="cents", doc="pitch swing each way")

    _longest_ms = 2 * VIBRATO_CENTRE_MS

    def latency_at(self, sample_rate):
        return int(round(_ms(VIBRATO_CENTRE_MS, sample_rate)))

    def _sweep_targets(self):
        fs = self.sample_rate
        return self.latency_at(fs), vibrato_amplitude(self.rate_hz, self.depth_cents, fs)

    def _targets(self):
        t = np.zeros(kern.N_DELAY_RAMPS)
        t[kern.RATE] = self.rate_hz / self.sample_rate
        t[kern.WET] = 1.0
        return t

    def tail_at(self, sample_rate):
        """The sweep's amplitude beyond the latency."""
        return int(math.ceil(vibrato_amplitude(self.rate_hz, self.depth_cents,
                                               sample_rate))) + 3


class _Oscillator(RampedProcessor, register=False):
    """Shared machinery: a kernel ``(x, y, phase, ramps)`` that multiplies
    the input by a function of an oscillator's phase, named by ``_kernel_name``."""

    _kernel_name = None

    def _prepare(self):
        super()._prepare()
        self._phase = np.zeros(1)

    def _process(self, block):
        out = np.empty_like(block)
        getattr(kern, self._kernel_name)(block, out, self._phase, self._ramps)
        return out


class Tremolo(_Oscillator):
    """Tremolo: the gain swings between 1 and ``1 - depth`` at ``rate_hz``.

    ``shape``: "sine", "triangle" or "square" (with smooth edges, each
    7.9 % of a period, so it never clicks); the gain is ``1 - depth (1 -
    l) / 2`` for the LFO ``l`` (``kernels.modulation.lfo_*``), which starts
    at +1 (full gain).  A change of shape cross-fades the two LFOs over
    ``smoothing_ms``.  All channels share one gain.  Latency 0.
    """

    rate_hz = Float(5.0, 0.0, 20.0, unit="Hz", doc="tremolo rate")
    depth = Float(0.5, 0.0, 1.0, doc="gain swing, 0 none to 1 down to silence")
    shape = Choice("sine", TREMOLO_SHAPES, doc="LFO waveform")

    def _targets(self):
        t = np.zeros(kern.N_TREMOLO_RAMPS)
        t[kern.T_RATE] = self.rate_hz / self.sample_rate
        t[kern.T_DEPTH] = self.depth
        t[kern.T_SINE + TREMOLO_SHAPES.index(self.shape)] = 1.0
        return t

    _kernel_name = "tremolo"


class RingModulator(_Oscillator):
    """Ring modulator: the input times a sine of ``frequency_hz`` (starting
    at phase 0), cross-faded with the dry input by ``mix``:
    ``y = x ((1 - mix) + mix sin(2 pi f t))``.  A new frequency glides
    over ``smoothing_ms`` with a continuous phase.  Latency 0.
    """

    frequency_hz = Float(200.0, 1.0, 5000.0, unit="Hz", doc="carrier frequency")
    mix = Float(1.0, 0.0, 1.0, doc="0 dry only, 1 fully modulated")

    def _targets(self):
        t = np.zeros(2)
        t[kern.R_FREQUENCY] = self.frequency_hz / self.sample_rate
        t[kern.R_MIX] = self.mix
        return t

    _kernel_name = "ring_modulator"
