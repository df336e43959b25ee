"""Binaural spatializer: one mono voice placed (or circling) around the listener.

The voice goes through the head-related transfer function of its direction
(``Hrtf``, by default the bundled MIT KEMAR set): per ear an onset delay
(fractional samples) and a short minimum-phase filter, interpolated between
the measured directions.  Distance lowers the level (inverse distance beyond
a reference), optionally darkens the sound (air absorption) and, close to the
head, widens the level difference between the ears (near field).

Changes of direction, distance or any other parameter take effect at the
next 10 ms tick of the stream (counted in samples from the start, so the
output does not depend on block sizes) and are cross-faded over the
following 10 ms: moving a source never clicks.  See ``kernels.spatial``.
"""

import math

import numpy as np

from .hrtf import Hrtf
from .lazykernels import kernels
from .processor import Bool, Choice, Float, Processor

k = kernels("spatial")

#: Interval between updates, which is also the cross-fade length (seconds).
TICK_S = 0.01

def distance_gain(distance_m, reference_m, rolloff):
    """Inverse-distance gain, clamped: 1 up to ``reference_m``, then
    ``reference / (reference + rolloff * (distance - reference))``.

    With ``rolloff`` 1 each doubling of the distance beyond the reference
    lowers the level by 6.02 dB; 0 switches attenuation off.
    """
    d = max(distance_m, reference_m)
    return reference_m / (reference_m + rolloff * (d - reference_m))


class SpatialState:
    """Streaming state of ``kernels.spatial.render`` for ``sources`` sources.

    Owns the arrays the kernel updates; ``targets`` is filled by the owner
    (a ``Spatializer`` or a ``SpatialScene``) before each call.
    """

    def __init__(self, hrtf, sample_rate, sources, max_extra_delay=0.0):
        self.hrtf = hrtf
        self.tables = hrtf.tables
        self.sample_rate = sample_rate
        taps = hrtf.taps
        self.tick = max(1, int(round(TICK_S * sample_rate)))
        longest = self.tick + hrtf.max_delay + k.BASE_DELAY + max_extra_delay + 8
        ring = 2 * (1 << int(math.ceil(math.log2(longest))))
        self.targets = np.zeros((sources, k.N_TARGETS))
        self.state = np.zeros((sources, k.N_STATE))
        self.filt = np.zeros((sources, 2, 2, taps), dtype=np.float32)
        self.ring = np.zeros((sources, ring), dtype=np.float32)
        self.dhist = np.zeros((sources, 2, taps - 1), dtype=np.float32)
        self.clock = np.array([0, self.tick, 0, 0, sample_rate], dtype=np.int64)

    @property
    def max_delay(self):
        """The longest delay the ring holds, in samples."""
        return self.ring.shape[1] // 2 - self.tick - 4.0

    def clear(self, slot=None):
        """Forget the audio and position of one source (or all): it restarts
        as new at its next tick.  The shared clock keeps running."""
        rows = slice(None) if slot is None else slice(slot, slot + 1)
        self.state[rows] = 0.0
        self.filt[rows] = 0.0
        self.ring[rows] = 0.0
        self.dhist[rows] = 0.0

    def reset(self):
        """Everything back to the start of a stream (targets are kept)."""
        self.clear()
        self.clock[k.C_COUNTDOWN] = 0
        self.clock[k.C_WRITE] = 0

    def render(self, x, out):
        """Run the kernel: ``x`` ``(sources, n)`` float32 into ``out`` ``(2, n)``."""
        t = self.tables
        k.render(x, out, self.targets, self.state, self.filt, self.ring, self.dhist, self.clock,
                 t.planes, t.faces, t.inverses, t.filters, t.delays)



