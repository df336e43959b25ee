"""Echo: a feedback delay with a low-pass in the loop (``kernels.delay.echo``).

One class serves as both "delay" and "echo": an echo is this delay with
feedback (repeats) and damping (each repeat duller than the last).
"""

import math

import numpy as np

from .lazykernels import kernels
from .processor import Float
from .ramped import RampedProcessor

kern = kernels("delay")

MAX_DELAY_MS = 2000.0
#: ``damping = d`` puts the corner of the loop's one-pole low-pass at
#: ``DAMPING_CORNER_HZ / d`` (no filter at 0).
DAMPING_CORNER_HZ = 1000.0
#: The read position moves at most this many samples per sample while a
#: delay glides to a new value (playback speed between 0.5 and 1.5).
MAX_GLIDE_SLOPE = 0.5
#: The tail lasts until the repeats are this far down.
TAIL_DB = -60.0


def pow2_at_least(n):
    """The smallest power of two that is at least ``n`` (``n >= 1``)."""
    return 1 << max(0, int(math.ceil(n)) - 1).bit_length()


def damping_pole(damping, sample_rate):
    """Pole of the loop's one-pole low-pass for ``damping`` (0 to 1)."""
    if damping <= 0.0:
        return 0.0
    return math.exp(-2.0 * math.pi * DAMPING_CORNER_HZ / (damping * sample_rate))


def make_glide(value):
    """A glide (see ``kernels.delay``) resting at ``value``."""
    return np.array([value, value, value, 0.0, 0.0])


def glide_to(glide, target, ramp_samples):
    """Start ``glide`` towards ``target``: over ``ramp_samples``, or longer
    so that the delay's slope stays within MAX_GLIDE_SLOPE (the raised
    cosine's steepest slope is ``pi change / (2 length)``)."""
    change = target - glide[kern.G_VALUE]
    glide[kern.G_START] = glide[kern.G_VALUE]
    glide[kern.G_TARGET] = target
    glide[kern.G_ELAPSED] = 0.0
    glide[kern.G_LENGTH] = float(max(ramp_samples,
                                     math.ceil(math.pi * abs(change) / (2.0 * MAX_GLIDE_SLOPE))))
    if change == 0.0:
        glide[kern.G_LENGTH] = 0.0


class Delay(RampedProcessor):
    """Echo: repeats every ``delay_ms`` at ``feedback`` times the previous
    one, each repeat low-passed by ``damping``; ``mix`` cross-fades from the
    dry input (0) to the repeats only (1).

    The first repeat comes ``delay_ms`` after the input at full level (times
    ``mix``), the k-th at ``k delay_ms`` with gain ``feedback ** (k - 1)``.
    Fractional delays are read with third-order Lagrange interpolation.
    A new ``delay_ms`` glides there like a tape echo, along a raised cosine
    (the pitch bends smoothly and back): over ``smoothing_ms``, or longer
    so the playback speed stays between 0.5 and 1.5 (``pi`` times the
    change); the other parameters ramp over ``smoothing_ms``.  Channels
    are independent.  Latency 0; ``tail_at`` lasts until the repeats are
    60 dB down.
    """

    delay_ms = Float(250.0, 1.0, MAX_DELAY_MS, unit="ms", doc="time between repeats")
    feedback = Float(0.35, 0.0, 0.95, doc="level of each repeat relative to the previous one")
    mix = Float(0.35, 0.0, 1.0, doc="0 dry only, 1 repeats only")
    damping = Float(0.3, 0.0, 1.0, doc="low-pass in the loop, 0 none to 1 (1 kHz corner)")

    def _delay_samples(self):
        return max(kern.MIN_DELAY, self.delay_ms * 1e-3 * self.sample_rate)

    def _targets(self):
        """Targets of the kernel's ramps, by row."""
        fs = self.sample_rate
        t = np.empty(kern.N_ECHO_RAMPS)
        t[kern.FEEDBACK] = self.feedback
        t[kern.POLE] = damping_pole(self.damping, fs)
        t[kern.DRY] = 1.0 - self.mix
        t[kern.WET] = self.mix
        return t

    def _prepare(self):
        super()._prepare()
        self._delay = make_glide(self._delay_samples())
        longest = MAX_DELAY_MS * 1e-3 * self.sample_rate
        self._ring = np.zeros((self.num_channels, pow2_at_least(longest + 4)), np.float32)
        self._position = np.zeros(1, np.int64)
        self._memory = np.zeros(self.num_channels)

    def _param_changed(self, name):
        super()._param_changed(name)
        if name == "delay_ms":
            glide_to(self._delay, self._delay_samples(), self.ramp_samples())

    def _process(self, block):
        out = np.empty_like(block)
        kern.echo(block, out, self._ring, self._position, self._delay, self._ramps, self._memory)
        return out

    def tail_at(self, sample_rate):
        """Until the repeats are 60 dB down (the damping only shortens it);
        0 when ``mix`` is 0."""
        if self.mix == 0.0:
            return 0
        repeats = 1
        if self.feedback > 0.0:
            repeats += int(math.ceil(TAIL_DB / 20.0 / math.log10(self.feedback)))
        return int(math.ceil(repeats * self.delay_ms * 1e-3 * sample_rate)) + 4
