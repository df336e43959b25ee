"""The client's audio controls, judged by what a listener hears over a real
server on 127.0.0.1.

Tones are pushed in real time (``engine_helpers.stream``) and measured at the
listener in steady-state windows, away from setting changes by at least
0.25 s (the jitter buffer's delay here is 20-60 ms).  Levels are measured by a
least-squares sine fit (``amplitude``), and that it is the tone by the
share of energy near its frequency (``purity``); tolerances: 1 dB for gains,
1 % for frequencies.  Where an effect is applied, the expected change is computed
offline by running the same ``stagevox.dsp`` processor on the same tone.
"""

import math
import time

import numpy as np
import pytest
import scipy.signal as ss
from engine_helpers import (
    CLEAN_TONE,
    Recorder,
    Session,
    amplitude,
    db,
    peak_frequency,
    purity,
    rms,
    stream,
    tone,
    wait_until,
    window,
)
from stagevox import dsp, engine, presets

SEC = 48000


# -- publishing controls ------------------------------------------------------------

def test_mute_local_audio_stream_stops_and_resumes():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")

        def on_frame(i):
            if i == 50:
                host.mute_local_audio_stream(True)
            elif i == 100:
                host.mute_local_audio_stream(False)

        got = stream({host: tone(440, 1.8, amplitude=0.2)}, [listener], 1.8,
                     on_frame=on_frame)[listener][0]
        sent = host.stats()["packets_sent"]
    assert abs(db(amplitude(window(got, 0.2, 0.5), 440) / 0.2)) < 1.0
    # Muted at 0.5 s: after the jitter buffer drains (< 0.25 s), silence.
    assert rms(window(got, 0.75, 1.0)) < 1e-4
    # Resumed at 1.0 s: the buffer starts again and the tone is back at its level.
    assert abs(db(amplitude(window(got, 1.4, 1.8), 440) / 0.2)) < 1.0
    # Nothing was sent while muted: about 1.3 of the 1.8 s at 50 packets a second.
    assert 60 <= sent <= 70


def test_encoded_opus_packets_are_sent_as_they_are():
    """``push_encoded_audio``: Opus encoded elsewhere is sent as it is (the
    codec bytes sent are the packets' own), a listener hears the tone at its
    level, and a gap (a packet lost before the client) moves the clock on."""
    encoder = engine.make_encoder("opus", channels=1, bitrate=32000, frame_ms=20)
    signal = tone(440, 1.6, amplitude=0.2)
    packets = [encoder.encode(signal[None, i:i + 960]) for i in range(0, signal.size, 960)]
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        assert host.can_push_encoded()
        heard = []
        t0 = time.monotonic()
        for i, packet in enumerate(packets):
            time.sleep(max(0.0, t0 + 0.02 * i - time.monotonic()))
            # The 30th packet is "lost on the way in": the next comes after a gap.
            if i != 30:
                host.push_encoded_audio(packet, after_gap=960 if i == 31 else 0)
            heard.append(listener.pull_audio(960)[0])
        sent = host.stats()["codec_bytes_sent"]
    assert sent == sum(len(p) for p in packets) - len(packets[30])
    y = np.concatenate(heard)
    assert abs(db(amplitude(window(y, 1.0, 1.4), 440) / 0.2)) < 1.0
    assert purity(window(y, 1.0, 1.4), 440) > CLEAN_TONE


def test_encoded_audio_is_refused_where_the_audio_is_needed():
    packet = engine.make_encoder("opus", channels=1, frame_ms=20).encode(tone(440, 0.02)[None])
    short = engine.make_encoder("opus", channels=1, frame_ms=10).encode(tone(440, 0.01)[None])
    client = engine.Client()
    with pytest.raises(ValueError, match="480 samples; this client sends 960-sample"):
        client.push_encoded_audio(short)
    with pytest.raises(engine.codec.CodecError, match="not a valid Opus packet"):
        client.push_encoded_audio(b"\xff\xff\xff")
    client.push_encoded_audio(packet)                  # not in a channel: the clock moves on
    client.set_audio_effect_preset("ktv")
    assert not client.can_push_encoded()
    with pytest.raises(ValueError, match="push the audio with push_audio"):
        client.push_encoded_audio(packet)
    client.set_audio_effect_preset("off")
    client.adjust_recording_signal_volume(50)
    assert not client.can_push_encoded()
    client.adjust_recording_signal_volume(100)
    assert client.can_push_encoded()


