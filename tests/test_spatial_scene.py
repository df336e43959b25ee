"""SpatialScene: remote voices around a listener, the SDK's spatial audio engine.

World coordinates here: x forward, y right, z up, listener at the origin
facing +x unless a test moves it.  Levels are compared in dB with the
tolerances stated; the renderer itself is checked against the Spatializer.
"""

import math

import numpy as np
import pytest

from stagevox import dsp
from stagevox.dsp import SpatialScene, Spatializer, Zone
from stagevox.dsp import spatial_scene
from stagevox.dsp.spatializer import SpatialState

from spatial_helpers import high_band_re_tone_db, itd_ms, rms_db, white_noise

FS = 48000
FRAME = 480
AHEAD, RIGHT, UP = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def render(scene, signals, seconds=None, frame=FRAME, move=None):
    """Render ``{uid: signal}`` frame by frame; ``move(scene, i)`` runs before frame i."""
    n = min(len(s) for s in signals.values())
    out = []
    for i, start in enumerate(range(0, n, frame)):
        if move is not None:
            move(scene, i)
        out.append(scene.render({u: s[start:start + frame] for u, s in signals.items()}, FS))
    return np.concatenate(out, axis=1)


@pytest.fixture(scope="module")
def noise():
    return white_noise(0.5, FS)


def scene(**kw):
    s = SpatialScene(**kw)
    s.update_self_position((0, 0, 0), AHEAD, RIGHT, UP)
    return s


def test_a_voice_to_the_right_is_heard_on_the_right(noise):
    s = scene()
    s.update_remote_position("bob", (0.0, 2.0, 0.0))  # 2 m to the right
    y = render(s, {"bob": noise})
    assert rms_db(y) @ [1, -1] < -6.0 and itd_ms(y, FS) < -0.5
    # the listener turns around: now bob is on the left
    s.update_self_position((0, 0, 0), (-1, 0, 0), (0, -1, 0), UP)
    s.reset()
    y = render(s, {"bob": noise})
    assert rms_db(y) @ [1, -1] > 6.0 and itd_ms(y, FS) > 0.5


def test_matches_the_spatializer_for_one_still_voice(noise):
    """Same direction, distance and roll-off: same output (1e-5 of the peak)."""
    az, el, dist = math.radians(40.0), math.radians(10.0), 2.5
    pos = (dist * math.cos(el) * math.cos(az), -dist * math.cos(el) * math.sin(az),
           dist * math.sin(el))  # y is to the right: positive azimuth is left
    s = scene(air_absorption=False)
    s.update_remote_position(7, pos)
    y = render(s, {7: noise})
    ref = Spatializer(azimuth_deg=40.0, elevation_deg=10.0, distance_m=2.5).process(noise, FS)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    with_air = scene(air_absorption=True)
    with_air.update_remote_position(7, pos)
    ref_air = Spatializer(azimuth_deg=40.0, elevation_deg=10.0, distance_m=2.5,
                          air_absorption=True).process(noise, FS)
    np.testing.assert_allclose(render(with_air, {7: noise}), ref_air, rtol=0,
                               atol=1e-5 * np.abs(ref).max())


def test_distance_unit_and_attenuation_modes(noise):
    def level(distance_units, unit=1.0, attenuation=None):
        s = scene(air_absorption=False)
        s.set_distance_unit(unit)
        s.update_remote_position(1, (distance_units, 0.0, 0.0))
        if attenuation is not None:
            s.set_remote_audio_attenuation(1, attenuation)
        return rms_db(render(s, {1: noise})[:, FRAME:]).mean()

    # 0.5: as in air, -6 dB per doubling; the unit scales positions
    assert level(2.0) - level(4.0) == pytest.approx(6.0, abs=0.5)
    assert level(8.0, unit=0.5) == pytest.approx(level(4.0), abs=0.01)
    # 0: broadcast, no attenuation; 1: twice as fast
    assert level(8.0, attenuation=0.0) == pytest.approx(level(1.0, attenuation=0.0), abs=0.01)
    assert level(2.0, attenuation=1.0) - level(4.0, attenuation=1.0) == \
        pytest.approx(20 * math.log10(7 / 3), abs=0.5)  # ref/(ref + 2(d - ref)): 1/3 -> 1/7