class Spatializer(Processor):
    """Mono in, binaural stereo out: a voice placed around the listener (HRTF).

    Row 0 of the output is the left ear.  Directions follow SOFA: azimuth 0
    ahead, +90 left, -90 right, 180 behind; elevation +90 above.  A stereo
    input is first mixed to mono (the mean of its channels); other channel
    counts raise ``ValueError``.  ``rotation`` makes the voice circle the
    listener, starting at ``azimuth_deg``, one turn per
    ``rotation_period_s``.  Latency 0; the output outlasts the input by the
    longest delay plus the filter (about 3.5 ms).

    The HRTF set is the bundled KEMAR one unless ``hrtf=`` (an ``Hrtf``,
    such as ``Hrtf.from_sofa(path)``) is given.
    """

    azimuth_deg = Float(0.0, -180.0, 180.0, unit="deg",
                        doc="0 ahead, +90 left, -90 right, 180 behind")
    elevation_deg = Float(0.0, -90.0, 90.0, unit="deg", doc="+90 above, -90 below")
    distance_m = Float(1.0, 0.1, 1000.0, unit="m", doc="distance from the centre of the head")
    reference_distance_m = Float(1.0, 0.1, 100.0, unit="m",
                                 doc="no attenuation up to this distance")
    rolloff = Float(1.0, 0.0, 10.0,
                    doc="beyond the reference: 0 none, 1 inverse distance (-6 dB per doubling)")
    air_absorption = Bool(False, doc="high frequencies fade with distance (air)")
    near_field = Bool(False, doc="wider level difference between the ears for close sources")
    rotation = Choice("off", ("off", "left", "right"),
                      doc="circle the listener: left = counter-clockwise seen from above")
    rotation_period_s = Float(10.0, 1.0, 60.0, unit="s", doc="seconds per turn when rotating")
    channel_independent = False

    arguments = {"hrtf": "an Hrtf set (Python only, e.g. Hrtf.from_sofa(path)); "
                         "default: the bundled MIT KEMAR set"}

    def __init__(self, *, hrtf=None, **params):
        if hrtf is not None and not isinstance(hrtf, Hrtf):
            raise TypeError(f"hrtf must be an Hrtf, got {type(hrtf).__name__}")
        self._hrtf = hrtf
        self._spatial = None
        #: Switch filters and delays at once instead of cross-fading them.  Only
        #: for showing what the cross-fade prevents: it clicks.
        self.instant_switch = False
        super().__init__(**params)

    # -- the HRTF set --------------------------------------------------------
    @property
    def hrtf(self):
        """The ``Hrtf`` in use (at its own rate; processing uses ``at_rate``)."""
        if self._hrtf is None:
            self._hrtf = Hrtf.default()
        return self._hrtf

    @hrtf.setter
    def hrtf(self, value):
        if not isinstance(value, Hrtf):
            raise TypeError(f"hrtf must be an Hrtf, got {type(value).__name__}")
        self._hrtf = value
        if self.sample_rate is not None:
            self._prepare()

    # -- protocol --------------------------------------------------------------
    def _setup(self, sample_rate, num_channels):
        if num_channels > 2:
            raise ValueError(f"Spatializer takes mono audio (or stereo, mixed to mono), "
                             f"got {num_channels} channels")
        super()._setup(sample_rate, num_channels)

    def _prepare(self):
        self._spatial = SpatialState(self.hrtf.at_rate(self.sample_rate), self.sample_rate, 1)
        self._update_targets()

    def _reset(self):
        self._spatial.reset()
        self._update_targets()

    def _param_changed(self, name):
        if name == "rotation" and self.rotation == "off":
            self._spatial.state[0, k.S_PHASE] = 0.0  # back to azimuth_deg
        self._update_targets()

    def _update_targets(self):
        """Write the parameters into the kernel's target row (taken at the next tick)."""
        sp = self._spatial
        sp.clock[k.C_INSTANT] = 1 if self.instant_switch else 0
        t = sp.targets[0]
        t[k.T_ACTIVE] = 1.0
        t[k.T_X:k.T_Z + 1] = _unit(self.azimuth_deg, self.elevation_deg)
        turn = 2.0 * math.pi / (self.rotation_period_s * self.sample_rate)
        t[k.T_RATE] = {"off": 0.0, "left": turn, "right": -turn}[self.rotation]
        t[k.T_GAIN] = distance_gain(self.distance_m, self.reference_distance_m, self.rolloff)
        t[k.T_DISTANCE] = self.distance_m
        t[k.T_NEAR] = sp.hrtf.distance_m if self.near_field else 0.0
        t[k.T_AIR] = self.distance_m if self.air_absorption else 0.0
        t[k.T_DELAY] = 0.0

    def _process(self, block):
        self._spatial.clock[k.C_INSTANT] = 1 if self.instant_switch else 0
        if block.shape[0] == 2:
            mono = (0.5 * (block[0] + block[1])).reshape(1, -1)
        else:
            mono = block
        out = np.empty((2, block.shape[1]), dtype=np.float32)
        self._spatial.render(mono, out)
        return out

    def tail_at(self, sample_rate):
        hrtf = self.hrtf.at_rate(sample_rate)
        return int(math.ceil(hrtf.max_delay + k.BASE_DELAY)) + 8 + hrtf.taps

    # -- where the voice is now --------------------------------------------------
    @property
    def current_direction_deg(self):
        """``(azimuth, elevation)`` in degrees taken at the last tick (the
        rotating position while ``rotation`` is on); ``None`` before audio."""
        if self._spatial is None or self._spatial.state[0, k.S_STARTED] == 0:
            return None
        x, y, z = self._spatial.state[0, k.S_X:k.S_Z + 1]
        return math.degrees(math.atan2(y, x)), math.degrees(math.asin(max(-1.0, min(1.0, z))))


def _unit(azimuth_deg, elevation_deg):
    az = math.radians(azimuth_deg)
    el = math.radians(elevation_deg)
    return (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
