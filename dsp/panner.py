"""Simple stereo position of a voice, without HRTF: the SDK's setRemoteVoicePosition."""

import math

from .gain import _ChannelGains
from .processor import Float


class Panner(_ChannelGains):
    """Place a voice between the left and right ear by level only (no HRTF).

    Matches the well-known SDK's ``setRemoteVoicePosition(uid, pan, gain)``:
    ``pan`` -1 is full left, 0 ahead, +1 full right; ``gain`` 0 to 100 in
    percent of the voice's own level (100 leaves it as it is).  Mono input:
    constant-power law, left and right gains ``cos`` and ``sin`` of
    ``(pan + 1) * pi / 4`` times ``gain / 100``, so the loudness stays the
    same as the voice moves.  Stereo input: a balance, the same law scaled
    so the centre is unity and neither side is boosted.  Changes glide over
    20 ms.  More than two channels raise ``ValueError``.
    """

    pan = Float(0.0, -1.0, 1.0, doc="position, -1 left to +1 right")
    gain = Float(100.0, 0.0, 100.0, unit="%", doc="level in percent of the voice's own")
    channel_independent = False

    def _gains(self):
        theta = (self.pan + 1.0) * math.pi / 4.0
        left, right = (0.0 if abs(v) < 1e-12 else v for v in (math.cos(theta), math.sin(theta)))
        g = self.gain / 100.0
        if self.num_channels == 1:
            return [(0, g * left), (0, g * right)]
        return [(0, g * min(1.0, math.sqrt(2.0) * left)),
                (1, g * min(1.0, math.sqrt(2.0) * right))]

    def _setup(self, sample_rate, num_channels):
        if num_channels > 2:
            raise ValueError(f"Panner takes mono or stereo audio, got {num_channels} channels")
        super()._setup(sample_rate, num_channels)
