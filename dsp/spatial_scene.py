"""The spatial audio engine: remote voices placed around a listener in a shared world.

``SpatialScene`` follows the well-known live-audio SDK's spatial audio engine
(``updateSelfPosition``, ``updateRemotePosition``, ``setAudioRecvRange``,
``setZones``, ...) in snake_case.  The listener and every remote speaker have
positions in world coordinates (in *units*, ``set_distance_unit`` metres each;
the three coordinates are forward, right and up by default, but any frame
works since the listener's axes are given explicitly).  ``render`` takes one
mono frame per speaker and returns the binaural stereo mix: each voice goes
through the HRTF of its direction as seen from the listener's head, fades
with distance, and moves without clicks (see ``kernels.spatial``); all
voices are rendered in one kernel call, which filters them by FFT and sums
their spectra, so a frame costs two real FFTs per voice and at most six inverse
FFTs for the whole scene (``kernels.spatial.render_mix``), with no added
latency.

Who is heard: speakers with a position (``update_remote_position``), not
muted, within ``set_audio_recv_range``, and among the
``set_max_audio_recv_count`` nearest of those.  Frames of a uid without a
position are ignored.

Attenuation (as the SDK's ``audioAttenuation``): a number from 0 to 1 that
sets how fast a voice fades with distance beyond ``reference_distance_m``:
0 not at all ("broadcast"), 0.5 like in air (inverse distance, -6 dB per
doubling; the default), 1 twice as fast (-12 dB per doubling).  The
roll-off factor is ``2 * attenuation``; air absorption, when on, scales with
it too.  Zones (``Zone``) are boxes: when the listener and a speaker are not
in the same zone, the voice uses the attenuation of the listener's zone (or,
for a listener outside every zone, of the speaker's zone), unless
``set_remote_audio_attenuation(..., force=True)`` fixed the speaker's own.

Optional per speaker (``set_remote_spatial_params``): Doppler (the voice is
delayed by its current distance over the speed of sound, so a voice whose
distance changes at ``v`` m/s is heard at ``1 - v / c`` times its pitch, the
physical shift to first order in ``v / c``), air absorption, and directivity
(``update_remote_position(..., forward=...)``: a speaker facing away from
the listener is ``directivity_db`` quieter).
"""

import dataclasses
import functools
import math

import numpy as np

from .audio import as_block, check_sample_rate
from .hrtf import Hrtf
from .lazykernels import kernels, load_all
from .spatializer import SpatialState

k = kernels("spatial")
kcommon = kernels("common")

#: Default attenuation (the SDK's "as in real life").
DEFAULT_ATTENUATION = 0.5

#: Segments (the samples of one call between two ticks) of at least this
#: fraction of a tick are filtered by FFT, shorter ones directly: the FFT
#: costs the same for any length, the direct filter less for short pieces
#: (measured with 17 speakers at 48 kHz: about even at half a tick, the FFT
#: 15 % cheaper for whole ticks).
FFT_MIN_TICK = 2 / 3

#: Per-speaker arrays of a scene, one row per slot: name -> (dtype, shape of
#: a row, value of a fresh slot).  ``_leaving`` counts the samples a removed
#: speaker still renders (its fade and tail), -1 for a present one; -1 in
#: ``_doppler``/``_air`` means the scene's default.
_SLOT_FIELDS = {
    "_pos": (np.float64, (3,), 0.0),
    "_fwd": (np.float64, (3,), 0.0),
    "_has_fwd": (bool, (), False),
    "_atten": (np.float64, (), DEFAULT_ATTENUATION),
    "_force": (bool, (), False),
    "_muted": (bool, (), False),
    "_used": (bool, (), False),
    "_leaving": (np.int64, (), -1),
    "_doppler": (np.int8, (), -1),
    "_air": (np.int8, (), -1),
}


def _fft_size(n):
    """The smallest even ``2**a * 3**b * 5**c`` >= ``n`` (sizes the real FFT does fastest)."""
    best = 1 << max(1, (n - 1).bit_length())
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            size = 2 * p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 5
        p3 *= 3
    return best


