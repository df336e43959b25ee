"""De-esser: turns down the sibilance band when it is loud (``kernels.deesser``)."""

import numpy as np

from . import biquad
from .dynamics import one_pole
from .lazykernels import kernels
from .processor import Float
from .ramped import RampedProcessor

kern = kernels("deesser")

#: Quality factor of the sibilance band (about 1.4 octaves between -3 dB points).
BAND_Q = 1.0
#: Time constant of the band's mean-square detector.
DETECTOR_MS = 3.0
#: Time constants of the gain reduction (dB domain), rising and falling.
ATTACK_MS = 1.0
RELEASE_MS = 60.0


class DeEsser(RampedProcessor):
    """Split-band de-esser: the band around ``frequency_hz`` is turned down
    while its level exceeds ``threshold_db``, by the excess, at most
    ``range_db``; the rest of the signal is untouched.

    The band is an RBJ band-pass (0 dB and no phase shift at
    ``frequency_hz``, Q 1); the output is ``x + (g - 1) band``, a bell cut
    of exactly ``-reduction`` dB at ``frequency_hz`` that vanishes away
    from it, and exactly the input while the band stays below the threshold.
    The band's level is its mean square over about 3 ms, read as the peak of
    a steady sine (a sine of amplitude A reads 20 log10 A dBFS); the
    reduction rises in about 1 ms and falls in about 60 ms.  Stereo channels
    share one gain (detected on the louder).  A ``frequency_hz`` above 0.49
    times the sample rate is taken as that (3.9 kHz at 8 kHz).  Latency 0.
    """

    frequency_hz = Float(6000.0, 2000.0, 12000.0, unit="Hz", doc="centre of the sibilance band")
    threshold_db = Float(-30.0, -60.0, 0.0, unit="dBFS", doc="band level where reduction starts")
    range_db = Float(12.0, 0.0, 40.0, unit="dB", doc="largest reduction")

    channel_independent = False

    def design(self, sample_rate):
        """The sibilance band-pass as biquad rows for ``sample_rate`` (Hz).

        It picks the band around ``frequency_hz`` whose level drives the gain.
        """
        return [biquad.band_pass(self.frequency_hz, BAND_Q, sample_rate)]

    def _targets(self):
        t = np.zeros(2)
        t[kern.THRESHOLD] = self.threshold_db
        t[kern.RANGE] = self.range_db
        return t

    def _prepare(self):
        super()._prepare()
        self._band = biquad.BiquadCascade(self.design(self.sample_rate), self.num_channels)
        self._state = np.zeros(2)
        fs = self.sample_rate
        self._coefs = (one_pole(DETECTOR_MS, fs), one_pole(ATTACK_MS, fs),
                       one_pole(RELEASE_MS, fs))

    def _param_changed(self, name):
        super()._param_changed(name)
        if name == "frequency_hz":
            self._band.set(self.design(self.sample_rate), self.ramp_samples())

    def _process(self, block):
        band = self._band.process(block)
        out = np.empty_like(block)
        kern.de_esser(block, band, out, self._ramps, *self._coefs, self._state)
        return out
