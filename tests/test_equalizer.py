"""The 10-band voice equalizer (dsp.Equalizer).

Acceptance criterion: a band set alone to a gain measures that gain at its
centre within 0.5 dB, measured by filtering a sine through the processor at
48 kHz.  The design itself (``sosfreqz`` of its sections) is held to the RBJ
peaking filter's exact centre gain.
"""

import math

import numpy as np
import pytest
from scipy import signal

from stagevox.dsp import BAND_CENTERS_HZ, Equalizer, PeakFilter
from stagevox.dsp.biquad import to_sos
from signals import tone, tone_amplitude

#: The stated acceptance criterion for a band's gain at its centre.
ACCEPT_DB = 0.5
#: The design: an RBJ bell has exactly its gain at its centre (rounding only).
DESIGN_DB = 0.01
#: A flat equalizer is transparent: float64 arithmetic, float32 output.
FLAT_ABS = 1e-6




def rms_db(y):
    return 10 * np.log10(np.mean(np.asarray(y, np.float64) ** 2))


def one_band(index, gain):
    gains = [0.0] * 10
    gains[index] = gain
    return gains


@pytest.mark.parametrize("gain", [12.0, -12.0, 15.0, -15.0])
@pytest.mark.parametrize("index", range(10))
def test_band_alone_measures_its_gain_at_its_centre(index, gain):
    """Each band alone at +-12 and +-15 dB: a sine at the band's centre comes out
    ``gain`` dB louder (RMS after a 1 s transient, and the fitted sine amplitude)
    within 0.5 dB; the designed sections give the gain within 0.01 dB."""
    fs = 48000
    centre = BAND_CENTERS_HZ[index]
    eq = Equalizer(gains_db=one_band(index, gain))
    _, h = signal.sosfreqz(to_sos(np.asarray(eq.design(fs))), worN=[centre], fs=fs)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(gain, abs=DESIGN_DB)

    x = tone(centre, fs, 2.0)
    y = eq.process(x, fs)
    steady = slice(fs, None)  # 1 s: 31 cycles of the lowest band, far past its transient
    assert rms_db(y[steady]) - rms_db(x[steady]) == pytest.approx(gain, abs=ACCEPT_DB)
    measured = 20 * np.log10(tone_amplitude(y[steady], centre, fs)
                             / tone_amplitude(x[steady], centre, fs))
    assert measured == pytest.approx(gain, abs=ACCEPT_DB)


@pytest.mark.parametrize("fs", [16000, 32000, 44100, 48000])
def test_each_band_is_a_one_octave_peak_filter(fs):
    """Every active band is an RBJ bell at its centre with a one-octave bandwidth
    (Q = sqrt(2)): the same response as a PeakFilter built by hand."""
    gains = [(-1) ** i * (3.0 + i) for i in range(10)]
    eq = Equalizer(gains_db=gains)
    rows = eq.design(fs)
    assert len(rows) == 10
    for centre, gain, row in zip(BAND_CENTERS_HZ, gains, rows):
        if centre > 0.45 * fs:
            continue
        ref = PeakFilter(frequency_hz=centre, gain_db=gain, q=math.sqrt(2)).design(fs)[0]
        np.testing.assert_allclose(row, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fs", [16000, 32000])
def test_bands_above_045_fs_have_no_effect(fs, rng):
    """At 16 kHz (bands 8 kHz and 16 kHz) and 32 kHz (band 16 kHz) the bands
    centred above 0.45 fs do nothing: boosting them changes no sample, with or
    without the other bands set.  A band below the limit does change the output."""
    excluded = [i for i, f in enumerate(BAND_CENTERS_HZ) if f > 0.45 * fs]
    assert excluded == ([8, 9] if fs == 16000 else [9])
    x = (0.1 * rng.standard_normal(fs)).astype(np.float32)

    for others in ([0.0] * 10, list(rng.uniform(-15, 15, 10))):
        base = [0.0 if i in excluded else g for i, g in enumerate(others)]
        boosted = [15.0 if i in excluded else g for i, g in enumerate(others)]
        y_base = Equalizer(gains_db=base).process(x, fs)
        y_boost = Equalizer(gains_db=boosted).process(x, fs)
        np.testing.assert_array_equal(y_boost, y_base)

    # Control: the highest band still inside the limit is active.
    active = excluded[0] - 1
    y = Equalizer(gains_db=one_band(active, 15.0)).process(x, fs)
    assert np.abs(y - x).max() > 0.01


@pytest.mark.parametrize("fs", [16000, 44100, 48000])
def test_flat_equalizer_is_transparent(fs, speech):
    """All bands at 0 dB: output == input within 1e-6, stereo too."""
    x = np.ascontiguousarray(np.stack([speech[:fs * 3], speech[fs:fs * 4]]))
    y = Equalizer().process(x, fs)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, rtol=0, atol=FLAT_ABS)