@functools.lru_cache(maxsize=4)
def _hrtf_spectra(hrtf, n_fft):
    """Real and imaginary parts, each ``(M, 2, n_fft // 2 + 1)`` float32, of
    the spectra of the kernel's HRTF filters (``hrtf.tables``)."""
    spectra = np.fft.rfft(hrtf.tables.filters.astype(np.float64), n_fft, axis=-1)
    return (np.ascontiguousarray(spectra.real, dtype=np.float32),
            np.ascontiguousarray(spectra.imag, dtype=np.float32))


class SceneState(SpatialState):
    """``SpatialState`` for ``kernels.spatial.render_mix``: also each source's
    filter spectra, for the FFT of the whole scene."""

    def __init__(self, hrtf, sample_rate, sources, max_extra_delay=0.0):
        super().__init__(hrtf, sample_rate, sources, max_extra_delay)
        self.n_fft = _fft_size(self.tick + hrtf.taps - 1)
        self.spectra = _hrtf_spectra(hrtf, self.n_fft)
        bins = self.n_fft // 2 + 1
        self.spec_re = np.zeros((sources, 2, 2, bins), dtype=np.float32)
        self.spec_im = np.zeros((sources, 2, 2, bins), dtype=np.float32)
        #: The kernel's FFT input and output, one row per source and ear (kept
        #: from call to call: new ones each call cost more in page faults than
        #: the FFTs).
        self.fft_in = np.zeros((2 * sources, self.n_fft), dtype=np.float32)
        self.fft_out = np.zeros((2 * sources, bins), dtype=np.complex64)
        #: Shortest segment filtered by FFT, in samples.
        self.fft_min = max(1, int(FFT_MIN_TICK * self.tick))
        t = self.tables
        # the kernel's arrays after x and out, gathered once (a frame's call
        # then costs no attribute look-ups; all are updated in place)
        self._arrays = (self.targets, self.state, self.filt, self.spec_re, self.spec_im,
                        self.ring, self.dhist, self.clock, t.planes, t.faces, t.inverses,
                        t.filters, t.delays, self.spectra[0], self.spectra[1], self.fft_in,
                        self.fft_out)

    def clear(self, slot=None):
        super().clear(slot)
        rows = slice(None) if slot is None else slice(slot, slot + 1)
        self.spec_re[rows] = 0.0
        self.spec_im[rows] = 0.0

    def render(self, x, out):
        """Run the kernel: ``x`` ``(sources, n)`` float32 into ``out`` ``(2, n)``."""
        k.render_mix(x, out, *self._arrays, self.fft_min)


_FLOAT32 = np.dtype(np.float32)


def _vector(value, name):
    """``value`` as a tuple of 3 finite floats (``ValueError`` naming ``name``)."""
    try:
        x, y, z = value
        x = float(x)
        y = float(y)
        z = float(z)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers (forward, right, up), got {value!r}") \
            from None
    # v - v is 0 for a finite v and NaN for NaN or Inf: one test for all three
    if (x - x) + (y - y) + (z - z) != 0.0:
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return x, y, z


def _direction(value, name):
    """``value`` scaled to unit length (``ValueError`` for the zero vector)."""
    x, y, z = _vector(value, name)
    length = math.sqrt(x * x + y * y + z * z)
    if length < 1e-12:
        raise ValueError(f"{name} must not be the zero vector")
    return (x / length, y / length, z / length)


def _attenuation(value, name="attenuation"):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


