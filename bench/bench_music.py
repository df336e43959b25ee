"""Benchmark of music mixing on the client: decoding a 48 kHz stereo MP3
ahead on the worker thread and mixing it into the published voice and the
local playout, in percent of one core.

A 48 kHz stereo MP3 (a synthetic backing track: a bass, a chord, a melody
and noise hi-hats, written with soundfile/libsndfile) is played by
``engine.music.MusicMixer`` as a host would: per 10 ms frame,
``mix_publish`` (voice + music at the publish volume, through the limiter)
and ``playout`` (the music at the playout volume).

What the music costs is what it adds to a client that already runs a
10 ms clock to push its voice.  So one thread runs a paced 10 ms loop that
does a host's own voice work (an Opus encode of the voice every 20 ms, as
the client's sender does), in alternating segments of ``--segment``
seconds: without music, then with it (the same loop plus ``mix_publish``
and ``playout``; the worker decodes meanwhile).  Each segment's CPU is the
process's (``time.process_time``: every thread, the worker's decoding
included), so the wake-ups that both share cancel out; the music's cost is
the median over segment pairs of (with - without).  Target (issue 10):
under 3 % of one core.  Beside it, each part measured alone: the worker's
own thread time (decode, resample, queue), the frame calls' thread time
(measured inside the calls, paced), and the frame path back to back (warm
caches: what the calls cost when the machine does not make every wake-up
a cold start).

And what a user would pick to read the same MP3 in Python, decoding only,
in one go: PyAV (``av.open`` and ``decode``) and, if the bench extra is
installed, pedalboard's ``AudioFile``.

Usage::

    python bench/bench_music.py               # 60 s with music + 60 s without, in real time
    python bench/bench_music.py --seconds 20
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal as ss
import soundfile as sf

from stagevox import dsp
from stagevox.engine.codec import OpusEncoder
from stagevox.engine.music import MusicMixer

RATE = 48000
FRAME = 480
TARGET_PCT = 3.0


def backing_track(seconds, rng):
    """A synthetic stereo track at 48 kHz (float32, (n, 2))."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE

    def harmonic(f0, amp):
        return sum(amp / k * np.sin(2 * np.pi * f0 * k * t + k) for k in range(1, 6))

    bass = harmonic(55.0, 0.25)
    chord = sum(harmonic(f, 0.06) for f in (220.0, 277.2, 329.6))
    notes = np.array([440.0, 493.9, 554.4, 659.3])[(t // 0.5).astype(int) % 4]
    melody = 0.08 * np.sin(2 * np.pi * np.cumsum(notes) / RATE)
    hats = ss.sosfilt(ss.butter(4, 8000, fs=RATE, btype="high", output="sos"),
                      rng.standard_normal((2, n)), axis=1) * np.exp(-((t % 0.25) / 0.03))
    x = np.stack([bass + 0.8 * chord + 0.3 * melody + 0.15 * hats[0],
                  bass + 0.3 * chord + 0.8 * melody + 0.15 * hats[1]])
    return (0.25 * x / np.abs(x).max()).T.astype(np.float32)


def paced_segments(path, seconds, segment):
    """The paced 10 ms loop, alternately without and with music, ``segment`` s
    each, ``seconds`` of each in all.  Returns per-segment CPU percent of
    one core (process time) without and with music, the worker's and the
    frame calls' own percent (with music), the underruns and the worker's
    CPU seconds for opening the file."""
    voice = np.resize(dsp.samples.speech(RATE), int(seconds * RATE) + RATE).astype(np.float32)
    voice = np.stack([voice, voice]) * np.float32(0.5)
    encoder = OpusEncoder(channels=2, bitrate=64000, frame_ms=20, application="audio")
    mixer = MusicMixer()
    mixer.start(path, cycle=-1)
    source = mixer.source
    source.wait_ready(full=True, timeout=30)
    opening = source.worker_cpu_s          # open, probe, first second: once a song
    per_segment = int(segment * RATE) // FRAME
    pairs = max(1, round(seconds / segment))
    without, with_music, worker, calls = [], [], 0.0, 0.0
    i = 0
    for k in range(2 * pairs):
        music = k % 2 == 1
        worker0 = source.worker_cpu_s
        cpu0, wall0 = time.process_time(), time.monotonic()
        pending = None
        for _ in range(per_segment):
            delay = wall0 + (i % per_segment) * FRAME / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            x = voice[:, (i * FRAME) % (voice.shape[1] - FRAME):][:, :FRAME]
            if music:
                t0 = time.thread_time()
                x = mixer.mix_publish(x)
                mixer.playout(FRAME, RATE, 2)
                calls += time.thread_time() - t0
            if pending is None:        # the sender encodes a packet per 20 ms
                pending = x
            else:
                encoder.encode(np.concatenate([pending, x], axis=1))
                pending = None
            i += 1
        pct = 100 * (time.process_time() - cpu0) / (per_segment * FRAME / RATE)
        (with_music if music else without).append(pct)
        if music:
            worker += source.worker_cpu_s - worker0
    underruns = source.underruns
    mixer.stop()
    music_s = pairs * per_segment * FRAME / RATE
    return without, with_music, 100 * worker / music_s, 100 * calls / music_s, underruns, opening


def frames_back_to_back(path, count=2000):
    """CPU percent of one core of the frame path run back to back (warm caches)."""
    voice = np.full((2, FRAME), 0.01, np.float32)
    mixer = MusicMixer()
    mixer.start(path, buffer_ms=30000)
    mixer.source.wait_ready(full=True, timeout=30)
    t0 = time.thread_time()
    for _ in range(count):
        mixer.mix_publish(voice)
        mixer.playout(FRAME, RATE, 2)
    busy = time.thread_time() - t0
    mixer.stop()
    return 100 * busy / (count * FRAME / RATE)


def pyav_decode(path, seconds):
    import av
    t0 = time.thread_time()
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            frame.to_ndarray()
    return 100 * (time.thread_time() - t0) / seconds


def pedalboard_decode(path, seconds):
    try:
        from pedalboard.io import AudioFile
    except ImportError:
        return None
    t0 = time.thread_time()
    with AudioFile(str(path)) as f:
        while f.tell() < f.frames:
            f.read(RATE)
    return 100 * (time.thread_time() - t0) / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds with music (as many without; the run takes twice as long)")
    parser.add_argument("--segment", type=float, default=5.0,
                        help="seconds of one segment with or without music")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="stagevox-bench-music-") as folder:
        path = Path(folder) / "track.mp3"
        sf.write(path, backing_track(args.seconds, rng), RATE)
        info = sf.info(path)
        print(f"music: {path.name}, {info.samplerate} Hz, {info.channels} channels, "
              f"{info.duration:.1f} s")
        dsp.Limiter().process(np.zeros((2, FRAME), np.float32), RATE)   # kernels loaded
        without, with_music, worker, calls, underruns, opening = paced_segments(
            path, args.seconds, args.segment)
        added = [w - o for w, o in zip(with_music, without)]
        cost = statistics.median(added)
        print(f"paced 10 ms loop of a host's voice (Opus encode per 20 ms), "
              f"{len(added)} pairs of {args.segment:g} s segments, load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:")
        print(f"  without music {statistics.median(without):.2f} %, with music "
              f"{statistics.median(with_music):.2f} % of one core (process CPU, medians)")
        print(f"  music adds {cost:.2f} % of one core (median of the pairs' differences; "
              f"each: {', '.join(f'{a:.2f}' for a in added)})")
        print(f"  its parts, each thread's own time: worker (decode, queue) {worker:.2f} %, "
              f"frame calls (mix_publish, limiter, playout) {calls:.2f} % "
              f"({underruns} underruns; opening the file took {1e3 * opening:.0f} ms of CPU, "
              "not counted)")
        warm = frames_back_to_back(path)
        print(f"  the frame calls back to back (warm caches): {warm:.2f} % of one core")
        print(f"PyAV decode only, one go:        {pyav_decode(path, args.seconds):.2f} % "
              "of one core")
        pb = pedalboard_decode(path, args.seconds)
        print("pedalboard AudioFile decode only: " + ("not installed (bench extra)"
                                                      if pb is None else f"{pb:.2f} % of one core"))
        verdict = "PASS" if cost < TARGET_PCT else "FAIL"
        print(f"target: music adds under {TARGET_PCT:g} % of one core -> {verdict}")


if __name__ == "__main__":
    main()
