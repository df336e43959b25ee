"""Gain and stereo position."""

import math

import numpy as np

from .audio import db_to_gain
from .lazykernels import kernels
from .processor import Float, Processor, make_ramp, ramp_to

kcommon = kernels("common")


class _ChannelGains(Processor, register=False):
    """Shared machinery: each output channel is one input channel times a ramped gain."""

    def _gains(self):
        """(source channel, gain) for each output channel."""
        raise NotImplementedError

    def _prepare(self):
        pairs = self._gains()
        self._source = np.array([s for s, _ in pairs], dtype=np.int64)
        self._ramps = np.array([make_ramp(g) for _, g in pairs])

    def _reset(self):
        for (_, g), r in zip(self._gains(), self._ramps):
            r[:] = make_ramp(g)

    def _param_changed(self, name):
        n = self.ramp_samples()
        for (_, g), r in zip(self._gains(), self._ramps):
            ramp_to(r, g, n)

    def _process(self, block):
        out = np.empty((len(self._source), block.shape[1]), dtype=np.float32)
        kcommon.apply_gains(block, out, self._source, self._ramps)
        return out


class Gain(_ChannelGains):
    """Multiply every channel by ``gain_db`` (``-inf`` mutes)."""

    gain_db = Float(0.0, -80.0, 40.0, off=True, unit="dB", doc="gain")

    def _gains(self):
        g = db_to_gain(self.gain_db)
        return [(c, g) for c in range(self.num_channels)]


class Pan(_ChannelGains):
    """Constant-power pan: mono in, stereo out; on stereo input, a balance.

    ``pan`` -1 is full left, 0 centre, +1 full right.  Mono input: the left and
    right gains are ``cos`` and ``sin`` of ``(pan + 1) * pi / 4``, so the power
    sum is constant (-3 dB each side at centre).  Stereo input: the same law
    scaled so the centre is unity and neither side is boosted.
    """

    pan = Float(0.0, -1.0, 1.0, doc="position, -1 left to +1 right")
    channel_independent = False

    def _gains(self):
        theta = (self.pan + 1.0) * math.pi / 4.0
        # Exact zeros at the extremes (cos(pi/2) is 6e-17 in floating point).
        left, right = (0.0 if abs(v) < 1e-12 else v for v in (math.cos(theta), math.sin(theta)))
        if self.num_channels == 1:
            return [(0, left), (0, right)]
        if self.num_channels == 2:
            return [(0, min(1.0, math.sqrt(2.0) * left)), (1, min(1.0, math.sqrt(2.0) * right))]
        raise ValueError(f"Pan takes mono or stereo audio, got {self.num_channels} channels")

    def _setup(self, sample_rate, num_channels):
        if num_channels > 2:
            raise ValueError(f"Pan takes mono or stereo audio, got {num_channels} channels")
        super()._setup(sample_rate, num_channels)
