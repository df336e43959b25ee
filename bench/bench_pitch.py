"""Side-by-side benchmark of stagevox's PitchShift and Rubber Band's real-time engine.

Rubber Band (through ``pylibrb``) is what a user would pick instead: its
real-time mode with the R2 ("faster") engine, formants preserved, no
threads, pitch set with ``pitch_scale``, fed and drained 10 ms at a time
(``process`` then ``retrieve(available())``).  stagevox: ``PitchShift``
(formants preserved, the default), ``process`` on each 10 ms frame.

1. Speed: seconds of audio per second of processing (x real time) of both,
   in 10 ms frames at 48 kHz, mono, one core; target stagevox >= 4x.
2. Latency: stagevox's ``latency`` (28 ms) against Rubber Band's
   ``get_start_delay()`` and its measured delay (output lag by
   cross-correlation, plus the largest shortfall of output retrieved behind
   input fed in 10 ms frames, which a live output must buffer); target
   stagevox <= 30 ms and below Rubber Band.
3. Quality: round trips +4/-4 and +7/-7 semitones of the bundled speech
   (19 s): STOI (``pystoi``) and wide-band PESQ (``pesq``, at 16 kHz)
   against the original.  stagevox is aligned by its two latencies;
   Rubber Band by the cross-correlation peak of its round trip (its best
   alignment).  Target: stagevox at least equal on both; the issue's STOI
   >= 0.9 is printed too.

Every speed figure is the median of ``--repeats`` timed runs after one
untimed warm-up; the runs of the two tools alternate.

Usage::

    python bench/bench_pitch.py              # 60 s of audio, 5 repeats
    python bench/bench_pitch.py --quick      # 10 s, 2 repeats
"""

import os

for _name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pylibrb  # noqa: E402
import soxr  # noqa: E402
from pesq import pesq  # noqa: E402
from pystoi import stoi  # noqa: E402

from stagevox import dsp  # noqa: E402
from stagevox.dsp.pitch import PitchShift  # noqa: E402

RATE = 48000
FRAME = 480  # 10 ms
SPEED_SHIFTS = (4.0, -7.0)
ROUND_TRIPS = (4, 7)


def pin_to_one_core():
    """Pin this process to one CPU; return a description."""
    if hasattr(os, "sched_setaffinity"):
        try:
            cpu = min(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpu})
            return f"pinned to CPU {cpu}"
        except OSError as exc:
            return f"not pinned ({exc})"
    return "not pinned (no sched_setaffinity on this system)"