def test_recording_volume_200_doubles_the_level():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")

        def on_frame(i):
            if i == 60:
                host.adjust_recording_signal_volume(200)

        got = stream({host: tone(440, 1.2, amplitude=0.1)}, [listener], 1.2,
                     on_frame=on_frame)[listener][0]
        with pytest.raises(ValueError, match=r"volume must be a number in \[0, 400\]"):
            host.adjust_recording_signal_volume(401)
    before = amplitude(window(got, 0.25, 0.6), 440)
    after = amplitude(window(got, 0.85, 1.2), 440)
    assert abs(db(before / 0.1)) < 1.0
    assert abs(db(after / before) - db(2.0)) < 1.0


def test_playback_volume_50_halves_one_user():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")

        def on_frame(i):
            if i == 60:
                listener.adjust_user_playback_signal_volume(1, 50)

        got = stream({host: tone(440, 1.2, amplitude=0.2)}, [listener], 1.2,
                     on_frame=on_frame)[listener][0]
        with pytest.raises(ValueError, match=r"volume must be a number in \[0, 100\]"):
            listener.adjust_user_playback_signal_volume(1, 101)
        with pytest.raises(KeyError, match="no remote host with uid 9"):
            listener.adjust_user_playback_signal_volume(9, 50)
    before = amplitude(window(got, 0.25, 0.6), 440)
    after = amplitude(window(got, 0.85, 1.2), 440)
    assert abs(db(after / before) - db(0.5)) < 1.0


def test_two_hosts_are_mixed_and_one_can_be_muted():
    with Session() as s:
        a = s.join(1, "host")
        b = s.join(3, "host")
        listener = s.join(2, "audience")
        assert listener.remote_users() == [1, 3]

        def on_frame(i):
            if i == 60:
                listener.mute_remote_audio_stream(1, True)
            elif i == 120:
                listener.mute_remote_audio_stream(1, False)

        got = stream({a: tone(330, 1.8, amplitude=0.15), b: tone(550, 1.8, amplitude=0.15)},
                     [listener], 1.8, on_frame=on_frame)[listener][0]
    both = window(got, 0.25, 0.6)
    assert abs(db(amplitude(both, 330) / 0.15)) < 1.0
    assert abs(db(amplitude(both, 550) / 0.15)) < 1.0
    muted = window(got, 0.85, 1.2)
    assert amplitude(muted, 330) < 0.15 * 10 ** (-40 / 20)
    assert abs(db(amplitude(muted, 550) / 0.15)) < 1.0
    again = window(got, 1.45, 1.8)
    assert abs(db(amplitude(again, 330) / 0.15)) < 1.0


@pytest.mark.parametrize("pan", [-1.0, 1.0])
def test_remote_voice_position_pans_on_a_stereo_client(pan):
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience", channels=2)
        listener.set_remote_voice_position(1, pan=pan, gain=100)
        got = stream({host: tone(440, 0.8, amplitude=0.2)}, [listener], 0.8)[listener]
        with pytest.raises(ValueError, match=r"pan must be a number in \[-1.0, 1.0\]"):
            listener.set_remote_voice_position(1, pan=-1.5, gain=100)
        with pytest.raises(ValueError, match=r"gain must be a number in \[0, 100\]"):
            listener.set_remote_voice_position(1, pan=0, gain=101)
    assert got.shape[0] == 2
    near, far = (got[0], got[1]) if pan < 0 else (got[1], got[0])
    steady_near, steady_far = window(near, 0.4, 0.8), window(far, 0.4, 0.8)
    # The near side carries the voice at no less than its own level ...
    assert amplitude(steady_near, 440) > 0.2 * 10 ** (-1 / 20)
    # ... and the far side is at least 30 dB down.
    assert rms(steady_far) < rms(steady_near) * 10 ** (-30 / 20)


