"""Reading head-related impulse responses from SOFA files (AES69).

Only the ``SimpleFreeFieldHRIR`` convention is read: one impulse response per
source direction and ear, measured in free field.  A SOFA file is a
netCDF-4 file, which is an HDF5 file, so ``h5py`` reads it directly.

The variables used (M measurements, R = 2 receivers, N samples):

* ``Data.IR`` ``(M, 2, N)``: the impulse responses;
* ``Data.SamplingRate`` ``(1,)`` or ``(M,)``: in hertz, one rate for all;
* ``Data.Delay`` ``(1, 2)`` or ``(M, 2)``, optional: broadband delays in
  samples that belong in front of the responses;
* ``SourcePosition`` ``(M, 3)`` (or ``(1, 3)``): spherical (azimuth and
  elevation in degrees, distance in metres; azimuth 0 ahead and positive to
  the listener's left, elevation positive up) or cartesian (x ahead, y left,
  z up, metres);
* ``ReceiverPosition`` ``(2, 3[, 1])``, optional: the ear with positive y is
  the left one; without it receiver 0 is taken as the left ear.

Every problem raises ``SofaError`` (a ``ValueError``) whose message starts
with the file name and says what is wrong.
"""

import dataclasses
from pathlib import Path

import numpy as np

from .errors import ParameterError

CONVENTION = "SimpleFreeFieldHRIR"


class SofaError(ParameterError):
    """A file cannot be read as a SOFA SimpleFreeFieldHRIR file."""


@dataclasses.dataclass
class SofaHrir:
    """Impulse responses read from a SOFA file, left ear first.

    ``irs``: float64 ``(M, 2, N)``; ``sample_rate`` in Hz; ``azimuth_deg``,
    ``elevation_deg``, ``distance_m``: ``(M,)`` float64 (SOFA convention);
    ``delays``: ``(M, 2)`` float64, samples to add in front of each response
    (``Data.Delay``); ``attributes``: the file's global attributes as text.
    """

    irs: np.ndarray
    sample_rate: float
    azimuth_deg: np.ndarray
    elevation_deg: np.ndarray
    distance_m: np.ndarray
    delays: np.ndarray
    attributes: dict


