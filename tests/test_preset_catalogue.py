"""The preset catalogue: every preset of the SDK's catalogue is bundled, runs
through ``process_file`` and the command line, and does what its name says.

Judges: ``librosa.pyin`` for the pitch (median f0 over voiced frames, output
against input), ``pyroomacoustics.experimental.measure_rt60`` for reverb
decay, the energy after the input's end for tails, the correlation of the
two ears for width.  The signal is 3 s of the female voice of the bundled
speech (f0 about 233 Hz), so that pyin's 60-600 Hz range holds the f0 after
any shift of -12 to +11 semitones.  Every preset is rendered once per module
(``rendered``) and shared by the tests.
"""

import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import soxr
from pyroomacoustics.experimental import measure_rt60
from scipy.signal import butter, sosfilt, welch

from stagevox import cli, dsp, presets
from stagevox.dsp.pitch import C4_HZ, NOTES, SCALES

SR = 48000
#: The analysed excerpt of the bundled speech (seconds): one female speaker.
EXCERPT_S = (12.0, 15.0)
#: Every preset ends with a limiter at -1 dBFS; float32 WAV keeps it exact.
CEILING = 10 ** (-1 / 20)
PEAK_TOL = 1e-6
BIN = Path(sys.executable).parent / "stagevox"

CATALOGUE = {
    "room acoustics": ["ktv", "vocal_concert", "studio", "phonograph", "virtual_stereo",
                       "spacial", "ethereal", "3d_voice", "virtual_surround", "chorus"],
    "voice changer": ["uncle", "oldman", "boy", "sister", "girl", "pigking", "hulk"],
    "style": ["rnb", "popular", "pitch_correction"],
    "voice beautifier": ["magnetic", "fresh", "vitality", "singing_male_small_room",
                         "singing_male_large_room", "singing_male_hall",
                         "singing_female_small_room", "singing_female_large_room",
                         "singing_female_hall", "vigorous", "deep", "mellow", "falsetto",
                         "full", "clear", "resounding", "ringing", "ultra_high_quality"],
    "voice conversion": ["neutral", "sweet", "solid", "bass", "cartoon", "childlike",
                         "phone_operator", "monster", "transformers", "groot", "darth_vader",
                         "iron_lady", "shin_chan", "girlish_man", "chipmunk"],
}
ALL = [name for group in CATALOGUE.values() for name in group]

# Expected change of the median f0, output over input, in semitones (lo, hi).
SAME = (-1.0, 1.0)      # the pitch is not the point: within a semitone
UP = (2.0, 13.0)        # the pitch change is the point: at least 2 semitones
DOWN = (-13.0, -2.0)
SLIGHTLY_DOWN = (-3.0, -0.5)

PITCH = {
    # room acoustics
    "ktv": SAME, "vocal_concert": SAME, "studio": SAME, "phonograph": SAME,
    "virtual_stereo": SAME, "spacial": SAME, "ethereal": SAME, "3d_voice": SAME,
    "virtual_surround": SAME, "chorus": SAME,
    # voice changer
    "uncle": DOWN, "oldman": DOWN, "boy": UP, "sister": UP, "girl": UP, "pigking": DOWN,
    "hulk": DOWN,
    # style
    "rnb": SAME, "popular": SAME, "pitch_correction": SAME,
    # voice beautifier
    "magnetic": SAME, "fresh": SAME, "vitality": SAME, "singing_male_small_room": SAME,
    "singing_male_large_room": SAME, "singing_male_hall": SAME,
    "singing_female_small_room": SAME, "singing_female_large_room": SAME,
    "singing_female_hall": SAME, "vigorous": SAME, "deep": SAME, "mellow": SAME,
    "falsetto": SAME, "full": SAME, "clear": SAME, "resounding": SAME, "ringing": SAME,
    "ultra_high_quality": SAME,
    # voice conversion
    "neutral": DOWN, "sweet": UP, "solid": SLIGHTLY_DOWN, "bass": DOWN, "cartoon": UP,
    "childlike": UP, "phone_operator": SAME, "monster": DOWN, "transformers": DOWN,
    "groot": DOWN, "darth_vader": DOWN, "iron_lady": UP, "shin_chan": UP, "girlish_man": UP,
    "chipmunk": UP,
}

