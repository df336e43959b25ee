"""Head-related transfer functions: measured directions, filters, delays, interpolation.

An ``Hrtf`` holds, for each measured direction and each ear, a short
minimum-phase filter and an onset delay in samples (see ``hrtf_design``),
at one sample rate.  Directions follow SOFA: azimuth 0 straight ahead and
positive to the listener's left, elevation positive up, in degrees.

* ``Hrtf.default()``: the bundled MIT KEMAR set (normal pinna, 48 kHz,
  diffuse-field equalized; see ``data/README.md``).
* ``Hrtf.from_sofa(path)``: any SOFA ``SimpleFreeFieldHRIR`` file, at any
  sample rate (resampled with soxr).
* ``hrtf.at_rate(rate)``: the same set for processing at another rate.
* ``hrtf.interpolate(azimuth_deg, elevation_deg)``: filters and delays for
  any direction, by barycentric weights on a triangulation of the measured
  directions (their convex hull on the unit sphere).  Where the measurements
  leave a cap of the sphere uncovered (KEMAR has nothing below -40 degrees) a
  virtual direction is added at that pole, with the power-average magnitude
  and the mean delays of the nearest measured ring.
"""

import functools
import json
from collections import namedtuple
from importlib import resources
from pathlib import Path

import numpy as np

from . import hrtf_design
from .audio import check_sample_rate
from .errors import ParameterError
from .lazykernels import kernels
from .sofa import read_sofa

kern = kernels("spatial")

#: Filter length at 48 kHz (2.7 ms); other rates scale it.  See data/README.md
#: for the measurement behind the choice.
DEFAULT_TAPS_48K = 128

#: The bundled data set, inside the package.
DEFAULT_FILE = "kemar_hrtf.npz"

#: Arrays handed to the rendering kernel (see ``kernels.spatial``).
#: ``rows[i]`` is the measured direction of row ``i`` of ``filters``,
#: ``delays`` and ``points`` (the unit vectors), -1 for a virtual pole.
HrtfTables = namedtuple("HrtfTables", "planes faces inverses filters delays rows points")


class HrtfError(ParameterError):
    """HRTF data that cannot be used (the message says why)."""