def _text(value):
    """An HDF5 attribute as a Python string."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        return _text(value.reshape(-1)[0]) if value.size == 1 else str(value.tolist())
    if value is None or type(value).__name__ == "Empty":
        return ""
    return str(value)


def read_sofa(path):
    """Read the SOFA ``SimpleFreeFieldHRIR`` file ``path``; returns ``SofaHrir``.

    Raises ``SofaError`` naming the file and the problem: missing file, not
    HDF5, not SOFA, another convention or data type, a missing variable,
    wrong shapes, NaN/Inf or all-zero responses, a bad sampling rate.
    """
    import h5py

    p = Path(path)
    label = str(path)
    if not p.exists():
        raise SofaError(f"{label}: no such file")
    if p.is_dir():
        raise SofaError(f"{label}: is a folder, not a SOFA file")
    if not h5py.is_hdf5(str(p)):
        raise SofaError(f"{label}: not an HDF5 file; a SOFA file is netCDF-4/HDF5 "
                        "(a .sofa file saved by a SOFA API)")
    try:
        with h5py.File(str(p), "r") as f:
            return _read(f, label)
    except SofaError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise SofaError(f"{label}: cannot read the SOFA data ({exc})") from None


def _read(f, label):
    attributes = {k: _text(v) for k, v in f.attrs.items()}
    if attributes.get("Conventions") != "SOFA":
        found = attributes.get("Conventions")
        raise SofaError(f"{label}: not a SOFA file: global attribute 'Conventions' is "
                        f"{found!r}, expected 'SOFA'" if found is not None else
                        f"{label}: not a SOFA file: global attribute 'Conventions' is missing")
    convention = attributes.get("SOFAConventions")
    if convention != CONVENTION:
        raise SofaError(f"{label}: SOFA convention {convention!r} is not supported; "
                        f"expected {CONVENTION!r} (head-related impulse responses)")
    data_type = attributes.get("DataType", "FIR")
    if data_type != "FIR":
        raise SofaError(f"{label}: DataType {data_type!r} is not supported; expected 'FIR'")

    def variable(name, required=True):
        if name not in f:
            if required:
                raise SofaError(f"{label}: variable {name!r} is missing "
                                f"({CONVENTION} needs Data.IR, Data.SamplingRate and "
                                "SourcePosition)")
            return None
        obj = f[name]
        if not hasattr(obj, "shape"):
            raise SofaError(f"{label}: {name!r} is a group, expected a variable")
        return obj

    ir_var = variable("Data.IR")
    if ir_var.ndim != 3:
        raise SofaError(f"{label}: Data.IR has shape {ir_var.shape}; expected "
                        "(measurements, 2 receivers, samples)")
    m, r, n = ir_var.shape
    if r != 2:
        raise SofaError(f"{label}: Data.IR has {r} receivers; expected 2 (left and right ear)")
    if m < 1 or n < 1:
        raise SofaError(f"{label}: Data.IR has shape {ir_var.shape}; it holds no responses")
    irs = np.asarray(ir_var[()], dtype=np.float64)
    bad = ~np.isfinite(irs)
    if bad.any():
        i, e, k = np.argwhere(bad)[0]
        raise SofaError(f"{label}: Data.IR[{i}, {e}, {k}] is {irs[i, e, k]}; "
                        "responses must be finite")
    silent = ~np.any(irs != 0.0, axis=2)
    if silent.any():
        i, e = np.argwhere(silent)[0]
        raise SofaError(f"{label}: Data.IR[{i}, {e}] is all zeros (measurement {i}, "
                        f"receiver {e})")

    rate_var = variable("Data.SamplingRate")
    rates = np.asarray(rate_var[()], dtype=np.float64).reshape(-1)
    if rates.size not in (1, m):
        raise SofaError(f"{label}: Data.SamplingRate has {rates.size} values; expected 1 or {m}")
    if not np.all(np.isfinite(rates)) or np.any(rates <= 0):
        raise SofaError(f"{label}: Data.SamplingRate is {rates[0] if rates.size == 1 else rates}; "
                        "expected a positive rate in hertz")
    if np.any(rates != rates[0]):
        raise SofaError(f"{label}: Data.SamplingRate differs between measurements "
                        f"({np.unique(rates)}); one rate is needed")
    units = _text(rate_var.attrs.get("Units", "hertz")).lower()
    if units not in ("hertz", "hz", ""):
        raise SofaError(f"{label}: Data.SamplingRate is in {units!r}; expected 'hertz'")

    az, el, dist = _source_positions(variable("SourcePosition"), m, label)

    delay_var = variable("Data.Delay", required=False)
    delays = np.zeros((m, 2))
    if delay_var is not None:
        d = np.asarray(delay_var[()], dtype=np.float64)
        if d.shape not in ((1, 2), (m, 2)):
            raise SofaError(f"{label}: Data.Delay has shape {d.shape}; expected (1, 2) or ({m}, 2)")
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise SofaError(f"{label}: Data.Delay must hold finite delays >= 0 samples")
        delays[:] = d

    receivers = variable("ReceiverPosition", required=False)
    if receivers is not None:
        pos = np.asarray(receivers[()], dtype=np.float64)
        if pos.ndim == 3:
            pos = pos[:, :, 0]
        if pos.shape != (2, 3):
            raise SofaError(f"{label}: ReceiverPosition has shape {receivers.shape}; "
                            "expected (2, 3) or (2, 3, 1)")
        if pos[0, 1] < 0.0 < pos[1, 1]:  # receiver 0 is on the right: swap
            irs = irs[:, ::-1]
            delays = delays[:, ::-1]
    return SofaHrir(np.ascontiguousarray(irs), float(rates[0]), az, el, dist,
                    np.ascontiguousarray(delays), attributes)


def _source_positions(var, m, label):
    """``(azimuth_deg, elevation_deg, distance_m)`` of every measurement."""
    pos = np.asarray(var[()], dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] not in (1, m):
        raise SofaError(f"{label}: SourcePosition has shape {pos.shape}; expected ({m}, 3)")
    if not np.all(np.isfinite(pos)):
        raise SofaError(f"{label}: SourcePosition holds NaN or Inf")
    pos = np.broadcast_to(pos, (m, 3))
    kind = _text(var.attrs.get("Type", "spherical")).lower()
    if kind == "cartesian":
        x, y, z = pos.T
        dist = np.sqrt(x * x + y * y + z * z)
        if np.any(dist == 0):
            raise SofaError(f"{label}: SourcePosition has a source at the listener's position")
        az = np.degrees(np.arctan2(y, x))
        el = np.degrees(np.arcsin(np.clip(z / dist, -1.0, 1.0)))
    elif kind == "spherical":
        units = _text(var.attrs.get("Units", "degree, degree, metre")).lower()
        if "rad" in units:
            raise SofaError(f"{label}: SourcePosition units {units!r} are not supported; "
                            "expected 'degree, degree, metre'")
        az, el, dist = pos[:, 0].copy(), pos[:, 1].copy(), pos[:, 2].copy()
        if np.any(np.abs(el) > 90.0 + 1e-9):
            raise SofaError(f"{label}: SourcePosition has elevations beyond +-90 degrees")
    else:
        raise SofaError(f"{label}: SourcePosition Type {kind!r} is not supported; "
                        "expected 'spherical' or 'cartesian'")
    return az, el, dist