#: Presets whose point is a room: their output rings on after the input ends.
ROOMS = ["ktv", "vocal_concert", "studio", "spacial", "ethereal", "virtual_stereo",
         "virtual_surround", "chorus", "rnb", "popular", "singing_male_small_room",
         "singing_male_large_room", "singing_male_hall", "singing_female_small_room",
         "singing_female_large_room", "singing_female_hall"]
#: Presets that put the voice around a listener: binaural stereo out.
BINAURAL = {"3d_voice", "virtual_stereo", "virtual_surround"}


def median_f0(audio):
    """Median f0 (Hz) over the voiced frames of ``audio`` (48 kHz, mono or
    ``(channels, n)``, channels averaged) and the voiced fraction; pyin at
    22.05 kHz, 60-600 Hz, hop 512."""
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    y = soxr.resample(audio, SR, 22050)
    f0, voiced, _ = librosa.pyin(y, fmin=60, fmax=600, sr=22050, frame_length=2048,
                                 hop_length=512)
    return (float(np.median(f0[voiced])) if voiced.any() else float("nan"),
            float(voiced.mean()))


def rms(a):
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


@pytest.fixture(scope="module")
def excerpt(speech):
    lo, hi = (int(t * SR) for t in EXCERPT_S)
    return speech[lo:hi]


@pytest.fixture(scope="module")
def input_wav(excerpt, tmp_path_factory):
    path = tmp_path_factory.mktemp("catalogue") / "in.wav"
    sf.write(str(path), excerpt, SR, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def input_f0(excerpt):
    f0, voiced = median_f0(excerpt)
    assert 180 < f0 < 300 and voiced > 0.7  # the excerpt is what we think it is
    return f0


@pytest.fixture(scope="module")
def rendered(input_wav):
    """``render(name)``: ``(output (channels, n), tail samples, report)`` of
    the preset through ``dsp.process_file``, computed once per module."""
    cache = {}

    def render(name):
        if name not in cache:
            graph = presets.load(name)
            dst = input_wav.parent / f"{name}.wav"
            report = dsp.process_file(input_wav, dst, graph, overwrite=True)
            y, rate = sf.read(str(dst), dtype="float32", always_2d=True)
            assert rate == SR
            cache[name] = (np.ascontiguousarray(y.T), graph.tail_at(SR), report)
        return cache[name]

    return render


# ----------------------------------------------------------------- the list

def test_table_covers_the_catalogue_once():
    assert len(ALL) == len(set(ALL)) == 53
    assert set(PITCH) == set(ALL)
    assert set(ROOMS) <= set(ALL) and BINAURAL <= set(ALL)


def test_every_catalogue_preset_is_bundled():
    missing = sorted(set(ALL) - set(presets.names()))
    assert not missing, f"presets missing from the package: {missing}"
    for name in ALL:
        assert name.replace("_", "").isalnum() and name == name.lower()


def test_cli_lists_the_catalogue(capsys):
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split("  ", 1)[0]: line.split("  ", 1)[1] for line in lines}
    for name in ALL:
        assert listed.get(name) == presets.describe(name), name


# ----------------------------------------------------------------- rendering

@pytest.mark.parametrize("name", ALL)
def test_preset_renders_speech(name, rendered, excerpt):
    y, tail, report = rendered(name)
    assert y.shape == (2 if name in BINAURAL else 1, excerpt.size + tail)
    assert report.output_frames == excerpt.size + tail and report.clipped_samples == 0
    assert np.all(np.isfinite(y))
    graph = presets.load(name)
    last = [src for src, dst in graph.edges if dst == "output"]
    assert len(last) == 1 and isinstance(graph[last[0]], dsp.Limiter)
    assert graph[last[0]].ceiling_db == -1.0
    assert np.max(np.abs(y)) <= CEILING + PEAK_TOL
    # audible and sane: within 6 dB of the input's level
    assert abs(20 * np.log10(rms(y[:, :excerpt.size]) / rms(excerpt))) < 6.0


