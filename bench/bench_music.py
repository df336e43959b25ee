"""Benchmark of music mixing on the client: decoding a 48 kHz stereo MP3
ahead on the worker thread and mixing it into the published voice and the
local playout, in percent of one core.

A 48 kHz stereo MP3 (a synthetic backing track: a bass, a chord, a melody
and noise hi-hats, written with soundfile/libsndfile) is played by
``engine.music.MusicMixer`` as a host would: per 10 ms frame,
``mix_publish`` (voice + music at the publish volume, through the limiter)
and ``playout`` (the music at the playout volume).  CPU is
``time.thread_time`` of the worker (PyAV decode, queueing; no resampling at
48 kHz) plus that of the thread running the frames, over the audio's
duration.  The frames run on a real-time 10 ms clock, as live (run
unpaced, the two threads contend for the GIL and each one's CPU time grows
with the waiting: 3.6 % instead of about 1.5 % measured here).

A process that wakes every 10 ms finds its caches cold: on the development
machine (2 shared cores) the same frame costs about ten times more CPU
paced than back to back, so the bench prints the frame path back to back
too, and the limiter alone paced, as the machine's share.

Beside it, what a user would pick to read the same MP3 in Python, decoding
only, in one go: PyAV (``av.open`` and ``decode``) and, if the bench extra
is installed, pedalboard's ``AudioFile``.  Target (issue 10): stagevox under
3 % of one core.

Usage::

    python bench/bench_music.py               # 60 s of music, in real time
    python bench/bench_music.py --seconds 20
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal as ss
import soundfile as sf

from stagevox import dsp
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


def stagevox_mixing(path, seconds):
    """CPU percent of one core: (worker + frame thread) / audio seconds."""
    voice = np.resize(dsp.samples.speech(RATE), int(seconds * RATE)).astype(np.float32)
    voice = np.stack([voice, voice]) * np.float32(0.5)
    mixer = MusicMixer()
    mixer.start(path)
    source = mixer.source
    source.wait_ready()
    opening = source.worker_cpu_s          # open, probe, first block: once a song
    frames = int(seconds * RATE) // FRAME
    busy = 0.0
    start = time.monotonic()
    for i in range(frames):
        delay = start + i * FRAME / RATE - time.monotonic()      # a live 10 ms clock
        if delay > 0:
            time.sleep(delay)
        t0 = time.thread_time()
        mixer.mix_publish(voice[:, i * FRAME:(i + 1) * FRAME])
        mixer.playout(FRAME, RATE, 2)
        busy += time.thread_time() - t0
    worker = source.worker_cpu_s
    underruns = source.underruns
    mixer.stop()
    return 100 * worker / seconds, 100 * busy / seconds, underruns, opening


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


def limiter_paced(seconds=5.0):
    """CPU percent of one core of dsp.Limiter alone on 10 ms stereo frames,
    paced as live: what waking every 10 ms costs on this machine."""
    limiter = dsp.Limiter()
    voice = np.full((2, FRAME), 0.01, np.float32)
    busy, start = 0.0, time.monotonic()
    for i in range(int(seconds * RATE / FRAME)):
        delay = start + i * FRAME / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.thread_time()
        limiter.process(voice, RATE)
        busy += time.thread_time() - t0
    return 100 * busy / seconds


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
                        help="length of the MP3 (the run takes as long)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="stagevox-bench-music-") as folder:
        path = Path(folder) / "track.mp3"
        sf.write(path, backing_track(args.seconds, rng), RATE)
        info = sf.info(path)
        print(f"music: {path.name}, {info.samplerate} Hz, {info.channels} channels, "
              f"{info.duration:.1f} s")
        dsp.Limiter().process(np.zeros((2, FRAME), np.float32), RATE)   # kernels loaded
        worker, frames, underruns, opening = stagevox_mixing(path, args.seconds)
        total = worker + frames
        print(f"stagevox MusicMixer: worker (decode, queue) {worker:.2f} % + frames "
              f"(mix_publish, limiter, playout) {frames:.2f} % = {total:.2f} % of one core "
              f"({underruns} underruns; opening the file took {1e3 * opening:.0f} ms of CPU, "
              "in the worker's share)")
        warm = frames_back_to_back(path)
        print(f"  the frames run back to back (warm caches): {warm:.2f} % of one core; "
              f"dsp.Limiter alone, paced as live: {limiter_paced():.2f} % (the cost of "
              "waking every 10 ms on this machine)")
        print(f"PyAV decode only, one go:        {pyav_decode(path, args.seconds):.2f} % "
              "of one core")
        pb = pedalboard_decode(path, args.seconds)
        print("pedalboard AudioFile decode only: " + ("not installed (bench extra)"
                                                      if pb is None else f"{pb:.2f} % of one core"))
        verdict = "PASS" if total < TARGET_PCT else "FAIL"
        print(f"target: under {TARGET_PCT:g} % of one core -> {verdict}")


if __name__ == "__main__":
    main()