def test_spatial_audio_places_a_host_on_the_left_and_survives_its_leaving():
    """A stereo listener with spatial audio on and host 1 placed 2 m to its
    left (forward, right, up): the physical expectation of a head, the left
    ear louder (by 6 dB or more over the voice's band) and first (the right
    ear 0.2-1 ms later, the interaural time difference of a head about 17 cm
    wide); the host then leaves and the listener goes on pulling."""
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience", channels=2)
        listener.enable_spatial_audio()
        listener.spatial_scene.update_remote_position(1, [0.0, -2.0, 0.0])
        x = harmonic_tone(180, 1.0, amplitude=0.2, harmonics=40)   # up to 7.2 kHz
        got = stream({host: x}, [listener], 1.0)[listener]
        host.leave_channel()
        s.clients.remove(host)
        assert wait_until(lambda: listener.remote_users() == [], 3.0)
        after = stream({}, [listener], 0.1)[listener]
    left, right = window(got[0], 0.5, 0.95), window(got[1], 0.5, 0.95)
    assert rms(left) > 0.02, rms(left)
    highpass = ss.butter(4, 2000, "highpass", fs=SEC, output="sos")
    ild = db(rms(ss.sosfilt(highpass, left)) / rms(ss.sosfilt(highpass, right)))
    assert ild >= 6.0, ild
    corr = np.correlate(right, left[48:-48], mode="valid")      # right vs left, lag -1..+1 ms
    lag_ms = (int(np.argmax(corr)) - 48) / 48
    print(f"\nspatial audio, host 2 m to the left: ILD above 2 kHz {ild:.1f} dB, "
          f"right ear {lag_ms:.2f} ms late")
    assert 0.2 <= lag_ms <= 1.0, lag_ms
    assert after.shape == (2, 4800) and np.all(np.isfinite(after))


def test_remote_voice_gain_scales_the_level():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience", channels=2)
        listener.set_remote_voice_position(1, pan=0.0, gain=25)
        got = stream({host: tone(440, 0.8, amplitude=0.2)}, [listener], 0.8)[listener]
    for ch in got:
        assert abs(db(amplitude(window(ch, 0.4, 0.8), 440) / 0.2) - db(0.25)) < 1.0


# -- local voice effects -------------------------------------------------------------

def harmonic_tone(f0, seconds, amplitude=0.2, harmonics=8):
    """A voice-like periodic tone: ``harmonics`` partials of ``f0`` at 1/k."""
    t = np.arange(round(seconds * SEC)) / SEC
    y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))
    return (amplitude * y / np.max(np.abs(y))).astype(np.float32)


def _heard_with_pitch(pitch, x, seconds=1.2):
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        host.set_local_voice_pitch(pitch)
        got = stream({host: x}, [listener], seconds)[listener][0]
        for bad in (0.4, 2.5):
            with pytest.raises(ValueError, match=r"pitch must be a number in \[0.5, 2.0\]"):
                host.set_local_voice_pitch(bad)
    return window(got, 0.5, seconds)


@pytest.mark.xfail(strict=True, reason=(
    "known limitation of dsp.PitchShift (PSOLA): grains of a pure sinusoid laid "
    "half a period apart cancel, so a sine raised an octave comes out nearly silent; "
    "voices and harmonic tones are shifted correctly (next test)"))
def test_local_voice_pitch_two_raises_a_pure_tone_an_octave():
    """A 220 Hz sine at pitch 2.0 should be heard at 440 Hz (FFT peak within
    1 %), at no less than -6 dB."""
    steady = _heard_with_pitch(2.0, tone(220, 1.2, amplitude=0.2))
    assert rms(steady) > 0.5 * rms(tone(220, 0.5, amplitude=0.2)), \
        f"pitch 2.0 turned a 220 Hz sine into near silence (rms {rms(steady):.5f})"
    f = peak_frequency(steady)
    assert abs(f / 440.0 - 1.0) < 0.01, f


@pytest.mark.parametrize("pitch,f0,expected", [(2.0, 220.0, 440.0), (0.5, 440.0, 220.0)])
def test_local_voice_pitch_shifts_a_voice_like_tone_by_an_octave(pitch, f0, expected):
    """A harmonic tone (partials at 1/k, like a voiced vowel): ``librosa.pyin``
    hears its pitch moved by an octave, within a quarter semitone."""
    import librosa
    steady = _heard_with_pitch(pitch, harmonic_tone(f0, 1.2))
    assert rms(steady) > 0.02
    f0s, voiced, _ = librosa.pyin(steady, fmin=100, fmax=800, sr=SEC, frame_length=2048)
    f0s = f0s[voiced]
    assert len(f0s) > 10
    assert abs(12 * math.log2(np.median(f0s) / expected)) < 0.25