@pytest.mark.parametrize("name", ALL)
def test_pitch_moves_as_the_preset_says(name, rendered, excerpt, input_f0):
    y, _, _ = rendered(name)
    f0, voiced = median_f0(y[:, :excerpt.size])
    assert voiced > 0.3, f"{name}: only {voiced:.0%} of frames voiced"
    shift = 12 * np.log2(f0 / input_f0)
    lo, hi = PITCH[name]
    assert lo <= shift <= hi, f"{name}: median f0 moved {shift:+.2f} semitones, " \
                              f"expected {lo:+} to {hi:+}"


# ----------------------------------------------------------------- rooms

def octave_rt60(ir):
    """T30 decay time (s) of ``ir`` in the octave band around 1 kHz."""
    sos = butter(4, [707.0, 1414.0], btype="bandpass", fs=SR, output="sos")
    return measure_rt60(sosfilt(sos, ir.astype(np.float64)), SR, decay_db=30)


@pytest.mark.parametrize("name", ROOMS)
def test_room_presets_ring_on(name, rendered, excerpt):
    """Energy after the input's end, and a decay time close to the preset's
    longest reverb (its ``rt60_s`` is the 1 kHz decay; +-25%)."""
    y, tail, _ = rendered(name)
    n = excerpt.size
    assert tail > 0.3 * SR
    after = rms(y[:, n + int(0.05 * SR):n + int(0.3 * SR)])
    assert 20 * np.log10(after / rms(y[:, :n])) > -35.0
    graph = presets.load(name)
    rt60 = max(p.rt60_s for p in graph.nodes.values() if isinstance(p, dsp.Reverb))
    impulse = np.zeros(int(SR * (1.5 * rt60 + 0.5)), np.float32)
    impulse[0] = 0.05  # below every compressor's threshold and the limiter
    ir = graph.process(impulse, SR)
    measured = octave_rt60(ir.mean(axis=0) if ir.ndim == 2 else ir)
    assert 0.75 * rt60 <= measured <= 1.25 * rt60, f"{name}: T30 {measured:.2f} s, rt60 {rt60} s"


@pytest.mark.parametrize("name", ["phonograph", "uncle", "girl", "clear", "phone_operator"])
def test_presets_without_a_room_stop_with_the_input(name, rendered, excerpt):
    """No reverb, no echo: at most 10 ms of output after the input (the
    phonograph's wow is a swept delay of a few samples)."""
    y, tail, _ = rendered(name)
    assert tail < 0.01 * SR and y.shape[1] == excerpt.size + tail


def test_virtual_stereo_is_wide_and_surround_wider_than_mono(rendered):
    """The two ears differ: correlation well below 1 (a centred mono voice
    through the same HRTF gives about 0.99)."""
    for name, most in [("virtual_stereo", 0.85), ("virtual_surround", 0.9)]:
        y, _, _ = rendered(name)
        assert np.corrcoef(y[0], y[1])[0, 1] < most, name


@pytest.mark.parametrize("name", ["virtual_surround", "transformers", "chorus",
                                  "phone_operator", "oldman"])
def test_output_does_not_depend_on_block_sizes(name, excerpt, rng):
    """The busiest graphs, whole against random blocks of 1 to 1999 samples
    (1e-5, as for every processor)."""
    x = excerpt[:SR]
    whole = presets.load(name).process(x, SR)
    graph, parts, i = presets.load(name), [], 0
    while i < x.size:
        k = int(rng.integers(1, 2000))
        parts.append(graph.process(x[i:i + k], SR))
        i += k
    np.testing.assert_allclose(np.concatenate(parts, axis=-1), whole, rtol=0, atol=1e-5)