def test_receive_range_and_count(noise):
    s = scene()
    s.set_audio_recv_range(5.0)
    for uid, d in (("a", 1.0), ("b", 3.0), ("c", 4.0), ("d", 6.0)):
        s.update_remote_position(uid, (d, 0.0, 0.0))
    gains = s.gains()
    assert gains["d"] == 0.0 and min(gains["a"], gains["b"], gains["c"]) > 0.0
    s.set_max_audio_recv_count(2)
    gains = s.gains()
    assert gains["c"] == 0.0 and gains["d"] == 0.0 and gains["a"] > 0 and gains["b"] > 0
    y = render(s, {"c": noise, "d": noise})
    assert np.abs(y).max() == 0.0  # the two heard speakers sent nothing
    s.set_max_audio_recv_count(None)
    s.set_audio_recv_range(math.inf)
    assert all(g > 0 for g in s.gains().values())
    with pytest.raises(ValueError, match="whole number"):
        s.set_max_audio_recv_count(2.5)
    with pytest.raises(ValueError, match="positive"):
        s.set_audio_recv_range(0)


def test_the_nearest_are_heard_and_ties_go_to_the_first_added():
    """Against a stable NumPy sort of the distances (random, with ties)."""
    r = np.random.default_rng(5)
    s = scene()
    distances = r.choice([1.0, 2.0, 2.5, 4.0, 7.0], size=23)
    for uid, d in enumerate(distances):
        s.update_remote_position(uid, (0.0, d, 0.0))
    for n in (0, 1, 5, 11, 22, 23, 30):
        s.set_max_audio_recv_count(n)
        heard = sorted(u for u, g in s.gains().items() if g > 0)
        assert heard == sorted(np.argsort(distances, kind="stable")[:n].tolist())


def test_zones_attenuate_sound_crossing_their_walls(noise):
    room = Zone(position=(0, 0, 0), forward=AHEAD, right=RIGHT, up=UP, forward_length=6.0,
                right_length=6.0, up_length=3.0, attenuation=1.0)
    s = scene()
    s.update_remote_position("inside", (2.0, 0.0, 0.0))
    s.update_remote_position("outside", (0.0, 8.0, 0.0))
    free = s.gains()
    s.set_zones([room])
    zoned = s.gains()
    assert zoned["inside"] == pytest.approx(free["inside"])    # same zone: unchanged
    assert zoned["outside"] == pytest.approx(1.0 / (1 + 2 * 7))  # attenuation 1 across the wall
    assert free["outside"] == pytest.approx(1.0 / 8)
    s.set_remote_audio_attenuation("outside", 0.0, force=True)  # forced: no attenuation
    assert s.gains()["outside"] == pytest.approx(1.0)
    # listener outside, speaker inside: the speaker's zone decides
    s.update_self_position((0, 8, 0), AHEAD, RIGHT, UP)
    assert s.gains()["inside"] == pytest.approx(1.0 / (1 + 2 * (math.hypot(2, 8) - 1)))
    s.set_zones([dict(position=(0, 0, 0), forward=AHEAD, right=RIGHT, up=UP,
                      forward_length=1, right_length=1, up_length=1, attenuation=0.0)])
    with pytest.raises(ValueError, match="zones\\[0\\]"):
        s.set_zones([dict(position=(0, 0, 0))])
    with pytest.raises(ValueError, match="attenuation"):
        Zone((0, 0, 0), AHEAD, RIGHT, UP, 1, 1, 1, attenuation=2.0)


def test_mute_and_remove_fade_without_clicks():
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(FS) / FS)).astype(np.float32)
    s = scene()
    s.update_remote_position(3, (1.0, 1.0, 0.0))

    def events(scene_, i):
        if i == 30:
            scene_.mute_remote_audio(3, True)
        if i == 50:
            scene_.mute_remote_audio(3, False)
        if i == 80:
            scene_.remove_remote_position(3)

    y = render(s, {3: tone}, move=events)
    assert np.abs(y[:, 32 * FRAME:50 * FRAME]).max() == 0.0   # muted (after the 10 ms fade)
    assert np.abs(y[:, 60 * FRAME:80 * FRAME]).max() > 0.1    # back
    assert np.abs(y[:, 83 * FRAME:]).max() == 0.0              # removed
    assert np.all(high_band_re_tone_db(y[:, 5 * FRAME:], FS) < -60.0)
    assert s.speakers == [] and 3 not in s.gains()
    with pytest.raises(KeyError, match="update_remote_position"):
        s.mute_remote_audio(3, True)


def test_frames_of_unknown_speakers_are_ignored_and_missing_frames_are_silence(noise):
    s = scene()
    s.update_remote_position("a", (1, 0, 0))
    y = render(s, {"a": noise, "stranger": noise})
    ref = scene()
    ref.update_remote_position("a", (1, 0, 0))
    np.testing.assert_array_equal(y, render(ref, {"a": noise}))
    s.update_remote_position("b", (0, 1, 0))
    assert render(s, {"b": np.zeros(960, np.float32)}).shape == (2, 960)