def make_audio(seconds):
    """The bundled speech sample repeated to ``seconds``, float32, 48 kHz."""
    speech = dsp.samples.speech(RATE)
    n = int(round(seconds * RATE))
    return np.ascontiguousarray(np.tile(speech, -(-n // speech.size))[:n], dtype=np.float32)


def frames_of(audio):
    return [np.ascontiguousarray(audio[i:i + FRAME]) for i in range(0, audio.size, FRAME)]


def rubberband(semitones):
    options = (pylibrb.Option.PROCESS_REALTIME | pylibrb.Option.ENGINE_FASTER
               | pylibrb.Option.THREADING_NEVER | pylibrb.Option.FORMANT_PRESERVED
               | pylibrb.Option.PitchHighConsistency)
    return pylibrb.RubberBandStretcher(RATE, 1, options, 1.0, 2.0 ** (semitones / 12.0))


# ------------------------------------------------------------------ running

def stagevox_frames(semitones, frames):
    fx = PitchShift(semitones=semitones)

    def run():
        out = [fx.process(f, RATE) for f in frames]
        return np.concatenate(out)
    return run


def rubberband_frames(semitones, frames, flush=0):
    rb = rubberband(semitones)

    def run():
        out = []
        tail = [np.zeros(FRAME, np.float32)] * (flush // FRAME + 1) if flush else []
        for f in list(frames) + tail:
            rb.process(f[None, :])
            n = rb.available()
            if n > 0:
                out.append(rb.retrieve(n)[0])
        return np.concatenate(out) if out else np.zeros(0, np.float32)
    return run


def time_once(make_run):
    run = make_run()
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def median_pair(make_a, make_b, repeats):
    make_a()()
    make_b()()
    a, b = [], []
    for _ in range(repeats):
        a.append(time_once(make_a))
        b.append(time_once(make_b))
    return statistics.median(a), statistics.median(b)


# ------------------------------------------------------------------ measures

def delay_by_xcorr(y, x, max_lag):
    """Lag (samples) at which ``y`` best matches ``x`` (FFT cross-correlation)."""
    n = min(y.size, x.size)
    size = 1
    while size < 2 * n:
        size *= 2
    c = np.fft.irfft(np.fft.rfft(y[:n], size) * np.conj(np.fft.rfft(x[:n], size)), size)
    return int(np.argmax(c[:max_lag]))


def scores(ref, out):
    """(STOI, PESQ wide band) of ``out`` against ``ref`` (same length, 48 kHz)."""
    r16 = soxr.resample(ref, RATE, 16000)
    o16 = soxr.resample(out, RATE, 16000)
    return stoi(r16, o16, 16000), pesq(16000, r16, o16, "wb")


def round_trip_stagevox(x, k):
    up, down = PitchShift(semitones=k), PitchShift(semitones=-k)
    y = np.concatenate([down.process(up.process(f, RATE), RATE) for f in frames_of(x)])
    lat = up.latency + down.latency
    return scores(x[:-lat], y[lat:]), lat


def round_trip_rubberband(x, k):
    first = rubberband_frames(k, frames_of(x), flush=RATE)()
    second = rubberband_frames(-k, frames_of(first[:x.size + RATE // 2]), flush=RATE)()
    lag = delay_by_xcorr(second, x, RATE // 5)
    n = min(x.size, second.size - lag)
    return scores(x[:n], second[lag:lag + n]), lag


def rubberband_delay(semitones=4.0):
    """Rubber Band's delay in samples: (reported start delay, measured).

    Measured = the lag of its output against its input (cross-correlation
    at pitch scale 1) plus the largest shortfall of samples retrieved
    behind samples fed (a live output must be buffered that much to never
    run dry), while shifting by ``semitones`` in 10 ms frames.
    """
    x = make_audio(3.0)
    reported = rubberband(semitones).get_start_delay()
    y = rubberband_frames(0.0, frames_of(x), flush=RATE // 2)()
    lag = delay_by_xcorr(y, x, RATE // 5)
    rb = rubberband(semitones)
    fed = got = 0
    short = 0
    for i, f in enumerate(frames_of(x)):
        rb.process(f[None, :])
        fed += f.size
        n = rb.available()
        if n > 0:
            got += rb.retrieve(n).shape[1]
        if i >= 10:  # after the first 100 ms
            short = max(short, fed - got)
    return reported, lag + short


def verdict(ok):
    return "PASS" if ok else "FAIL"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10 s of audio, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeats = 10.0, 2
    pinned = pin_to_one_core()
    print(f"stagevox PitchShift vs Rubber Band {pylibrb.__version__} (R2 real-time engine)")
    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, {pinned}; {args.seconds:g} s of speech at 48 kHz, "
          f"10 ms frames, median of {args.repeats}")
    print()

    audio = make_audio(args.seconds)
    frames = frames_of(audio)
    checks = []
    print("1. speed (x real time, mono, 10 ms frames)")
    print(f"   {'shift':>8}  {'stagevox':>10}  {'rubberband':>10}  {'ratio':>7}  target >= 4x")
    for s in SPEED_SHIFTS:
        a, b = median_pair(lambda s=s: stagevox_frames(s, frames),
                           lambda s=s: rubberband_frames(s, frames), args.repeats)
        rt_a, rt_b = args.seconds / a, args.seconds / b
        ok = rt_a / rt_b >= 4.0
        checks.append(ok)
        print(f"   {s:>+8.0f}  {rt_a:>10.1f}  {rt_b:>10.1f}  {rt_a / rt_b:>6.2f}x  {verdict(ok)}")
    print()

    ours = PitchShift().latency
    reported, measured = rubberband_delay()
    print("2. latency")
    print(f"   stagevox   {ours:5d} samples = {1000 * ours / RATE:5.1f} ms (reported and exact)")
    print(f"   rubberband {reported:5d} samples = {1000 * reported / RATE:5.1f} ms reported "
          f"(get_start_delay), {measured} samples = {1000 * measured / RATE:.1f} ms measured")
    ok = ours <= 0.030 * RATE and ours <= max(reported, measured)
    checks.append(ok)
    print(f"   target stagevox <= 30 ms and <= rubberband: {verdict(ok)}")
    print()

    speech = dsp.samples.speech(RATE)
    print(f"3. round-trip quality on the speech sample ({speech.size / RATE:.0f} s)")
    print(f"   {'trip':>6}  {'STOI sv':>8}  {'STOI rb':>8}  {'PESQ sv':>8}  {'PESQ rb':>8}  "
          f"{'STOI>=rb':>8}  {'PESQ>=rb':>8}  {'STOI>=0.9':>9}")
    for k in ROUND_TRIPS:
        (s_sv, p_sv), _ = round_trip_stagevox(speech, k)
        (s_rb, p_rb), _ = round_trip_rubberband(speech, k)
        a, b, c = s_sv >= s_rb, p_sv >= p_rb, s_sv >= 0.9
        checks += [a, b]
        print(f"   {'+-' + str(k):>6}  {s_sv:>8.3f}  {s_rb:>8.3f}  {p_sv:>8.2f}  {p_rb:>8.2f}  "
              f"{verdict(a):>8}  {verdict(b):>8}  {verdict(c):>9}")
    print()
    print(f"overall (speed, latency, quality vs rubberband): {verdict(all(checks))}")


if __name__ == "__main__":
    main()