def band_energy(audio, lo_hz, hi_hz):
    """Energy between ``lo_hz`` and ``hi_hz`` (Welch, Hann, 11.7 Hz bins, no detrending)."""
    f, p = welch(np.asarray(audio, dtype=np.float64), SR, nperseg=4096, detrend=False)
    return p[(f >= lo_hz) & (f < hi_hz)].sum()


def test_phone_operator_is_band_limited_and_bright(rendered, excerpt):
    """Outside 150 Hz - 5 kHz at least 30 dB below the passband (relative to
    the input), and the top of the band (2-3.4 kHz) lifted at least 2 dB
    against its bottom (0.3-1 kHz)."""
    y = rendered("phone_operator")[0][0, :excerpt.size]

    def gain_db(lo, hi):
        return 10 * np.log10(band_energy(y, lo, hi) / band_energy(excerpt, lo, hi))

    passband = gain_db(500, 3000)
    assert gain_db(0, 150) < passband - 30.0
    assert gain_db(5000, 24000) < passband - 30.0
    assert gain_db(2000, 3400) - gain_db(300, 1000) > 2.0


# ----------------------------------------------------------------- pitch correction

def cents_from_scale(f0, scale, tonic):
    """Distance in cents of each ``f0`` (Hz) from the nearest note of the scale."""
    cents = 1200 * np.log2(np.asarray(f0) / (C4_HZ * 2 ** (NOTES[tonic] / 12)))
    notes = np.array([100 * k + 1200 * octave for octave in range(-4, 4)
                      for k in SCALES[scale]])
    return np.min(np.abs(cents[:, None] - notes[None, :]), axis=1)


def voiced_f0(audio):
    y = soxr.resample(audio, SR, 22050)
    f0, voiced, _ = librosa.pyin(y, fmin=60, fmax=600, sr=22050, frame_length=2048,
                                 hop_length=512)
    return f0[voiced]


@pytest.mark.parametrize("scale, tonic", [("major", "C"), ("minor", "E")])
def test_pitch_correction_key_is_set_after_loading(scale, tonic, excerpt):
    """The node named 'pitch_correction' takes the user's scale and tonic;
    the voice then sits closer to that scale's notes (median distance in
    cents at most 0.6 of the input's)."""
    graph = presets.load("pitch_correction")
    node = graph["pitch_correction"]
    node.scale, node.tonic = scale, tonic
    assert (node.scale, node.tonic) == (scale, tonic)
    lat = graph.latency
    y = graph.process(np.concatenate([excerpt, np.zeros(lat, np.float32)]), SR)[lat:]
    before = np.median(cents_from_scale(voiced_f0(excerpt), scale, tonic))
    after = np.median(cents_from_scale(voiced_f0(y), scale, tonic))
    assert after <= 0.6 * before, f"{scale} {tonic}: {before:.0f} -> {after:.0f} cents"


# ----------------------------------------------------------------- command line

@pytest.mark.parametrize("name", ["chorus", "girl", "ktv"])
def test_console_script_runs_the_preset(name, input_wav, rendered, tmp_path):
    """``stagevox process in.wav out.wav --preset NAME`` as a user runs it
    gives what the library gives (the preset ``chorus`` is a file, whatever
    the effects registry holds under that name)."""
    out = tmp_path / f"{name}.wav"
    result = subprocess.run([str(BIN), "process", str(input_wav), str(out), "--preset", name],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    y, rate = sf.read(str(out), dtype="float32", always_2d=True)
    ref, _, _ = rendered(name)
    assert rate == SR
    np.testing.assert_allclose(y.T, ref, rtol=0, atol=1e-6)


def test_chorus_preset_and_chorus_effect_are_different_namespaces():
    graph = cli.build_fx("chorus")
    assert isinstance(graph, dsp.Graph) and graph.registry_name == "graph"
    if "chorus" in dsp.registry:  # the effect of the same name, on the command line
        both = cli.build_fx("chorus", ["chorus"])
        assert isinstance(both, dsp.Chain) and len(both.nodes) == 2
        assert isinstance(list(both.nodes.values())[1], dsp.registry["chorus"])