def test_set_band_changes_one_band():
    """set_band(i, g) sets band i only; the change shows in the output."""
    eq = Equalizer(gains_db=[1.0] * 10)
    eq.set_band(3, 6.5)
    assert eq.gains_db == (1.0, 1.0, 1.0, 6.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    eq.set_band(0, -15)
    eq.set_band(9, 15)
    assert eq.gains_db[0] == -15.0 and eq.gains_db[9] == 15.0
    assert eq.params()["gains_db"][3] == 6.5

    fs = 48000
    eq = Equalizer()
    eq.set_band(5, 12.0)
    x = tone(1000.0, fs, 1.0)
    y = eq.process(x, fs)
    assert rms_db(y[fs // 2:]) - rms_db(x[fs // 2:]) == pytest.approx(12.0, abs=ACCEPT_DB)


@pytest.mark.parametrize("index", [-1, 10, 2.5, True, "3", None])
def test_set_band_rejects_bad_index(index):
    eq = Equalizer()
    with pytest.raises(ValueError, match="band index .* must be 0 to 9"):
        eq.set_band(index, 3.0)
    assert eq.gains_db == (0.0,) * 10


@pytest.mark.parametrize("gain", [15.01, -15.5, 30.0, float("nan"), float("inf"), "3", None])
def test_set_band_rejects_bad_gain(gain):
    eq = Equalizer()
    with pytest.raises(ValueError, match="from -15 to 15 dB"):
        eq.set_band(4, gain)
    assert eq.gains_db == (0.0,) * 10


@pytest.mark.parametrize("gains", [[0.0] * 9, [0.0] * 11, [16.0] + [0.0] * 9, "flat"])
def test_gains_db_validation(gains):
    with pytest.raises(ValueError, match="Equalizer.gains_db"):
        Equalizer(gains_db=gains)


def test_set_band_while_streaming_is_smooth_and_reaches_the_gain():
    """Moving a band while streaming: no step in the output larger than the
    louder steady state's, and the new gain is reached (within 0.5 dB)."""
    fs = 48000
    x = tone(1000.0, fs, 1.0, amplitude=0.2)
    at = int(0.3 * fs) + 12  # on a crest of the 1 kHz tone
    eq = Equalizer()
    y = np.concatenate([eq.process(x[:at], fs), (eq.set_band(5, 15.0), eq.process(x[at:], fs))[1]])
    jumps = np.abs(np.diff(y.astype(np.float64)))
    steady = max(jumps[at - 4800:at - 960].max(), jumps[-4800:].max())
    assert jumps[at - 960:at + 4800].max() <= 1.1 * steady  # see test_filters.JUMP_RATIO
    tail = slice(at + fs // 4, None)
    assert rms_db(y[tail]) - rms_db(x[tail]) == pytest.approx(15.0, abs=ACCEPT_DB)


def test_nan_block_is_refused_without_touching_the_state(rng):
    """The cascade kernel scans for NaN/Inf before filtering: a refused block
    leaves the stream exactly where it was."""
    a = (0.1 * rng.standard_normal(3000)).astype(np.float32)
    b = (0.1 * rng.standard_normal(3000)).astype(np.float32)
    bad = b.copy()
    bad[1234] = np.inf
    gains = [3, -2, 4, 0, 1, -5, 2, 6, -3, 1]
    eq = Equalizer(gains_db=gains)
    first = eq(a, 48000)
    with pytest.raises(ValueError, match="inf at channel 0, sample 1234"):
        eq(bad, 48000)
    second = eq(b, 48000)
    ref = Equalizer(gains_db=gains)(np.concatenate([a, b]), 48000)
    np.testing.assert_array_equal(np.concatenate([first, second]), ref)
