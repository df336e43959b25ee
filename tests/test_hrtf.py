"""HRTF data: the bundled KEMAR set, SOFA reading, design, interpolation.

Tolerances are stated where they are used: interpolation weights 1e-9
(float64 geometry), filters 1e-6 (float32 data), delays in samples.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from stagevox import dsp
from stagevox.dsp import Hrtf, HrtfError, SofaError, hrtf_design
from stagevox.dsp.hrtf import unit_vectors
from stagevox.dsp.sofa import read_sofa

from conftest import require
from spatial_helpers import synthetic_hrirs, woodworth_itd_s, write_sofa

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "dsp" / "data"
DEBIAN_SOFA = "/usr/share/libmysofa/MIT_KEMAR_normal_pinna.sofa"


@pytest.fixture(scope="module")
def kemar():
    return Hrtf.default()


@pytest.fixture(scope="module")
def sofa_44k(tmp_path_factory):
    path = tmp_path_factory.mktemp("sofa") / "head.sofa"
    az, el, irs = write_sofa(path, 44100.0)
    return path, az, el, irs


# ----------------------------------------------------------------- the bundled set

def test_bundled_set_is_small_48k_128_taps_and_attributed(kemar):
    assert (DATA / "kemar_hrtf.npz").stat().st_size < 1.5e6
    assert kemar.sample_rate == 48000 and kemar.taps == 128
    assert kemar.filters.dtype == np.float32 and kemar.filters.shape == (710, 2, 128)
    assert kemar.delays.shape == (710, 2) and kemar.delays.min() == pytest.approx(0.0)
    assert kemar.max_delay < 48  # 1 ms at 48 kHz: onsets only, no measuring distance
    assert kemar.elevation_deg.min() == -40 and kemar.elevation_deg.max() == 90
    assert kemar.distance_m == pytest.approx(1.4)
    meta = kemar.metadata
    assert "Gardner" in meta["citation"] and "Martin" in meta["citation"]
    assert "KEMAR" in meta["title"] and "license" in meta
    assert Hrtf.default() is kemar  # loaded once


def test_data_readme_cites_the_source_and_says_how_to_rebuild():
    text = (DATA / "README.md").read_text()
    for word in ("Gardner", "Martin", "KEMAR", "MIT Media Lab", "make_kemar_hrtf.py",
                 "libmysofa1", "1994", "1995"):
        assert word in text, word


def test_normal_pinna_set_is_mirror_symmetric(kemar):
    """The SOFA normal-pinna set mirrors one ear; the conversion keeps that."""
    key = {(round(a % 360, 4), round(e, 4)): i
           for i, (a, e) in enumerate(zip(kemar.azimuth_deg, kemar.elevation_deg))}
    for i, (a, e) in enumerate(zip(kemar.azimuth_deg, kemar.elevation_deg)):
        j = key[(round((360 - a) % 360, 4), round(e, 4))]
        np.testing.assert_array_equal(kemar.filters[i, 0], kemar.filters[j, 1])
        assert kemar.delays[i, 0] == pytest.approx(kemar.delays[j, 1], abs=1e-5)


def test_conversion_script_reproduces_the_bundled_file(tmp_path):
    require(os.path.exists(DEBIAN_SOFA),
            f"{DEBIAN_SOFA} missing (apt-get install libmysofa1)")
    out = tmp_path / "kemar.npz"
    result = subprocess.run([sys.executable, str(DATA / "make_kemar_hrtf.py"), DEBIAN_SOFA,
                             str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "710 directions" in result.stdout
    new, bundled = Hrtf.load(out), Hrtf.default()
    np.testing.assert_allclose(new.azimuth_deg, bundled.azimuth_deg, atol=1e-4)
    np.testing.assert_allclose(new.elevation_deg, bundled.elevation_deg, atol=1e-4)
    # float32 storage; FFT libraries may differ in the last bits between machines
    np.testing.assert_allclose(new.filters, bundled.filters, rtol=0, atol=1e-5)
    np.testing.assert_allclose(new.delays, bundled.delays, rtol=0, atol=1e-3)
    assert new.metadata == bundled.metadata


# ----------------------------------------------------------------- interpolation

def test_measured_directions_come_back_exactly(kemar, rng):
    for i in rng.choice(710, 25, replace=False):
        filters, delays = kemar.interpolate(kemar.azimuth_deg[i], kemar.elevation_deg[i])
        np.testing.assert_allclose(filters, kemar.filters[i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(delays, kemar.delays[i], rtol=0, atol=1e-9)


def _reference_interpolation(hrtf, az, el):
    """Slow reference: solve V w = v on every hull face, take one with w >= 0."""
    t = hrtf.tables
    points = t.points
    measured = t.rows >= 0
    np.testing.assert_allclose(points[measured], unit_vectors(
        hrtf.azimuth_deg[t.rows[measured]], hrtf.elevation_deg[t.rows[measured]]))
    hull = ConvexHull(points)
    v = unit_vectors(az, el)
    for face in hull.simplices:
        w = np.linalg.solve(points[face].T, v)
        if np.all(w >= -1e-12):
            w = np.maximum(w, 0.0) / np.maximum(w, 0.0).sum()
            return w @ t.delays[face], np.einsum("i,iek->ek", w, t.filters[face])
    raise AssertionError("no face contains the direction")


def test_lookup_kernel_matches_a_brute_force_reference(kemar, rng):
    """Barycentric weights on the hull: kernel (fast face search) vs solving on
    every face; tolerance 1e-9 samples on delays, 1e-6 on filters."""
    for az, el in zip(rng.uniform(-180, 180, 150), rng.uniform(-90, 90, 150)):
        ref_delays, ref_filters = _reference_interpolation(kemar, az, el)
        filters, delays = kemar.interpolate(az, el)
        np.testing.assert_allclose(delays, ref_delays, rtol=0, atol=1e-9)
        np.testing.assert_allclose(filters, ref_filters, rtol=0, atol=1e-6)
        idx, w = kemar.weights(az, el)
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)


def _itd_samples(hrtf, az, el):
    d = np.array([hrtf.interpolate(a, e)[1] for a, e in zip(az, el)])
    return d[:, 1] - d[:, 0]


@pytest.mark.parametrize("elevation", [0.0, 15.0, -35.0, 75.0])
def test_itd_moves_continuously_between_measured_directions(kemar, elevation):
    """Continuity: the largest ITD change between neighbouring azimuths halves
    when the step halves (a jump would not shrink), and stays below 0.15
    sample (3 us) per 0.1 degree; picking the nearest measured direction
    instead jumps by more than a sample and fails both."""
    def largest_step(step):
        az = np.arange(-180.0, 180.0, step)
        return np.max(np.abs(np.diff(_itd_samples(kemar, az, np.full(az.size, elevation)))))

    coarse, fine = largest_step(0.1), largest_step(0.05)
    assert coarse < 0.15 and fine < 0.6 * coarse
    # the same sweep with nearest-neighbour lookup: this test can fail
    points = unit_vectors(kemar.azimuth_deg, kemar.elevation_deg)

    def nearest_step(step):
        az = np.arange(-180.0, 180.0, step)
        i = np.argmax(unit_vectors(az, np.full(az.size, elevation)) @ points.T, axis=1)
        return np.max(np.abs(np.diff(kemar.delays[i, 1] - kemar.delays[i, 0])))

    assert nearest_step(0.1) > 1.0 and nearest_step(0.05) > 0.6 * nearest_step(0.1)


def test_itd_is_continuous_over_elevation_and_the_virtual_pole(kemar):
    el = np.arange(-90.0, 90.0, 0.1)
    itd = _itd_samples(kemar, np.full(el.size, 60.0), el)
    assert np.max(np.abs(np.diff(itd))) < 0.15
    # below -40 degrees KEMAR has no data: a virtual direction at the pole
    t = kemar.tables
    assert list(t.rows).count(-1) == 1
    idx, w = kemar.weights(0.0, -90.0)
    assert t.rows[idx[np.argmax(w)]] == -1 and w.max() == pytest.approx(1.0)
    assert abs(itd[0]) < 1e-9  # straight down: no ITD


def test_at_rate_scales_delays_and_keeps_magnitudes(kemar):
    h16 = kemar.at_rate(16000)
    assert h16.sample_rate == 16000 and h16.taps == 43
    assert kemar.at_rate(16000) is h16 and kemar.at_rate(48000) is kemar
    np.testing.assert_allclose(h16.delays, kemar.delays / 3.0, rtol=1e-12)
    freqs = np.geomspace(200, 7000, 40)
    for i in (0, 100, 300, 500, 709):
        for e in range(2):
            a = hrtf_design.magnitudes_at(kemar.filters[i, e], 48000, freqs)
            b = hrtf_design.magnitudes_at(h16.filters[i, e], 16000, freqs)
            # the 16 kHz filters are 43 taps: smoothed, within 1.5 dB where it matters
            level = 20 * np.log10(a / a.max())
            err = np.abs(20 * np.log10(b / a))[level > -20]
            assert np.median(err) < 0.5 and err.max() < 3.0, (i, e)


# ----------------------------------------------------------------- design

def test_onset_delay_and_minimum_phase_are_recovered():
    """A known minimum-phase filter delayed by a known fraction of a sample
    comes back as that delay (within 0.02 sample) and that filter."""
    rate, n = 48000, 512
    r = np.random.default_rng(8)
    zeros = 0.85 * r.uniform(0.2, 1.0, 12) * np.exp(2j * np.pi * r.uniform(0, 1, 12))
    h = np.zeros(n)
    h[:25] = np.real(np.poly(np.concatenate([zeros, zeros.conj()])))  # all zeros inside
    h /= np.abs(h).max()
    spectrum = np.fft.rfft(h)
    for delay in (3.0, 7.3, 20.71):
        shifted = np.fft.irfft(spectrum * np.exp(-2j * np.pi * np.fft.rfftfreq(n) * delay), n)
        filters, delays = hrtf_design.design(shifted[None], rate, 128, equalize=False)
        assert delays[0] == pytest.approx(delay, abs=0.02)
        # 1 % of the peak: the fractional shift wraps around the 512-sample
        # frame, which the zero-padded design spectrum sees a little
        np.testing.assert_allclose(filters[0, :25], h[:25], rtol=0, atol=1e-2)
        assert np.abs(filters[0, 25:]).max() < 1e-2


def test_minimum_phase_concentrates_energy_first():
    """Energy-delay property: the minimum-phase response has at least the
    partial energy of any response with the same magnitude, at every length."""
    r = np.random.default_rng(3)
    h = r.standard_normal(64) * np.exp(-np.arange(64) / 20)
    n_fft = 4096
    m = hrtf_design.minimum_phase(np.abs(np.fft.rfft(h, n_fft)), n_fft)
    np.testing.assert_allclose(np.abs(np.fft.rfft(m, n_fft)), np.abs(np.fft.rfft(h, n_fft)),
                               rtol=1e-6, atol=1e-9)
    assert np.all(np.cumsum(m[:64] ** 2) >= np.cumsum(h ** 2) - 1e-9)


def test_diffuse_field_equalization_flattens_the_average():
    rate = 48000
    az, el, irs = synthetic_hrirs(rate)
    filters, _ = hrtf_design.design(irs, rate, 128, equalize=True)
    freqs = np.geomspace(300, 15000, 30)
    power = np.mean(hrtf_design.magnitudes_at(filters.astype(np.float64), rate, freqs) ** 2,
                    axis=(0, 1))
    assert np.ptp(10 * np.log10(power)) < 2.0


# ----------------------------------------------------------------- SOFA files

def test_a_sofa_file_at_44k1_loads_resampled_to_48k(sofa_44k):
    path, az, el, irs = sofa_44k
    hrtf = Hrtf.from_sofa(path)
    assert hrtf.sample_rate == 48000 and hrtf.taps == 128
    np.testing.assert_allclose(hrtf.azimuth_deg, az)
    np.testing.assert_allclose(hrtf.elevation_deg, el)
    assert hrtf.distance_m == pytest.approx(1.2)
    assert hrtf.metadata["title"] == "stagevox test head"
    # delays: the model's ITD at the measured directions within 0.01 ms
    itd = (hrtf.delays[:, 1] - hrtf.delays[:, 0]) / 48000
    np.testing.assert_allclose(itd, woodworth_itd_s(az, el), rtol=0, atol=1e-5)
    # and between them, interpolated: +-90 degrees is measured, 45 is not
    assert _itd_samples(hrtf, [90.0], [0.0])[0] / 48 == pytest.approx(0.656, abs=0.01)
    assert 0.2 < _itd_samples(hrtf, [45.0], [0.0])[0] / 48 < 0.45
    # at 16 kHz directly
    h16 = Hrtf.from_sofa(path, 16000)
    assert h16.sample_rate == 16000 and h16.taps == 43
    itd16 = (h16.delays[:, 1] - h16.delays[:, 0]) / 16000
    np.testing.assert_allclose(itd16, woodworth_itd_s(az, el), rtol=0, atol=2e-5)


def test_sofa_spatializes_through_the_spatializer(sofa_44k):
    from spatial_helpers import itd_ms, white_noise
    hrtf = Hrtf.from_sofa(sofa_44k[0])
    x = white_noise(0.5, 48000)
    y = dsp.Spatializer(azimuth_deg=90.0, hrtf=hrtf).process(x, 48000)
    assert itd_ms(y, 48000) == pytest.approx(0.656, abs=0.03)
    y = dsp.Spatializer(azimuth_deg=-60.0, hrtf=hrtf).process(x, 16000)
    assert itd_ms(y, 16000) < -0.3


def test_receiver_order_and_cartesian_positions_are_understood(tmp_path, sofa_44k):
    plain = Hrtf.from_sofa(sofa_44k[0])
    swapped = tmp_path / "swapped.sofa"
    write_sofa(swapped, 44100.0, swap_receivers=True)
    cart = tmp_path / "cartesian.sofa"
    write_sofa(cart, 44100.0, cartesian=True)
    for path in (swapped, cart):
        other = Hrtf.from_sofa(path)
        np.testing.assert_allclose(other.filters, plain.filters, atol=1e-6)
        np.testing.assert_allclose(other.delays, plain.delays, atol=1e-6)
    raw = read_sofa(cart)
    np.testing.assert_allclose(np.mod(raw.azimuth_deg, 360), np.mod(plain.azimuth_deg, 360),
                               atol=1e-9)


BROKEN = [
    ("not_hdf5", None, "not an HDF5 file"),
    ("no_conventions", dict(attrs={"Conventions": None}), "'Conventions' is missing"),
    ("other_convention", dict(attrs={"SOFAConventions": "GeneralFIR"}),
     "'GeneralFIR' is not supported"),
    ("sos", dict(attrs={"DataType": "SOS"}), "DataType 'SOS'"),
    ("no_ir", dict(drop=("Data.IR",)), "'Data.IR' is missing"),
    ("no_rate", dict(drop=("Data.SamplingRate",)), "'Data.SamplingRate' is missing"),
    ("no_positions", dict(drop=("SourcePosition",)), "'SourcePosition' is missing"),
    ("three_ears", dict(replace={"Data.IR": np.ones((62, 3, 64))}), "3 receivers"),
    ("ir_2d", dict(replace={"Data.IR": np.ones((62, 64))}), "Data.IR has shape (62, 64)"),
    ("positions_2d", dict(replace={"SourcePosition": np.zeros((62, 2))}),
     "SourcePosition has shape (62, 2)"),
    ("positions_count", dict(replace={"SourcePosition": np.zeros((10, 3))}),
     "SourcePosition has shape (10, 3)"),
    ("nan", dict(replace={"Data.IR": np.full((62, 2, 64), np.nan)}), "Data.IR[0, 0, 0] is nan"),
    ("silent", dict(replace={"Data.IR": np.zeros((62, 2, 64))}), "Data.IR[0, 0] is all zeros"),
    ("zero_rate", dict(replace={"Data.SamplingRate": np.array([0.0])}),
     "Data.SamplingRate is 0.0"),
    ("delay_shape", dict(replace={"Data.Delay": np.zeros((3, 3))}), "Data.Delay has shape"),
]


@pytest.mark.parametrize("name,how,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_sofa_files_name_the_problem(tmp_path, name, how, message):
    path = tmp_path / f"{name}.sofa"
    if how is None:
        path.write_text("this is not a SOFA file\n")
    else:
        write_sofa(path, 44100.0, n=64, **how)
    with pytest.raises(SofaError) as err:
        Hrtf.from_sofa(path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SofaError, match="no such file"):
        Hrtf.from_sofa(tmp_path / "nope.sofa")
    with pytest.raises(SofaError, match="is a folder"):
        Hrtf.from_sofa(tmp_path)


def test_hrtf_arrays_are_checked():
    good = dict(azimuth_deg=[0, 90, 180, 270, 0, 0], elevation_deg=[0, 0, 0, 0, 90, -90],
                filters=np.ones((6, 2, 8)), delays=np.zeros((6, 2)), sample_rate=48000)
    Hrtf(**good).interpolate(45, 10)
    with pytest.raises(HrtfError, match="disagree"):
        Hrtf(**dict(good, delays=np.zeros((5, 2))))
    with pytest.raises(HrtfError, match="NaN or Inf"):
        Hrtf(**dict(good, filters=np.full((6, 2, 8), np.nan)))
    with pytest.raises(HrtfError, match=">= 0"):
        Hrtf(**dict(good, delays=-np.ones((6, 2))))
    front_only = Hrtf(azimuth_deg=[-60, -30, 0, 30, 60], elevation_deg=[0] * 5,
                      filters=np.ones((5, 2, 8)), delays=np.zeros((5, 2)), sample_rate=48000)
    with pytest.raises(HrtfError, match="surround the listener"):
        front_only.interpolate(0, 0)
    with pytest.raises(HrtfError, match="not an HRTF file"):
        Hrtf.load(DATA / "README.md")
