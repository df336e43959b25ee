"""Measurements shared by the spatial audio tests."""

import numpy as np
from scipy import signal

#: Third-octave centres from 125 Hz to 16 kHz.
THIRD_OCTAVES = 1000.0 * 2.0 ** (np.arange(-9, 13) / 3.0)


def white_noise(seconds, rate, seed=5, amplitude=0.1):
    """Gaussian white noise, float32."""
    r = np.random.default_rng(seed)
    return (amplitude * r.standard_normal(int(seconds * rate))).astype(np.float32)


def itd_ms(y, rate):
    """Interaural time difference of a binaural pair, in ms: positive when the
    left ear (row 0) leads.  Peak of the full-band cross-correlation, refined
    by a parabola through the three samples around it."""
    left = np.asarray(y[0], dtype=np.float64)
    right = np.asarray(y[1], dtype=np.float64)
    corr = signal.correlate(right, left, mode="full", method="fft")
    lags = signal.correlation_lags(right.size, left.size, mode="full")
    i = int(np.argmax(corr))
    a, b, c = corr[i - 1], corr[i], corr[i + 1]
    shift = 0.5 * (a - c) / (a - 2.0 * b + c)
    return (lags[i] + shift) / rate * 1000.0


def band_levels_db(x, rate, centres=THIRD_OCTAVES, nperseg=8192):
    """Level in dB of each third-octave band around ``centres`` (Welch PSD,
    Hann); ``x`` may be ``(channels, samples)``."""
    f, p = signal.welch(np.asarray(x, dtype=np.float64), rate, nperseg=nperseg, axis=-1)
    out = []
    for c in centres:
        band = (f >= c / 2 ** (1 / 6)) & (f < c * 2 ** (1 / 6))
        out.append(10.0 * np.log10(p[..., band].sum(axis=-1) + 1e-30))
    return np.stack(out, axis=-1)


def rms_db(x):
    """RMS level in dB of each row (or of a 1-D signal)."""
    x = np.asarray(x, dtype=np.float64)
    return 10.0 * np.log10(np.mean(x * x, axis=-1) + 1e-30)


def high_band_re_tone_db(y, rate, split_hz=4000.0):
    """Energy above ``split_hz`` relative to the energy below it, in dB, per
    row: for a pure tone below ``split_hz`` this is how much click and
    modulation noise there is.  Blackman-Harris window, so the tone's own
    leakage is far below -150 dB at 3 kHz distance."""
    y = np.asarray(y, dtype=np.float64)
    w = signal.get_window("blackmanharris", y.shape[-1])
    spec = np.abs(np.fft.rfft(y * w, axis=-1)) ** 2
    f = np.fft.rfftfreq(y.shape[-1], 1.0 / rate)
    return 10.0 * np.log10(spec[..., f > split_hz].sum(axis=-1)
                           / spec[..., f <= split_hz].sum(axis=-1))


def lagrange3(x, delays):
    """Reference fractional delay: ``y[j] = x(j - delays[j])`` by the textbook
    third-order Lagrange formula over the four samples around the delay,
    with the delay's integer part ``I`` and the taps ``I-1 .. I+2``;
    samples before the start are 0.  Slow and obvious."""
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros(len(delays))
    for j, d in enumerate(delays):
        whole = int(np.floor(d))
        frac = d - (whole - 1)  # position among taps at delays whole-1 .. whole+2
        for k in range(4):
            weight = 1.0
            for m in range(4):
                if m != k:
                    weight *= (frac - m) / (k - m)
            idx = j - (whole - 1 + k)
            if 0 <= idx < len(x):
                y[j] += weight * x[idx]
    return y


# ---------------------------------------------------------------- a synthetic SOFA file

HEAD_RADIUS_M = 0.0875
SPEED_OF_SOUND = 343.0