def test_directivity_a_speaker_facing_away_is_quieter(noise):
    def level(facing, db=6.0):
        s = scene(directivity_db=db, air_absorption=False)
        s.update_remote_position(1, (2.0, 0.0, 0.0), forward=facing)
        return rms_db(render(s, {1: noise})[:, FRAME:]).mean()

    towards = level((-1, 0, 0))
    assert level((1, 0, 0)) == pytest.approx(towards - 6.0, abs=0.5)
    assert level((0, 1, 0)) == pytest.approx(towards - 3.0, abs=0.5)
    assert level(None) == pytest.approx(towards, abs=0.01)
    assert level((1, 0, 0), db=0.0) == pytest.approx(towards, abs=0.01)


@pytest.mark.parametrize("doppler", [True, False])
def test_doppler_shifts_the_pitch_of_an_approaching_voice(doppler):
    """A 1 kHz voice approaching at 20 m/s: with Doppler it is delayed by its
    current distance / c, so it is heard at (1 + v / c) times its pitch
    (within 0.05 %; the moving-source formula c / (c - v) is 0.34 % higher,
    equal to first order); without, unchanged (0.05 %)."""
    v, c = 20.0, 343.0
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(FS) / FS)).astype(np.float32)
    s = scene(doppler=doppler, air_absorption=False)

    def approach(scene_, i):
        scene_.update_remote_position(1, (30.0 - v * (i + 1) * FRAME / FS, 0.0, 0.0))

    y = render(s, {1: tone}, move=approach)[0, FS // 4:]
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size), 16 * y.size))
    f = np.fft.rfftfreq(16 * y.size, 1 / FS)[np.argmax(spec)]
    expected = 1000.0 * (1 + v / c) if doppler else 1000.0
    assert f == pytest.approx(expected, rel=0.0005)


def test_seventeen_moving_speakers(noise):
    s = scene(doppler=True)
    signals = {u: np.roll(noise, 1000 * u) for u in range(17)}

    def orbit(scene_, i):
        for u in range(17):
            a = 0.05 * i + u
            scene_.update_remote_position(u, (3 * math.cos(a), 3 * math.sin(a), 0.3 * u - 2),
                                          forward=(math.cos(a), 0, 0))

    y = render(s, signals, move=orbit)
    assert y.shape == (2, noise.size) and np.all(np.isfinite(y)) and np.abs(y).max() > 0.05
    assert len(s.speakers) == 17



def test_seventeen_moving_speakers_in_one_call_equal_each_rendered_alone(noise):
    """All speakers go through one kernel call per frame; that is the sum of
    each speaker rendered alone in its own scene (same motion, Doppler, air
    and directivity), to 1e-6 of the peak (float32 sums in another order)."""
    signals = {u: np.roll(noise, 1000 * u) for u in range(17)}

    def orbit(uids):
        def move(scene_, i):
            for u in uids:
                a = 0.05 * i + u
                scene_.update_remote_position(u, (3 * math.cos(a), 3 * math.sin(a),
                                                  0.3 * u - 2), forward=(math.cos(a), 0, 0))
        return move

    together = render(scene(doppler=True), signals, move=orbit(range(17)))
    alone = sum(render(scene(doppler=True), {u: signals[u]}, move=orbit([u]))
                for u in range(17))
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6 * np.abs(alone).max())

def test_frames_are_checked(noise):
    s = scene()
    s.update_remote_position(1, (1, 0, 0))
    s.update_remote_position(2, (0, 1, 0))
    with pytest.raises(ValueError, match="differ in length"):
        s.render({1: noise[:480], 2: noise[:479]}, FS)
    with pytest.raises(ValueError, match="mono"):
        s.render({1: np.zeros((2, 480), np.float32)}, FS)
    bad = noise[:480].copy()
    bad[17] = np.nan
    with pytest.raises(ValueError, match="frame of 2 contains nan at sample 17"):
        s.render({1: noise[:480], 2: bad}, FS)
    with pytest.raises(ValueError, match="8000"):
        s.render({1: noise[:480]}, 96000)
    with pytest.raises(ValueError, match="zero vector"):
        s.update_self_position((0, 0, 0), (0, 0, 0), RIGHT, UP)
    with pytest.raises(ValueError, match="3 numbers"):
        s.update_remote_position(1, (1, 2))
    with pytest.raises(ValueError, match="finite"):
        s.update_remote_position(1, (1, math.nan, 0))
    with pytest.raises(ValueError, match="zero vector"):
        s.update_remote_position("new", (1, 0, 0), forward=(0, 0, 0))
    assert "new" not in s.speakers  # a refused call adds nobody
    # (1, n) frames and int16 frames are accepted
    a = s.render({1: noise[None, :480]}, FS)
    assert a.shape == (2, 480)
    assert s.render({1: (noise[:480] * 1000).astype(np.int16)}, FS).shape == (2, 480)