def test_local_voice_equalization_boosts_its_band():
    """Band 5 (1 kHz) at +12 dB: a 1 kHz tone comes out as loud as the same
    ``dsp.Equalizer`` makes it offline (within 1 dB), and 12 dB up (within 1.5 dB)."""
    x = tone(1000, 1.4, amplitude=0.05)
    reference = dsp.Equalizer(gains_db=[0, 0, 0, 0, 0, 12, 0, 0, 0, 0]).process(x, SEC)
    expected = amplitude(reference[int(0.5 * SEC):], 1000)
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")

        def on_frame(i):
            if i == 70:
                host.set_local_voice_equalization(5, 12)

        got = stream({host: x}, [listener], 1.4, on_frame=on_frame)[listener][0]
        with pytest.raises(ValueError, match="band must be an integer 0-9"):
            host.set_local_voice_equalization(10, 0)
        with pytest.raises(ValueError, match=r"gain_db must be a number in \[-15, 15\]"):
            host.set_local_voice_equalization(3, 20)
    before = amplitude(window(got, 0.3, 0.7), 1000)
    after = amplitude(window(got, 1.0, 1.4), 1000)
    assert abs(db(before / 0.05)) < 1.0
    assert abs(db(after / expected)) < 1.0
    assert abs(db(after / before) - 12.0) < 1.5


def test_local_voice_reverb_adds_a_tail():
    """A 0.3 s tone burst, then silence: with the reverb on, the listener hears
    a decaying tail after the burst; without it, silence."""
    burst = np.concatenate([tone(500, 0.3, amplitude=0.2), np.zeros(int(0.7 * SEC), np.float32)])
    tails = {}
    for reverb in (False, True):
        with Session() as s:
            host = s.join(1, "host")
            listener = s.join(2, "audience")
            if reverb:
                host.set_local_voice_reverb("room_size", 80)
                host.set_local_voice_reverb("wet_level", 0)
            # Burst at 0.2 s, heard after the jitter buffer (< 0.1 s): the tail
            # window starts 0.25 s after the burst ends.
            x = np.concatenate([np.zeros(int(0.2 * SEC), np.float32), burst])
            got = stream({host: x}, [listener], 1.2)[listener][0]
            tails[reverb] = rms(window(got, 0.75, 1.0))
            if reverb:
                with pytest.raises(ValueError, match="reverb key must be one of"):
                    host.set_local_voice_reverb("decay", 1)
                with pytest.raises(ValueError, match="room_size"):
                    host.set_local_voice_reverb("room_size", 500)
    assert tails[False] < 1e-4
    assert tails[True] > 0.005


def test_audio_effect_preset_radio_band_limits_the_voice():
    """The ``radio`` preset cuts below 200 Hz: the listener's ratio of a 100 Hz
    tone to a 1 kHz tone drops as it does offline through the same preset
    (within 3 dB) and by more than 15 dB."""
    x = tone(100, 1.5, amplitude=0.1) + tone(1000, 1.5, amplitude=0.1)
    offline = presets.load("radio").process(x, SEC)
    off = offline[int(0.6 * SEC):]
    expected = db(amplitude(off, 100) / amplitude(off, 1000))
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")

        def on_frame(i):
            if i == 70:
                host.set_audio_effect_preset("radio")

        got = stream({host: x}, [listener], 1.5, on_frame=on_frame)[listener][0]
        with pytest.raises(ValueError, match="radio"):
            host.set_audio_effect_preset("no-such-preset")
        assert isinstance(presets.PresetError("x"), ValueError)
    before, after = window(got, 0.3, 0.7), window(got, 1.05, 1.5)
    ratio_before = db(amplitude(before, 100) / amplitude(before, 1000))
    ratio_after = db(amplitude(after, 100) / amplitude(after, 1000))
    assert abs(ratio_before) < 1.0
    assert ratio_after < ratio_before - 15.0
    assert abs(ratio_after - expected) < 3.0


# -- raw audio observers ----------------------------------------------------------------