def unit_vectors(azimuth_deg, elevation_deg):
    """``(..., 3)`` unit vectors (x ahead, y left, z up) of SOFA directions."""
    az = np.radians(np.asarray(azimuth_deg, dtype=np.float64))
    el = np.radians(np.asarray(elevation_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def taps_at(sample_rate):
    """The default filter length at ``sample_rate`` (128 at 48 kHz)."""
    return max(16, int(round(DEFAULT_TAPS_48K * sample_rate / 48000)))


class Hrtf:
    """A set of head-related transfer functions at one sample rate.

    ``azimuth_deg``, ``elevation_deg``: ``(M,)`` measured directions;
    ``filters``: ``(M, 2, L)`` minimum-phase filters, left ear first;
    ``delays``: ``(M, 2)`` onset delays in samples (>= 0);
    ``sample_rate`` in Hz; ``distance_m``: the measuring distance;
    ``metadata``: a dict of text (source, citation, licence...).
    Raises ``HrtfError`` for inconsistent shapes, non-finite values or
    directions that do not surround the listener.
    """

    def __init__(self, azimuth_deg, elevation_deg, filters, delays, sample_rate, *,
                 distance_m=1.0, metadata=None):
        az = np.asarray(azimuth_deg, dtype=np.float64).reshape(-1)
        el = np.asarray(elevation_deg, dtype=np.float64).reshape(-1)
        filters = np.ascontiguousarray(filters, dtype=np.float32)
        delays = np.ascontiguousarray(delays, dtype=np.float64)
        m = az.size
        if el.size != m or filters.ndim != 3 or filters.shape[:2] != (m, 2) \
                or delays.shape != (m, 2):
            raise HrtfError(
                f"HRTF arrays disagree: {m} azimuths, {el.size} elevations, filters "
                f"{filters.shape} (expected ({m}, 2, taps)), delays {delays.shape} "
                f"(expected ({m}, 2))")
        if m < 1 or filters.shape[2] < 2:
            raise HrtfError(f"HRTF needs at least one direction and 2 taps, got filters "
                            f"{filters.shape}")
        for name, a in (("azimuths", az), ("elevations", el), ("filters", filters),
                        ("delays", delays)):
            if not np.all(np.isfinite(a)):
                raise HrtfError(f"HRTF {name} hold NaN or Inf")
        if np.any(np.abs(el) > 90.0 + 1e-6):
            raise HrtfError("HRTF elevations must lie within -90 to 90 degrees")
        if np.any(delays < 0):
            raise HrtfError("HRTF delays must be >= 0 samples")
        if not (np.isfinite(sample_rate) and sample_rate > 0):
            raise HrtfError(f"HRTF sample rate must be positive, got {sample_rate!r}")
        self.azimuth_deg = az
        self.elevation_deg = el
        self.filters = filters
        self.delays = delays
        self.sample_rate = int(round(sample_rate)) if float(sample_rate).is_integer() \
            else float(sample_rate)
        self.distance_m = float(distance_m)
        self.metadata = dict(metadata or {})
        self._tables = None
        self._rates = {}

    # -- construction ----------------------------------------------------------
    @classmethod
    def default(cls):
        """The bundled MIT KEMAR set (48 kHz); loaded once and shared."""
        return _default()

    @classmethod
    def load(cls, path):
        """Read a set saved by ``save`` from ``path`` (an ``.npz`` file).

        Raises ``HrtfError`` (a ``ValueError``) when the file cannot be read
        or was not written by ``save``.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["metadata"])) if "metadata" in data else {}
                return cls(data["azimuth_deg"], data["elevation_deg"], data["filters"],
                           data["delays"], float(data["sample_rate"]),
                           distance_m=float(data["distance_m"]), metadata=meta)
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, HrtfError):
                raise
            raise HrtfError(f"{path}: not an HRTF file saved by Hrtf.save ({exc})") from None

    def save(self, path):
        """Write the set to ``path`` as a compressed float32 ``.npz``.

        ``load(path)`` reads it back; ``OSError`` when the file cannot be written.
        """
        np.savez_compressed(
            path, azimuth_deg=self.azimuth_deg.astype(np.float32),
            elevation_deg=self.elevation_deg.astype(np.float32),
            filters=self.filters.astype(np.float32), delays=self.delays.astype(np.float32),
            sample_rate=np.array(self.sample_rate), distance_m=np.array(self.distance_m),
            metadata=np.array(json.dumps(self.metadata, sort_keys=True)))

    @classmethod
    def from_sofa(cls, path, sample_rate=48000, *, taps=None, equalize=True):
        """Read the SOFA ``SimpleFreeFieldHRIR`` file ``path`` and prepare it for rendering.

        The responses are resampled from the file's rate to ``sample_rate``
        Hz (soxr, very high quality), split into onset delays and
        minimum-phase filters of ``taps`` taps (default: 128 at 48 kHz, in
        proportion at other rates) and, with ``equalize``, diffuse-field
        equalized (see ``hrtf_design``).  Delays are given relative to the
        earliest onset of the set.  Raises ``SofaError`` (a ``ValueError``)
        naming what is wrong with the file.
        """
        import soxr

        rate = check_sample_rate(sample_rate)
        taps = taps_at(rate) if taps is None else int(taps)
        sofa = read_sofa(path)
        irs, delays = sofa.irs, sofa.delays
        if sofa.sample_rate != rate:
            m, _, n = irs.shape
            flat = np.concatenate([irs.reshape(m * 2, n), np.zeros((m * 2, 64))], axis=1)
            irs = np.ascontiguousarray(
                soxr.resample(flat.T, sofa.sample_rate, rate, quality="VHQ").T).reshape(m, 2, -1)
            delays = delays * (rate / sofa.sample_rate)
        filters, onsets = hrtf_design.design(irs, rate, taps, equalize=equalize)
        total = onsets + delays
        total -= total.min()
        attrs = sofa.attributes
        meta = {"source": str(Path(path).name),
                "sofa_sample_rate_hz": f"{sofa.sample_rate:g}",
                "processing": ("resampled to {} Hz (soxr VHQ), onset delays by cross-correlation "
                               "with the minimum-phase response, minimum-phase filters of {} taps"
                               "{}".format(rate, taps, ", diffuse-field equalized, flat below "
                                           "200 Hz" if equalize else ""))}
        for key in ("Title", "DatabaseName", "ListenerShortName", "Organization", "License",
                    "References", "AuthorContact", "Comment"):
            if attrs.get(key):
                meta[key.lower()] = attrs[key]
        return cls(sofa.azimuth_deg, sofa.elevation_deg, filters, total, rate,
                   distance_m=float(np.median(sofa.distance_m)), metadata=meta)

    # -- other rates -----------------------------------------------------------
    def at_rate(self, sample_rate):
        """This set for processing at ``sample_rate`` Hz (cached).

        Delays are scaled; filters are made anew at that rate with the same
        magnitudes (``hrtf_design.redesign``), ``taps_at(rate)`` long.
        """
        rate = check_sample_rate(sample_rate)
        if rate == self.sample_rate:
            return self
        if rate not in self._rates:
            taps = max(16, int(round(self.taps * rate / self.sample_rate)))
            filters = hrtf_design.redesign(self.filters, self.sample_rate, rate, taps)
            self._rates[rate] = Hrtf(self.azimuth_deg, self.elevation_deg, filters,
                                     self.delays * (rate / self.sample_rate), rate,
                                     distance_m=self.distance_m, metadata=self.metadata)
        return self._rates[rate]

    # -- properties ------------------------------------------------------------
    @property
    def taps(self):
        """Length of each filter in samples."""
        return self.filters.shape[2]

    @property
    def max_delay(self):
        """The largest onset delay, in samples."""
        return float(self.delays.max())

    def __repr__(self):
        name = self.metadata.get("title", self.metadata.get("source", ""))
        return (f"Hrtf({self.azimuth_deg.size} directions, {self.taps} taps at "
                f"{self.sample_rate} Hz, {name!r})")

    # -- interpolation ---------------------------------------------------------
    @property
    def tables(self):
        """``HrtfTables`` for the rendering kernel (built once)."""
        if self._tables is None:
            self._tables = _triangulate(self)
        return self._tables

    def weights(self, azimuth_deg, elevation_deg):
        """``(indices, weights)``: three rows of ``tables.filters`` around the
        direction ``azimuth_deg``, ``elevation_deg`` (degrees; azimuth
        positive to the left) and their barycentric weights (>= 0, summing
        to 1); ``tables.rows`` maps rows to measured directions."""
        t = self.tables
        v = unit_vectors(azimuth_deg, elevation_deg)
        idx = np.zeros(3, dtype=np.int64)
        w = np.zeros(3)
        kern.hrtf_weights(t.planes, t.faces, t.inverses, np.ascontiguousarray(v), idx, w)
        return idx, w

    def interpolate(self, azimuth_deg, elevation_deg):
        """``(filters, delays)`` for the direction ``azimuth_deg``,
        ``elevation_deg`` (degrees): float32 ``(2, L)`` and float64 ``(2,)``
        samples, weighted as ``weights`` says."""
        idx, w = self.weights(azimuth_deg, elevation_deg)
        t = self.tables
        filters = np.einsum("i,iek->ek", w.astype(np.float32), t.filters[idx])
        delays = w @ t.delays[idx]
        return filters.astype(np.float32), delays


@functools.lru_cache(maxsize=1)
def _default():
    with resources.as_file(resources.files("stagevox.dsp") / "data" / DEFAULT_FILE) as path:
        return Hrtf.load(path)


def _pole(filters, delays):
    """Filters and delays of a virtual direction: the power-average magnitude
    (made minimum phase) and the mean delays of ``filters`` ``(K, 2, L)`` and
    ``delays`` ``(K, 2)``, the measured directions nearest to it."""
    taps = filters.shape[2]
    n_fft = hrtf_design.next_pow2(8 * taps)
    mags = np.abs(np.fft.rfft(filters.astype(np.float64), n_fft, axis=-1))
    average = np.sqrt(np.mean(mags ** 2, axis=0))
    out = hrtf_design.fade_out(hrtf_design.minimum_phase(average, n_fft), taps)
    return out.astype(np.float32), delays.mean(axis=0)


def _triangulate(hrtf):
    """The convex hull of the measured directions (plus virtual poles) as
    ``HrtfTables``; ``HrtfError`` if the directions do not surround the head."""
    from scipy.spatial import ConvexHull, QhullError

    points = unit_vectors(hrtf.azimuth_deg, hrtf.elevation_deg)
    # Duplicate directions (such as several azimuths at a pole) would give
    # the hull flat faces; keep the first of each.
    _, first = np.unique(np.round(points, 9), axis=0, return_index=True)
    keep = np.sort(first)
    points = points[keep]
    filters, delays = hrtf.filters[keep], hrtf.delays[keep]
    el = hrtf.elevation_deg[keep]
    extra_points, extra_filters, extra_delays = [], [], []
    for sign in (1.0, -1.0):
        if not np.any(points[:, 2] * sign > 1.0 - 1e-9):
            edge = el.max() if sign > 0 else el.min()
            ring = np.flatnonzero(np.abs(el - edge) <= 1.0)
            f, d = _pole(filters[ring], delays[ring])
            extra_points.append([0.0, 0.0, sign])
            extra_filters.append(f)
            extra_delays.append(d)
    rows = np.concatenate([keep, np.full(len(extra_points), -1)]).astype(np.int64)
    if extra_points:
        points = np.concatenate([points, np.array(extra_points)])
        filters = np.concatenate([filters, np.array(extra_filters)])
        delays = np.concatenate([delays, np.array(extra_delays)])
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError) as exc:
        raise HrtfError(f"cannot triangulate the {len(keep)} measured directions: they must "
                        f"surround the listener ({str(exc).splitlines()[0]})") from None
    normals, offsets = hull.equations[:, :3], hull.equations[:, 3]
    if offsets.max() > -1e-6:
        raise HrtfError(f"the {len(keep)} measured directions do not surround the listener: "
                        "some directions fall outside every triangle between them "
                        f"(azimuths {hrtf.azimuth_deg.min():g} to {hrtf.azimuth_deg.max():g}, "
                        f"elevations {el.min():g} to {el.max():g} degrees)")
    faces = np.ascontiguousarray(np.concatenate([hull.simplices, hull.neighbors], axis=1),
                                 dtype=np.int64)
    corners = np.transpose(points[faces[:, :3]], (0, 2, 1))  # columns are the vertices
    inverses = np.ascontiguousarray(np.linalg.inv(corners))
    planes = np.ascontiguousarray(normals / -offsets[:, None])
    # Rows of the kernel's tables must match the indices the hull uses.
    return HrtfTables(planes, faces, inverses, np.ascontiguousarray(filters, dtype=np.float32),
                      np.ascontiguousarray(delays, dtype=np.float64), rows, points)