def test_frame_size_does_not_matter_for_still_speakers(noise):
    def run(frame):
        s = scene()
        s.update_remote_position(1, (1.0, -2.0, 0.5))
        s.update_remote_position(2, (-3.0, 1.0, 0.0))
        return render(s, {1: noise, 2: noise[::-1].copy()}, frame=frame)

    np.testing.assert_allclose(run(480), run(160), rtol=0, atol=1e-6)
    np.testing.assert_allclose(run(480), run(1000), rtol=0, atol=1e-6)


def _busy_scene(kind, frame=FRAME, air=True, seconds=0.3):
    """Six speakers walking around the listener (distance and direction
    change every frame), Doppler and near field on, one muted for 0.1 s,
    rendered with ``kind``: "fft" (render_mix, every segment by FFT),
    "direct" (render_mix, every segment by direct FIR), "default", or
    "reference" (the one-source kernel ``render``: air after the filter)."""
    r = np.random.default_rng(1)
    signals = {u: (0.3 * r.standard_normal(int(seconds * FS))).astype(np.float32)
               for u in range(6)}
    s = scene(doppler=True, near_field=True, air_absorption=air)
    out = []
    for i, start in enumerate(range(0, int(seconds * FS), frame)):
        for u in range(6):
            a = 0.05 * i * frame / FRAME * (1 + u / 5) + u
            d = 0.3 + 1.5 * u + 0.02 * i * frame / FRAME
            s.update_remote_position(u, (d * math.cos(a), d * math.sin(a), 0.3 * u - 1),
                                     forward=(math.cos(a), 0, 0))
        s.mute_remote_audio(2, 0.1 <= start / FS < 0.2)
        if i == 0:
            s.render({}, FS)  # makes the state
            sp = s._spatial
            if kind == "reference":
                s._spatial = SpatialState(sp.hrtf, FS, s._capacity,
                                          max_extra_delay=s.max_delay_s * FS)
            elif kind != "default":
                sp.fft_min = 1 if kind == "fft" else 10 ** 9
        out.append(s.render({u: x[start:start + frame] for u, x in signals.items()}, FS))
    return np.concatenate(out, axis=1)


def test_fft_rendering_equals_direct_filtering():
    """The scene summed in the frequency domain against each speaker through
    the direct FIR (same kernel, same state): 1e-6 of the peak (float32
    FFTs, products and sums; measured 3.0e-7, -130 dB)."""
    direct = _busy_scene("direct")
    np.testing.assert_allclose(_busy_scene("fft"), direct, rtol=0,
                               atol=1e-6 * np.abs(direct).max())


def test_scene_kernel_equals_the_one_source_kernel():
    """render_mix against render, the kernel the scene used before (and the
    Spatializer uses): without air absorption the same sums, 1e-6 of the
    peak (measured 3.0e-7: float32 FFTs); with it, air absorption comes before the filter instead of after,
    which is the same while a speaker's distance stays put and differs by
    1e-4 of the peak here, where distances change every frame (measured
    1.5e-5)."""
    for air, tol in ((False, 1e-6), (True, 1e-4)):
        ref = _busy_scene("reference", air=air)
        np.testing.assert_allclose(_busy_scene("default", air=air), ref, rtol=0,
                                   atol=tol * np.abs(ref).max())


def test_frame_size_does_not_matter_for_moving_speakers():
    """Each 10 ms tick rendered in one piece (by FFT), in three (direct
    filtering), or cut in two unequal pieces (one of each): the same output
    within 1e-6 of the peak.  Positions change before every tick."""
    r = np.random.default_rng(1)
    signals = {u: (0.3 * r.standard_normal(20 * FRAME)).astype(np.float32) for u in range(4)}

    def run(pieces):
        s = scene(doppler=True)
        out = []
        for tick in range(20):
            for u in range(4):
                a = 0.05 * tick + u
                s.update_remote_position(u, ((1 + u) * math.cos(a), (1 + u) * math.sin(a), 0.1),
                                         forward=(1, 0, 0))
            pos = tick * FRAME
            for n in pieces:
                out.append(s.render({u: x[pos:pos + n] for u, x in signals.items()}, FS))
                pos += n
        return np.concatenate(out, axis=1)

    whole = run([FRAME])
    peak = np.abs(whole).max()
    for pieces in ([160, 160, 160], [100, 380], [1, 479]):
        np.testing.assert_allclose(run(pieces), whole, rtol=0, atol=1e-6 * peak)


def test_fft_size():
    assert [spatial_scene._fft_size(n) for n in (1, 7, 202, 607, 1000)] == [2, 8, 216, 640, 1000]


def test_exports():
    assert dsp.SpatialScene is SpatialScene and dsp.Zone is Zone