@dataclasses.dataclass
class Zone:
    """A box-shaped sound-insulation zone (the SDK's ``SpatialAudioZone``).

    ``position``: the centre (units); ``forward``, ``right``, ``up``: its
    axes (normalised here); ``forward_length``, ``right_length``,
    ``up_length``: its size along them (units);
    ``attenuation``: 0 to 1, used for voices that cross its walls (see the
    module docstring); ``zone_id``: free for the caller.
    """

    position: tuple
    forward: tuple
    right: tuple
    up: tuple
    forward_length: float
    right_length: float
    up_length: float
    attenuation: float = 1.0
    zone_id: int = 0

    def __post_init__(self):
        self.position = np.array(_vector(self.position, "Zone.position"))
        self.forward = np.array(_direction(self.forward, "Zone.forward"))
        self.right = np.array(_direction(self.right, "Zone.right"))
        self.up = np.array(_direction(self.up, "Zone.up"))
        for name in ("forward_length", "right_length", "up_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not (0 < float(v) < math.inf):
                raise ValueError(f"Zone.{name} must be a positive length, got {v!r}")
            setattr(self, name, float(v))
        self.attenuation = _attenuation(self.attenuation, "Zone.attenuation")

    def contains(self, points):
        """Whether each of ``points`` lies in the box (walls included).

        ``points``: an array ``(..., 3)`` in units; returns booleans ``(...)``.
        """
        rel = np.asarray(points, dtype=np.float64) - self.position
        return ((np.abs(rel @ self.forward) <= self.forward_length / 2)
                & (np.abs(rel @ self.right) <= self.right_length / 2)
                & (np.abs(rel @ self.up) <= self.up_length / 2))


class SpatialScene:
    """Remote voices rendered binaurally around a listener (see the module docstring).

    ``hrtf``: an ``Hrtf`` (default: the bundled KEMAR set).
    ``reference_distance_m``: no attenuation up to this distance (metres).
    ``air_absorption``, ``doppler``: defaults for every speaker.
    ``directivity_db``: how much quieter a speaker facing away is (0 = off).
    ``near_field``: widen the level difference of voices closer than the
    HRTF's measuring distance.  ``speed_of_sound`` in m/s; ``max_delay_s``:
    the longest travel time kept for Doppler (farther voices are not delayed
    more).  Raises ``TypeError`` for an ``hrtf`` that is not an ``Hrtf`` and
    ``ValueError`` for a number out of range.
    """

    def __init__(self, hrtf=None, *, reference_distance_m=1.0, air_absorption=True,
                 doppler=False, directivity_db=6.0, near_field=False, speed_of_sound=343.0,
                 max_delay_s=0.25):
        load_all()  # the kernels, now rather than on the first (live) frame
        if hrtf is not None and not isinstance(hrtf, Hrtf):
            raise TypeError(f"hrtf must be an Hrtf, got {type(hrtf).__name__}")
        for name, v, lo in (("reference_distance_m", reference_distance_m, 1e-3),
                            ("speed_of_sound", speed_of_sound, 1.0),
                            ("max_delay_s", max_delay_s, 0.0),
                            ("directivity_db", directivity_db, 0.0)):
            if not (isinstance(v, (int, float)) and lo <= v < math.inf):
                raise ValueError(f"{name} must be a finite number >= {lo:g}, got {v!r}")
        self._hrtf = hrtf
        self.reference_distance_m = float(reference_distance_m)
        self.air_absorption = bool(air_absorption)
        self.doppler = bool(doppler)
        self.directivity_db = float(directivity_db)
        self.near_field = bool(near_field)
        self.speed_of_sound = float(speed_of_sound)
        self.max_delay_s = float(max_delay_s)
        self._unit = 1.0
        self._range = math.inf
        self._max_count = None
        self._zones = []
        self._self_pos = np.zeros(3)
        self._axes = np.eye(3)  # rows: forward, right, up
        self._slots = {}        # uid -> slot, for speakers with a position
        self._free = []
        self._capacity = 0
        self._rate = None
        self._spatial = None
        self._leaving_count = 0  # slots whose _leaving is >= 0
        self._x = np.zeros((0, 0), dtype=np.float32)
        self._x_rows = set()  # the rows of _x that may hold samples (the others are zeros)
        self._settings = np.zeros(k.N_SETTINGS)
        self._settings_items = memoryview(self._settings)
        self._grow(8)

    # -- slots -------------------------------------------------------------------
    def _grow(self, capacity):
        """Make room for ``capacity`` speakers, keeping everything so far."""
        old = self._capacity
        for name, (dtype, tail, fill) in _SLOT_FIELDS.items():
            grown = np.full((capacity,) + tail, fill, dtype=dtype)
            if old:
                grown[:old] = getattr(self, name)
            setattr(self, name, grown)
        # flat views of the arrays update_remote_position writes, item by item
        self._pos_items = memoryview(self._pos.reshape(-1))
        self._fwd_items = memoryview(self._fwd.reshape(-1))
        self._has_fwd_items = memoryview(self._has_fwd)
        if self._spatial is not None:
            previous = self._spatial
            self._spatial = self._new_state(capacity)
            for name in ("targets", "state", "filt", "spec_re", "spec_im", "ring", "dhist"):
                getattr(self._spatial, name)[:old] = getattr(previous, name)
            self._spatial.clock[:] = previous.clock
        self._free.extend(range(old, capacity))
        self._capacity = capacity

    def _new_state(self, capacity):
        hrtf = self.hrtf.at_rate(self._rate)
        extra = self.max_delay_s * self._rate
        return SceneState(hrtf, self._rate, capacity, max_extra_delay=extra)

    def _slot(self, uid, create):
        slot = self._slots.get(uid)
        if slot is None and create:
            if not self._free:
                self._grow(2 * self._capacity)
            slot = self._free.pop(0)
            self._slots[uid] = slot
            for name, (_, _, fill) in _SLOT_FIELDS.items():
                getattr(self, name)[slot] = fill
            self._used[slot] = True
            if self._spatial is not None:
                self._spatial.clear(slot)
        return slot

    @property
    def hrtf(self):
        """The ``Hrtf`` in use."""
        if self._hrtf is None:
            self._hrtf = Hrtf.default()
        return self._hrtf

    # -- the SDK's calls ------------------------------------------------------------
    def update_self_position(self, position, forward, right, up):
        """Set the listener's ``position`` (units) and head axes.

        ``forward``, ``right``, ``up``: 3 numbers each, normalised here.
        Raises ``ValueError`` for a vector that is not 3 finite numbers or
        has zero length.
        """
        pos = np.array(_vector(position, "position"))
        axes = np.array([_direction(forward, "forward"), _direction(right, "right"),
                         _direction(up, "up")])
        self._self_pos, self._axes = pos, axes

    def update_remote_position(self, uid, position, forward=None):
        """Place speaker ``uid`` at ``position`` (units), facing ``forward`` (or
        with no directivity when ``None``).  A new uid is added.

        Raises ``ValueError`` for a vector that is not 3 finite numbers, or a
        zero ``forward``.
        """
        x, y, z = _vector(position, "position")
        if forward is not None:
            fx, fy, fz = _vector(forward, "forward")
            if fx * fx + fy * fy + fz * fz < 1e-24:
                raise ValueError("forward must not be the zero vector")
        slot = self._slots.get(uid)
        if slot is None:
            slot = self._slot(uid, True)
        # through the memoryviews of _grow: a tenth of NumPy's cost per item
        i = 3 * slot
        if forward is None:
            self._has_fwd_items[slot] = False
        else:
            fwd = self._fwd_items
            fwd[i] = fx  # normalised by the kernel
            fwd[i + 1] = fy
            fwd[i + 2] = fz
            self._has_fwd_items[slot] = True
        pos = self._pos_items
        pos[i] = x
        pos[i + 1] = y
        pos[i + 2] = z

    def remove_remote_position(self, uid):
        """Stop hearing ``uid`` (its voice fades out over 10 ms).

        Unknown uids are ignored.
        """
        slot = self._slots.pop(uid, None)
        if slot is None:
            return
        if self._spatial is None:
            self._release(slot)
        else:  # keep rendering until the fade and the delayed tail are over
            sp = self._spatial
            self._leaving[slot] = 2 * sp.tick + int(sp.max_delay) + sp.hrtf.taps
            self._leaving_count += 1

    def clear_remote_positions(self):
        """Remove every speaker."""
        for uid in list(self._slots):
            self.remove_remote_position(uid)

    def set_audio_recv_range(self, range):
        """Hear only speakers within ``range`` units (``inf``: everyone).

        Raises ``ValueError`` unless ``range`` is a positive number.
        """
        if isinstance(range, bool) or not isinstance(range, (int, float, np.integer,
                                                             np.floating)) or not range > 0:
            raise ValueError(f"range must be a positive distance in units, got {range!r}")
        self._range = float(range)

    def set_distance_unit(self, metres_per_unit):
        """Set how many metres one unit of position is (1 by default).

        ``metres_per_unit``: a positive finite number; ``ValueError`` otherwise.
        """
        if isinstance(metres_per_unit, bool) or not isinstance(
                metres_per_unit, (int, float, np.integer, np.floating)) \
                or not (0 < metres_per_unit < math.inf):
            raise ValueError(f"metres_per_unit must be a positive number, got {metres_per_unit!r}")
        self._unit = float(metres_per_unit)

    def set_max_audio_recv_count(self, n):
        """Hear at most the ``n`` nearest speakers in range (``None``: no limit).

        Raises ``ValueError`` unless ``n`` is a whole number >= 0 or ``None``.
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                              or n < 0):
            raise ValueError(f"n must be a whole number >= 0 or None, got {n!r}")
        self._max_count = None if n is None else int(n)

    def set_zones(self, zones):
        """Set the sound-insulation zones (a list of ``Zone``, or of dicts of
        its fields); an empty list removes them.  The first zone that holds a
        point is that point's zone.  Raises ``ValueError`` for an item that
        is neither, or a dict with unknown fields."""
        out = []
        for i, z in enumerate(zones or []):
            if isinstance(z, Zone):
                out.append(z)
            elif isinstance(z, dict):
                try:
                    out.append(Zone(**z))
                except TypeError as exc:
                    raise ValueError(f"zones[{i}]: {exc}") from None
            else:
                raise ValueError(f"zones[{i}] must be a Zone or a dict, got {type(z).__name__}")
        self._zones = out

    def set_remote_audio_attenuation(self, uid, attenuation, force=False):
        """Set the ``attenuation`` of ``uid`` (0 to 1, see the module
        docstring); with ``force`` it also applies across zone walls."""
        slot = self._known(uid)
        self._atten[slot] = _attenuation(attenuation)
        self._force[slot] = bool(force)

    def mute_remote_audio(self, uid, mute):
        """Mute (``mute`` True) or unmute (False) speaker ``uid``.

        The change fades over 10 ms.
        """
        self._muted[self._known(uid)] = bool(mute)

    def set_remote_spatial_params(self, uid, *, doppler=None, air_absorption=None):
        """Turn Doppler and air absorption on or off for speaker ``uid``.

        ``doppler``, ``air_absorption``: True, False, or ``None`` for the
        scene's default.
        """
        slot = self._known(uid)
        self._doppler[slot] = -1 if doppler is None else int(bool(doppler))
        self._air[slot] = -1 if air_absorption is None else int(bool(air_absorption))

    def _known(self, uid):
        slot = self._slots.get(uid)
        if slot is None:
            raise KeyError(f"no speaker {uid!r}; call update_remote_position first")
        return slot

    # -- rendering -----------------------------------------------------------------
    def gains(self):
        """``{uid: gain}`` that ``render`` applies now (0 for speakers not heard)."""
        targets = np.zeros((self._capacity, k.N_TARGETS))
        self._targets(targets, 48000 if self._rate is None else self._rate, 0.0)
        return {uid: float(targets[slot, k.T_GAIN]) for uid, slot in self._slots.items()}

    def _attenuations(self):
        """Each slot's attenuation, with the zones applied (see the module docstring)."""
        if not self._zones:
            return self._atten
        atten = self._atten.copy()
        listener = next((i for i, z in enumerate(self._zones)
                         if z.contains(self._self_pos)), -1)
        where = np.full(self._capacity, -1)
        for i in range(len(self._zones) - 1, -1, -1):
            where[self._zones[i].contains(self._pos)] = i
        crossing = (where != listener) & ~self._force
        zone_of = np.where(listener >= 0, listener, where)
        for i, z in enumerate(self._zones):
            atten[crossing & (zone_of == i)] = z.attenuation
        return atten

    def _targets(self, targets, rate, near_m):
        """Fill ``targets`` (every column) for rendering at ``rate`` Hz."""
        g = self._settings_items  # item writes: a third of a new array's cost
        g[k.G_UNIT] = self._unit
        g[k.G_DIRECTIVITY] = self.directivity_db
        g[k.G_REFERENCE] = self.reference_distance_m
        g[k.G_RANGE] = self._range
        g[k.G_MAX_COUNT] = -1 if self._max_count is None else self._max_count
        g[k.G_NEAR] = near_m
        g[k.G_AIR] = self.air_absorption
        g[k.G_DOPPLER] = self.doppler
        g[k.G_SPEED] = self.speed_of_sound
        g[k.G_MAX_DELAY] = self.max_delay_s
        g[k.G_RATE] = rate
        k.scene_targets(self._pos, self._self_pos, self._axes, self._fwd, self._has_fwd,
                        self._used, self._muted, self._leaving, self._attenuations(), self._air,
                        self._doppler, self._settings, targets)

    def render(self, frames, sample_rate):
        """Mix one frame per speaker into a binaural stereo frame at ``sample_rate`` (Hz).

        ``frames``: ``{uid: mono frame}`` (1-D or ``(1, n)``, all the same
        length; uids without a position are ignored, speakers without a
        frame are silent).  Returns float32 ``(2, n)``, row 0 the left ear.
        Raises ``ValueError`` for frames of different lengths, with more than
        one channel, or with NaN/Inf.
        """
        if sample_rate != self._rate or self._spatial is None:
            rate = check_sample_rate(sample_rate)
            if rate != self._rate or self._spatial is None:
                self._rate = rate
                self._spatial = self._new_state(self._capacity)
        slots = self._slots
        x = None
        n = 0
        rows = self._x_rows
        filled = set()
        for uid, a in frames.items():
            if not (type(a) is np.ndarray and a.dtype is _FLOAT32 and a.ndim == 1):
                block, _ = as_block(a)
                if block.shape[0] != 1:
                    raise ValueError(f"frame of {uid!r} has {block.shape[0]} channels; "
                                     "speakers are mono")
                a = block[0]
            if x is None:
                n = a.shape[0]
                x = self._input(n)
                rows = self._x_rows
            elif a.shape[0] != n:
                raise ValueError(f"frames differ in length: {uid!r} has {a.shape[0]} "
                                 f"samples, others {n}")
            slot = slots.get(uid)
            if slot is not None:
                x[slot] = a
                rows.add(slot)
                filled.add(slot)
        if x is None:
            x = self._input(0)
            rows = self._x_rows
        if len(filled) != len(rows):  # speakers without a frame are silent
            for slot in rows - filled:
                x[slot] = 0.0
            rows.intersection_update(filled)
        bad = kcommon.first_non_finite(x)
        if bad >= 0:
            slot, i = divmod(int(bad), x.shape[1])
            uid = next(u for u, s in slots.items() if s == slot)
            raise ValueError(f"frame of {uid!r} contains {x[slot, i]} at sample {i}; "
                             "only finite samples can be rendered")
        sp = self._spatial
        self._targets(sp.targets, self._rate, sp.hrtf.distance_m if self.near_field else 0.0)
        out = np.empty((2, n), dtype=np.float32)
        sp.render(x, out)
        if self._leaving_count:
            self._retire(n)
        return out

    def _input(self, n):
        """The kernel's input ``(capacity, n)``: an array kept from frame to
        frame (a new one each frame costs more in page faults than the
        copies), zeros except the rows in ``_x_rows``."""
        x = self._x
        if x.shape != (self._capacity, n):
            x = self._x = np.zeros((self._capacity, n), dtype=np.float32)
            self._x_rows = set()
        return x

    def _retire(self, n):
        """Free the slots of removed speakers whose voice has died away."""
        for slot in np.flatnonzero(self._leaving >= 0):
            self._leaving[slot] = max(0, self._leaving[slot] - n)
            if self._leaving[slot] == 0:
                self._release(slot)

    def _release(self, slot):
        if self._leaving[slot] >= 0:
            self._leaving_count -= 1
        self._used[slot] = False
        self._leaving[slot] = -1
        if self._spatial is not None:
            self._spatial.clear(slot)
            self._spatial.targets[slot] = 0.0
        self._free.append(int(slot))
        self._free.sort()

    def reset(self):
        """Clear all audio state (positions and settings are kept)."""
        if self._spatial is not None:
            self._spatial.reset()

    @property
    def speakers(self):
        """The uids that have a position."""
        return list(self._slots)