def woodworth_itd_s(azimuth_deg, elevation_deg):
    """Interaural time difference of a rigid sphere (Woodworth's formula),
    seconds, positive when the left ear leads."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    lateral = np.arcsin(np.clip(np.cos(el) * np.sin(az), -1.0, 1.0))
    return HEAD_RADIUS_M / SPEED_OF_SOUND * (lateral + np.sin(lateral))


def sinc_impulse(delay, n):
    """A band-limited (0.45 of the rate) impulse at the fractional ``delay``."""
    t = np.arange(n) - delay
    window = np.where(np.abs(t) < 24, np.cos(np.pi * t / 48) ** 2, 0.0)
    return 0.9 * np.sinc(0.9 * t) * window


def synthetic_hrirs(rate, n=256, step_deg=30):
    """``(azimuth_deg, elevation_deg, irs)``: a spherical-head toy set with
    Woodworth ITDs, a broadband level difference and a duller far ear, on a
    ``step_deg`` grid with one direction at each pole."""
    az, el = [], []
    for e in range(-90, 91, step_deg):
        for a in ([0] if abs(e) == 90 else range(0, 360, step_deg)):
            az.append(float(a))
            el.append(float(e))
    az, el = np.array(az), np.array(el)
    itd = woodworth_itd_s(az, el) * rate
    lateral = np.cos(np.radians(el)) * np.sin(np.radians(az))
    irs = np.zeros((az.size, 2, n))
    base = 40.0
    for i in range(az.size):
        for ear, sign in ((0, 1.0), (1, -1.0)):
            h = sinc_impulse(base - sign * itd[i] / 2.0, n)
            near = sign * lateral[i]               # +1: facing this ear
            h *= 10.0 ** (4.0 * near / 20.0)       # +-4 dB broadband
            if near < 0:                           # head shadow: a one-pole low-pass
                a = 0.6 * -near
                h = signal.lfilter([1.0 - a], [1.0, -a], h)
            irs[i, ear] = h
    return az, el, irs


def write_sofa(path, rate=44100.0, *, n=256, step_deg=30, swap_receivers=False,
               cartesian=False, drop=(), attrs=None, replace=None):
    """Write a SimpleFreeFieldHRIR SOFA file of ``synthetic_hrirs`` with h5py.

    ``swap_receivers`` stores the right ear first (ReceiverPosition says so);
    ``cartesian`` stores SourcePosition as x, y, z; ``drop`` leaves variables
    out; ``attrs`` overrides global attributes; ``replace`` maps variable
    names to arrays written instead.  Returns ``(azimuth_deg, elevation_deg,
    irs)`` as written (left ear first).
    """
    import h5py

    az, el, irs = synthetic_hrirs(rate, n, step_deg)
    stored = irs[:, ::-1] if swap_receivers else irs
    dist = np.full(az.size, 1.2)
    if cartesian:
        a, e = np.radians(az), np.radians(el)
        pos = np.stack([dist * np.cos(e) * np.cos(a), dist * np.cos(e) * np.sin(a),
                        dist * np.sin(e)], axis=1)
        pos_attrs = {"Type": "cartesian", "Units": "metre"}
    else:
        pos = np.stack([az, el, dist], axis=1)
        pos_attrs = {"Type": "spherical", "Units": "degree, degree, metre"}
    ears = np.array([[0.0, 0.0875, 0.0], [0.0, -0.0875, 0.0]])
    if swap_receivers:
        ears = ears[::-1]
    variables = {
        "Data.IR": (stored, {}),
        "Data.SamplingRate": (np.array([rate]), {"Units": "hertz"}),
        "Data.Delay": (np.zeros((1, 2)), {}),
        "SourcePosition": (pos, pos_attrs),
        "ReceiverPosition": (ears[:, :, None], {"Type": "cartesian", "Units": "metre"}),
        "ListenerPosition": (np.zeros((1, 3)), {"Type": "cartesian", "Units": "metre"}),
        "ListenerView": (np.array([[1.0, 0.0, 0.0]]), {"Type": "cartesian", "Units": "metre"}),
    }
    global_attrs = {"Conventions": "SOFA", "Version": "1.0",
                    "SOFAConventions": "SimpleFreeFieldHRIR", "SOFAConventionsVersion": "1.0",
                    "DataType": "FIR", "RoomType": "free field", "Title": "stagevox test head",
                    "License": "CC0"}
    global_attrs.update(attrs or {})
    with h5py.File(path, "w") as f:
        for key, value in global_attrs.items():
            if value is not None:
                f.attrs[key] = np.bytes_(value)
        for name, (data, var_attrs) in variables.items():
            if name in drop:
                continue
            if replace and name in replace:
                data = replace[name]
            ds = f.create_dataset(name, data=data)
            for key, value in var_attrs.items():
                ds.attrs[key] = np.bytes_(value)
    return az, el, irs