class _Observer(engine.AudioFrameObserver):
    def __init__(self, replace_playback=False):
        self.calls = {"record": [], "playback": [], "mixed": [], "before": []}
        self.replace_playback = replace_playback

    def on_record_audio_frame(self, frame):
        self.calls["record"].append(frame.copy())

    def on_playback_audio_frame(self, frame):
        self.calls["playback"].append(frame.copy())
        if self.replace_playback:
            return np.zeros_like(frame)

    def on_mixed_audio_frame(self, frame):
        self.calls["mixed"].append(frame.copy())

    def on_playback_audio_frame_before_mixing(self, uid, frame):
        self.calls["before"].append((uid, frame.copy()))


def test_audio_frame_observers_see_shaped_frames_and_can_replace_playback():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience", channels=2)
        on_host, on_listener = _Observer(), _Observer(replace_playback=True)
        host.register_audio_frame_observer(on_host)
        listener.register_audio_frame_observer(on_listener)
        x = tone(440, 0.8, amplitude=0.2)
        got = stream({host: x}, [listener], 0.8)[listener]

    rec = on_host.calls["record"]
    assert len(rec) == 80 and all(f.shape == (1, 480) and f.dtype == np.float32 for f in rec)
    np.testing.assert_array_equal(np.concatenate(rec, axis=1)[0], x)

    before = on_listener.calls["before"]
    assert len(before) == 80
    assert {uid for uid, _ in before} == {1}
    assert all(f.shape == (2, 480) and f.dtype == np.float32 for _, f in before)
    assert len(on_listener.calls["playback"]) == 80
    assert all(f.shape == (2, 480) for f in on_listener.calls["playback"])
    assert len(on_listener.calls["mixed"]) == 80
    assert all(f.shape == (2, 480) for f in on_listener.calls["mixed"])
    # The tone was there before mixing and in the playback the observer saw ...
    heard = np.concatenate([f for _, f in before], axis=1)
    assert abs(db(amplitude(window(heard[0], 0.4, 0.8), 440) / 0.2)) < 1.0
    played = np.concatenate(on_listener.calls["playback"], axis=1)
    assert rms(window(played, 0.4, 0.8)) > 0.1
    # ... but its replacement (silence) is what pull_audio returned.
    assert got.shape == (2, 80 * 480)
    assert np.all(got == 0.0)


def test_record_observer_replacement_is_what_is_sent():
    class Silence:
        def on_record_audio_frame(self, frame):
            return np.zeros_like(frame)

    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        host.register_audio_frame_observer(Silence())
        got = stream({host: tone(440, 0.6, amplitude=0.2)}, [listener], 0.6)[listener][0]
        assert host.stats()["packets_sent"] >= 25
    assert rms(window(got, 0.2, 0.6)) < 1e-3


def test_observer_returning_a_wrong_shape_is_an_error():
    class Bad:
        def on_record_audio_frame(self, frame):
            return np.zeros((2, 7), np.float32)

    c = engine.Client()
    c.register_audio_frame_observer(Bad())
    with pytest.raises(ValueError, match=r"on_record_audio_frame returned a frame shaped \(2, 7\)"):
        c.push_audio(np.zeros(480, np.float32))


# -- rates, codecs, statistics ------------------------------------------------------------

@pytest.mark.parametrize("host_rate,listener_rate", [(16000, 16000), (48000, 16000),
                                                     (16000, 48000)])
def test_other_sample_rates_end_to_end(host_rate, listener_rate):
    """A 1 kHz tone at the host's rate arrives at the listener's rate: the right
    frequency (1 %), level (1 dB) and frame sizes."""
    with Session() as s:
        host = s.join(1, "host", sample_rate=host_rate)
        listener = s.join(2, "audience", sample_rate=listener_rate)
        x = tone(1000, 1.0, fs=host_rate, amplitude=0.2)
        got = stream({host: x}, [listener], 1.0)[listener][0]
        heard = listener.stats()["users"][1]
    assert got.shape == (listener_rate,)
    steady = window(got, 0.4, 1.0, fs=listener_rate)
    level, clean = amplitude(steady, 1000, listener_rate), purity(steady, 1000, listener_rate)
    why = f"level {db(level / 0.2):.2f} dB, purity {clean:.4f}; {heard}"
    assert abs(peak_frequency(steady, listener_rate) / 1000.0 - 1.0) < 0.01, why
    assert abs(db(level / 0.2)) < 1.0, why
    assert clean >= CLEAN_TONE, why


