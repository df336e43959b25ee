"""From measured head-related impulse responses to what the spatializer runs.

Each measured response (one direction, one ear) becomes two things:

* an **onset delay** in fractional samples: the lag of the peak of the
  cross-correlation between the response and its minimum-phase version
  (the minimum-phase response has the same magnitude and starts at once, so
  the lag is the response's pure delay);
* a short **minimum-phase filter** with the response's magnitude, made by the
  real-cepstrum (homomorphic) method and cut to a few milliseconds.

Interpolating the delays and the filters separately is what lets the
interaural time difference move smoothly between measured directions:
minimum-phase filters all start at time zero, so mixing two of them does not
comb-filter the way mixing two responses with different onsets would.

Optionally the set is **diffuse-field equalized**: divided by the power
average over all directions and both ears (smoothed to a third of an octave),
which removes the loudspeaker, microphone and ear-canal colouring common to
every direction and keeps what differs between directions.  Below ``low_hz``,
where loudspeaker measurements are unreliable and heads are acoustically
small, each response is held flat at its value at ``low_hz``.

All functions are plain NumPy on arrays whose last axis is time or frequency.
"""

import numpy as np

#: Smallest FFT used for the design (frequency resolution and cepstral
#: aliasing both improve with length; 4096 points at 48 kHz are 11.7 Hz).
DESIGN_FFT = 4096

#: Magnitudes are floored at this fraction of each response's peak before the
#: logarithm of the cepstrum (-100 dB): deep notches stay deep but finite.
MAGNITUDE_FLOOR = 1e-5

#: Taps of each filter that fade out (half a Hann window) when cut.
FADE_FRACTION = 0.25


def next_pow2(n):
    """The smallest power of two >= ``n`` (and >= 1)."""
    return 1 << max(0, int(np.ceil(np.log2(max(1, n)))))


def minimum_phase_spectrum(magnitude, n_fft):
    """The minimum-phase spectrum with ``magnitude`` on the ``rfft`` grid of ``n_fft``.

    ``magnitude``: ``(..., n_fft // 2 + 1)``, linear.  Returns a complex array
    of the same shape (real cepstrum, folded onto positive quefrencies).
    """
    mag = np.asarray(magnitude, dtype=np.float64)
    floor = MAGNITUDE_FLOOR * np.max(mag, axis=-1, keepdims=True)
    cepstrum = np.fft.irfft(np.log(np.maximum(mag, np.maximum(floor, 1e-300))), n_fft, axis=-1)
    half = n_fft // 2
    folded = np.zeros_like(cepstrum)
    folded[..., 0] = cepstrum[..., 0]
    folded[..., 1:half] = 2.0 * cepstrum[..., 1:half]
    folded[..., half] = cepstrum[..., half]
    return np.exp(np.fft.rfft(folded, axis=-1))


def minimum_phase(magnitude, n_fft):
    """Minimum-phase impulse responses ``(..., n_fft)`` with the given magnitudes."""
    return np.fft.irfft(minimum_phase_spectrum(magnitude, n_fft), n_fft, axis=-1)


def onset_delays(spectra, min_phase_spectra, n_fft, upsample=8, chunk=64):
    """Onset delay of each response, in fractional samples.

    ``spectra``: ``rfft`` of the responses with ``n_fft`` points;
    ``min_phase_spectra``: those of their minimum-phase versions (same
    shape).  The cross-correlation is interpolated ``upsample`` times (zero
    padding of the cross-spectrum) and its peak refined by a parabola, so the
    delay is accurate to about a hundredth of a sample.  Returns float64 of
    shape ``spectra.shape[:-1]``.
    """
    lead = spectra.shape[:-1]
    flat = spectra.reshape(-1, spectra.shape[-1])
    flat_min = min_phase_spectra.reshape(-1, spectra.shape[-1])
    n_up = n_fft * upsample
    out = np.empty(flat.shape[0])
    for a in range(0, flat.shape[0], chunk):
        cross = flat[a:a + chunk] * np.conj(flat_min[a:a + chunk])
        corr = np.fft.irfft(cross, n_up, axis=-1) * upsample
        peak = np.argmax(corr, axis=-1)
        rows = np.arange(corr.shape[0])
        left = corr[rows, (peak - 1) % n_up]
        mid = corr[rows, peak]
        right = corr[rows, (peak + 1) % n_up]
        denom = left - 2.0 * mid + right
        shift = np.where(denom < 0.0, 0.5 * (left - right) / np.where(denom < 0, denom, -1.0), 0.0)
        lag = peak + shift
        lag = np.where(lag > n_up / 2, lag - n_up, lag)  # circular: negative lags
        out[a:a + chunk] = lag / upsample
    return out.reshape(lead)


def fractional_octave_smooth(power, freqs, fraction=3):
    """``power`` averaged over a band of 1/``fraction`` octave around each frequency.

    ``power``: ``(K,)`` on the ascending grid ``freqs`` (Hz).  The DC bin is
    kept as it is.
    """
    power = np.asarray(power, dtype=np.float64)
    half = 2.0 ** (0.5 / fraction)
    lo = np.searchsorted(freqs, freqs / half, side="left")
    hi = np.searchsorted(freqs, freqs * half, side="right")
    csum = np.concatenate([[0.0], np.cumsum(power)])
    smooth = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    smooth[0] = power[0]
    return smooth


