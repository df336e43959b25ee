"""The 10-band voice equalizer of live-audio SDKs (``setLocalVoiceEqualization``)."""

import math
import numbers

from . import biquad
from .filters import BiquadFilter
from .processor import FloatList

#: Band centres in Hz, one octave apart.
BAND_CENTERS_HZ = (31.0, 62.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)

#: One-octave bandwidth.
BAND_Q = math.sqrt(2.0)

#: Bands centred above this fraction of the sample rate are left out (their
#: centre is too close to or beyond the Nyquist frequency).
MAX_CENTER_RATIO = 0.45


class Equalizer(BiquadFilter):
    """Ten peaking bands at 31 Hz ... 16 kHz, each -15 to +15 dB.

    ``set_band(index, gain_db)`` changes one band.  At sample rates where a
    band's centre is above 0.45 x the rate (16 kHz below 35.6 kHz, 8 kHz at
    16 kHz) that band has no effect.
    """

    gains_db = FloatList([0.0] * 10, -15.0, 15.0, length=10, unit="dB",
                         item_names=[f"the {f:g} Hz band" for f in BAND_CENTERS_HZ],
                         doc="gain of each band, 31 Hz to 16 kHz")

    def set_band(self, index, gain_db):
        """Set band ``index`` (0 = 31 Hz ... 9 = 16 kHz) to ``gain_db`` (-15 to 15 dB).

        The change glides over the smoothing ramp while streaming.  Raises
        ``ValueError`` for an index outside 0-9 or a gain out of range.
        """
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) \
                or not 0 <= index <= 9:
            raise ValueError(f"band index {index!r} is invalid: must be 0 to 9 "
                             f"(centres {', '.join(f'{f:g}' for f in BAND_CENTERS_HZ)} Hz)")
        gains = list(self.gains_db)
        gains[int(index)] = gain_db
        self.gains_db = gains

    def design(self, sample_rate):
        """The ten peak filters as biquad rows for ``sample_rate`` (Hz).

        Bands too close to the Nyquist frequency are left flat.
        """
        return [biquad.peak(f, g, BAND_Q, sample_rate)
                if f <= MAX_CENTER_RATIO * sample_rate else biquad.IDENTITY
                for f, g in zip(BAND_CENTERS_HZ, self.gains_db)]
