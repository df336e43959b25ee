"""A live channel on 127.0.0.1 with music: a host mixes a stereo backing
track under its voice and a stereo listener records.  With a stereo music
profile the recording keeps the track's stereo image and its band above
12 kHz; the speech profile (mono, 32 kb/s) loses the image and cuts that band.

Measured on the development machine with nothing else running: music_standard_stereo
inter-channel correlation 0.947 (source 0.931), energy above 12 kHz -1.5 dB,
SNR after alignment 14.1 dB; speech 1.000, -4.6 dB, 0.9 dB (a mono mix of a
stereo source scores badly as a waveform).  A loaded machine (late packets,
concealment) lowers all of them."""

import threading
import time

import numpy as np
import scipy.signal as ss
import soundfile as sf

from live_session import _pace, align
from stagevox import engine

SECRET = "music-session-secret"
RATE = 48000
FRAME = 480
LEAD_S = 2.5          # the jitter buffer and the encoder settle; not judged
JUDGED_S = 3.0
PIECE = RATE // 4     # live_session.align's pieces


def backing_track(seconds, rng):
    """A synthetic stereo backing track at 48 kHz: a bass in the centre, a
    chord panned left, a melody panned right, and hi-hats (noise bursts
    above 8 kHz, different in each channel) that carry the band above 12 kHz."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE

    def harmonic(f0, amp):
        return sum(amp / k * np.sin(2 * np.pi * f0 * k * t + k) for k in range(1, 8))

    beat = 0.5                                                   # s, 120 bpm
    bass = harmonic(55.0, 0.25) * (0.6 + 0.4 * np.cos(2 * np.pi * t / beat))
    chord = sum(harmonic(f, 0.06) for f in (220.0, 277.2, 329.6))
    notes = np.array([440.0, 493.9, 554.4, 659.3])[(t // beat).astype(int) % 4]
    melody = 0.08 * np.sin(2 * np.pi * np.cumsum(notes) / RATE)
    sos_hp = ss.butter(4, 8000, fs=RATE, btype="high", output="sos")
    hats = ss.sosfilt(sos_hp, rng.standard_normal((2, n)), axis=1)
    hats *= np.exp(-((t % (beat / 2)) / 0.03))                  # a hit every eighth note
    left = bass + 0.8 * chord + 0.3 * melody + 0.15 * hats[0]
    right = bass + 0.3 * chord + 0.8 * melody + 0.15 * hats[1]
    x = np.stack([left, right])
    return (0.25 * x / np.abs(x).max()).astype(np.float32)


def channel_correlation(x):
    return float(np.corrcoef(x[0], x[1])[0, 1])


def band_energy(x, lo_hz, hi_hz=RATE / 2):
    f, p = ss.welch(x, RATE, nperseg=2048, axis=-1)
    return float(np.sum(p[..., (f >= lo_hz) & (f < hi_hz)]))


def test_stereo_music_profile_keeps_image_and_full_band(tmp_path, speech):
    rng = np.random.default_rng(11)
    total = int((LEAD_S + JUDGED_S + 0.5) * RATE)
    music = backing_track(total / RATE + 1.0, rng)
    path = tmp_path / "backing.wav"
    sf.write(path, music.T, RATE, subtype="FLOAT")
    voice = 0.5 * np.resize(speech, total).astype(np.float32)
    profiles = ("speech", "music_standard_stereo")
    with engine.Server(secret=SECRET) as server:
        pairs = []
        try:
            for k, profile in enumerate(profiles):
                channel = f"m{k}"
                host = engine.Client(channels=1)
                host.set_audio_profile(profile)
                host.start_audio_mixing(str(path))
                assert host._music.source.wait_ready(full=True)
                listener = engine.Client(channels=2)
                host.join_channel(server.address, channel, 1,
                                  engine.make_token(SECRET, channel, 1, "host"), "host",
                                  server_key=server.public_key)
                listener.join_channel(server.address, channel, 2,
                                      engine.make_token(SECRET, channel, 2, "audience"),
                                      "audience", server_key=server.public_key)
                pairs.append((host, listener))
            received = [[] for _ in pairs]
            n_frames = total // FRAME
            t0 = time.monotonic() + 0.05

            def push():
                for i in range(n_frames):
                    _pace(t0, i)
                    for host, _ in pairs:
                        host.push_audio(voice[None, i * FRAME:(i + 1) * FRAME])

            def pull():
                for i in range(n_frames):
                    _pace(t0, i + 1)
                    for k, (_, listener) in enumerate(pairs):
                        received[k].append(listener.pull_audio(FRAME))

            threads = [threading.Thread(target=push), threading.Thread(target=pull)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=total / RATE + 20)
            stats = [listener.stats() for _, listener in pairs]
        finally:
            for host, listener in pairs:
                host.leave_channel()
                listener.leave_channel()
    # What the host publishes: the voice in both channels plus the track.
    sent = voice[None, :total] + music[:, :total]
    start, n = int(LEAD_S * RATE), int(JUDGED_S * RATE)
    reference = sent[:, start:start + n]
    ref_corr = channel_correlation(reference)
    ref_high = band_energy(reference, 12000)
    results = {}
    for profile, chunks in zip(profiles, received):
        heard = np.concatenate([np.zeros((2, FRAME), np.float32)] + chunks, axis=1)
        st = stats[profiles.index(profile)]
        print(f"{profile}: listener stats " + ", ".join(
            f"{k} {st[k]:g}" for k in ("received", "lost", "concealed", "expanded_ms",
                                       "lengthened_ms", "shortened_ms")))
        # The lags of the mid signal's pieces, used for both channels.
        _, lags = align(reference.mean(axis=0), heard.mean(axis=0), start)
        aligned = np.zeros_like(reference)
        for i, lag in enumerate(lags):
            p = i * PIECE
            got = heard[:, start + lag + p:start + lag + p + PIECE]
            aligned[:, p:p + got.shape[1]] = got[:, :n - p]
        # The image and the spectrum are judged on the judged seconds as heard
        # (statistics of the whole stretch: the jitter buffer's moves do not
        # change them); the SNR needs the alignment.
        delay = int(np.median(lags))
        window = heard[:, start + delay:start + delay + n]
        corr = channel_correlation(window)
        high_db = 10 * np.log10(band_energy(window, 12000) / ref_high)
        snr = 10 * np.log10(np.sum(reference ** 2) / np.sum((aligned - reference) ** 2))
        results[profile] = corr, high_db
        print(f"{profile}: lags {np.min(lags)}..{np.max(lags)}, inter-channel correlation {corr:.3f} (source {ref_corr:.3f}), "
              f"energy above 12 kHz {high_db:+.1f} dB against the source, "
              f"SNR after alignment {snr:.1f} dB")
    corr, high_db = results["music_standard_stereo"]
    assert abs(corr - ref_corr) < 0.05
    assert abs(high_db) < 3.0
    corr, high_db = results["speech"]
    assert abs(corr - ref_corr) > 0.05 and corr > 0.99       # mono: the image is gone
    assert high_db < -3.0                                     # and the top band is cut