def diffuse_field_inverse(power, freqs, low_hz, high_hz):
    """The diffuse-field equalizer: 1 / sqrt(``power``) smoothed to 1/3 octave.

    ``power``: ``(K,)`` power average over all directions and ears on the
    grid ``freqs``.  The result is held constant below ``low_hz`` and above
    ``high_hz``.
    """
    average = np.sqrt(fractional_octave_smooth(power, freqs, 3))
    i_lo = int(np.searchsorted(freqs, low_hz))
    i_hi = int(min(np.searchsorted(freqs, high_hz), len(freqs) - 1))
    inverse = 1.0 / np.maximum(average, 1e-12)
    inverse[:i_lo] = inverse[i_lo]
    inverse[i_hi:] = inverse[i_hi]
    return inverse


def hold_below(mags, freqs, low_hz):
    """``mags`` ``(..., K)`` with every response held flat below ``low_hz`` at
    its value there (in place; returned)."""
    i_lo = int(np.searchsorted(freqs, low_hz))
    mags[..., :i_lo] = mags[..., i_lo:i_lo + 1]
    return mags


def high_taper(freqs, start_hz, stop_hz):
    """Gains that fall from 1 at ``start_hz`` to 0 at ``stop_hz`` (half a Hann window).

    Measured responses end in the steep edge of the measuring system's
    anti-aliasing filter; a filter with such an edge rings for a long time
    and so would not fit in a few milliseconds.  Tapering the top of the
    band over a few kilohertz instead keeps the filters short.
    """
    x = np.clip((np.asarray(freqs) - start_hz) / max(stop_hz - start_hz, 1e-9), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * x))


def fade_out(irs, taps):
    """``irs`` cut to ``taps`` samples, the last quarter faded by half a Hann window."""
    out = np.array(irs[..., :taps], dtype=np.float64)
    fade = max(1, int(round(FADE_FRACTION * taps)))
    k = np.arange(1, fade + 1)
    out[..., taps - fade:] *= 0.5 * (1.0 + np.cos(np.pi * k / (fade + 1)))
    return out


def design(irs, sample_rate, taps, *, equalize=True, low_hz=200.0, high_hz=18000.0,
           chunk=256):
    """Onset delays and minimum-phase filters of measured responses.

    ``irs``: ``(..., N)`` impulse responses at ``sample_rate`` Hz.  Returns
    ``(filters, delays)``: float32 ``(..., taps)`` and float64 ``(...)``
    (samples, from the start of each response).  With ``equalize`` the set
    is diffuse-field equalized (``diffuse_field_inverse``), held flat below
    ``low_hz`` (``hold_below``) and tapered above ``high_hz``
    (``high_taper``).  Responses are taken ``chunk`` at a time, so memory does
    not grow with the size of the set.
    """
    irs = np.asarray(irs, dtype=np.float64)
    if taps < 2:
        raise ValueError(f"taps must be at least 2, got {taps}")
    lead, n = irs.shape[:-1], irs.shape[-1]
    flat = irs.reshape(-1, n)
    n_fft = max(DESIGN_FFT, next_pow2(4 * max(n, taps)))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    delays = np.empty(flat.shape[0])
    power = np.zeros(freqs.size)
    for a in range(0, flat.shape[0], chunk):
        spectra = np.fft.rfft(flat[a:a + chunk], n_fft, axis=-1)
        mags = np.abs(spectra)
        delays[a:a + chunk] = onset_delays(spectra, minimum_phase_spectrum(mags, n_fft), n_fft)
        power += np.sum(mags ** 2, axis=0)
    if equalize:
        top = min(high_hz, 0.375 * sample_rate)
        shape = diffuse_field_inverse(power / flat.shape[0], freqs, low_hz, top) \
            * high_taper(freqs, top, min(top + 4000.0, 0.5 * sample_rate))
    filters = np.empty((flat.shape[0], taps), dtype=np.float32)
    for a in range(0, flat.shape[0], chunk):
        mags = np.abs(np.fft.rfft(flat[a:a + chunk], n_fft, axis=-1))
        if equalize:
            mags = hold_below(mags * shape, freqs, low_hz)
        filters[a:a + chunk] = fade_out(minimum_phase(mags, n_fft), taps)
    return filters.reshape(lead + (taps,)), delays.reshape(lead)


def magnitudes_at(filters, sample_rate, freqs, n_fft=8192):
    """Magnitude responses of ``filters`` ``(..., L)`` at ``freqs`` (Hz).

    Evaluated on an ``n_fft`` grid and interpolated linearly; frequencies
    above ``sample_rate / 2`` get the value at the Nyquist frequency.
    """
    n_fft = max(n_fft, next_pow2(filters.shape[-1]))
    mags = np.abs(np.fft.rfft(np.asarray(filters, dtype=np.float64), n_fft, axis=-1))
    pos = np.clip(np.asarray(freqs, dtype=np.float64) * n_fft / sample_rate, 0, mags.shape[-1] - 1)
    i = np.minimum(pos.astype(np.int64), mags.shape[-1] - 2)
    frac = pos - i
    return mags[..., i] * (1.0 - frac) + mags[..., i + 1] * frac


def redesign(filters, sample_rate, new_rate, taps):
    """Minimum-phase filters at ``new_rate`` with the magnitudes of ``filters``.

    Used to run a set designed at one rate at another: the magnitude is
    carried over (held above the old Nyquist frequency) and a new
    minimum-phase filter of ``taps`` taps is made at the new rate.  Doing
    this rather than resampling the filters keeps them minimum phase, with no
    resampler pre-ringing cut off at their start.
    """
    n_fft = max(DESIGN_FFT, next_pow2(4 * taps))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / new_rate)
    mags = magnitudes_at(filters, sample_rate, freqs)
    return fade_out(minimum_phase(mags, n_fft), taps).astype(np.float32)