def test_pcm_codec_is_bit_exact_end_to_end(speech):
    """With ``codec="pcm"`` (L16) the listener gets the pushed samples exactly,
    up to 16-bit rounding, after the network delay."""
    x = speech[3 * SEC:4 * SEC]
    with Session() as s:
        host = s.join(1, "host", codec="pcm")
        listener = s.join(2, "audience", codec="pcm")
        got = stream({host: x}, [listener], 1.3)[listener][0]
        assert listener.stats()["users"][1]["received"] >= 50
    lags = [k for k in range(0, int(0.25 * SEC), 480)
            if np.max(np.abs(got[k:k + len(x)] - x)) <= 1.0 / 32768]
    assert lags, "the pushed speech is nowhere in what was heard, to 16-bit precision"


@pytest.mark.parametrize("host_codec,listener_codec", [("pcm", "opus"), ("opus", "pcm")])
def test_listener_decodes_whatever_codec_the_host_chose(speech, host_codec, listener_codec):
    """A listener's own codec choice is for what it sends; each host's stream is
    decoded with the codec its packets name.  The pcm stream comes out exact."""
    x = speech[3 * SEC:4 * SEC]
    with Session() as s:
        host = s.join(1, "host", codec=host_codec)
        listener = s.join(2, "audience", codec=listener_codec)
        got = stream({host: x}, [listener], 1.3)[listener][0]
        assert listener.stats()["concealed"] <= 2
    if host_codec == "pcm":
        lags = [k for k in range(0, int(0.25 * SEC), 480)
                if np.max(np.abs(got[k:k + len(x)] - x)) <= 1.0 / 32768]
        assert lags, "the pcm host's speech is not in what the opus listener heard"
    else:
        assert rms(got) > 0.5 * rms(x), "the opus host was not heard by the pcm listener"


def test_stats_have_the_documented_keys_and_plausible_values():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        stream({host: tone(440, 1.2, amplitude=0.2)}, [listener], 1.2)
        hs, ls = host.stats(), listener.stats()
    top = {"packets_sent", "bytes_sent", "payload_bytes_sent", "codec_bytes_sent",
           "malformed_received", "send_bitrate", "codec_bitrate", "red_depth", "uplink_loss",
           "rtt_ms", "users", "received", "lost", "recovered_red", "recovered_fec",
           "recovered_retransmission", "concealed"}
    per_user = {"received", "lost", "recovered_red", "recovered_fec", "recovered_retransmission",
                "concealed", "late", "expanded_ms", "shortened_ms", "lengthened_ms",
                "duplicates", "frames_played", "jitter_ms", "target_delay_ms",
                "buffer_delay_ms", "end_to_end_delay_ms"}
    # The documented keys (README, engine section) are all there; more may be added.
    assert top <= set(hs) and top <= set(ls)
    assert set(ls["users"]) == {1} and per_user <= set(ls["users"][1])
    assert hs["users"] == {}
    # The host sent 1.2 s of 20 ms packets at about 32 kb/s of Opus.
    assert 55 <= hs["packets_sent"] <= 61
    assert 24_000 <= hs["codec_bitrate"] <= 40_000
    assert hs["send_bitrate"] > hs["codec_bitrate"]             # RTP headers
    assert hs["red_depth"] == 0 and hs["uplink_loss"] == 0.0
    for st in (hs, ls):
        assert st["rtt_ms"] is not None and 0.0 <= st["rtt_ms"] < 50.0
    u = ls["users"][1]
    assert ls["received"] == u["received"] > 50
    assert u["received"] <= hs["packets_sent"]
    assert u["lost"] == 0 and u["concealed"] == 0
    assert 0.0 <= u["jitter_ms"] < 20.0
    assert 0.0 < u["end_to_end_delay_ms"] < 200.0
    assert u["frames_played"] > 40


def test_events_on_a_client_without_handlers_are_harmless():
    with Session() as s:
        c = s.join(1, "host")
        rec = Recorder()
        c.register_event_handler(rec)
        c.unregister_event_handler(rec)
        s.join(3, "host")
        c.leave_channel()
        assert rec.events == []
