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
    python bench/bench_pitch.py --quick      # 5 s, 2 repeats
"""

import bench_core as core  # sets the one-thread environment before NumPy loads
from bench_core import median_pair, pin_to_one_core, split_frames, verdict

import platform  # noqa: E402

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
    y = np.concatenate([down.process(up.process(f, RATE), RATE) for f in split_frames(x)])
    lat = up.latency + down.latency
    return scores(x[:-lat], y[lat:]), lat


def round_trip_rubberband(x, k):
    first = rubberband_frames(k, split_frames(x), flush=RATE)()
    second = rubberband_frames(-k, split_frames(first[:x.size + RATE // 2]), flush=RATE)()
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
    x = core.make_audio(3.0)[0]
    reported = rubberband(semitones).get_start_delay()
    y = rubberband_frames(0.0, split_frames(x), flush=RATE // 2)()
    lag = delay_by_xcorr(y, x, RATE // 5)
    rb = rubberband(semitones)
    fed = got = 0
    short = 0
    for i, f in enumerate(split_frames(x)):
        rb.process(f[None, :])
        fed += f.size
        n = rb.available()
        if n > 0:
            got += rb.retrieve(n).shape[1]
        if i >= 10:  # after the first 100 ms
            short = max(short, fed - got)
    return reported, lag + short


def main():
    args = core.bench_arguments(__doc__.splitlines()[0], 60.0)
    pinned = pin_to_one_core()
    print(f"stagevox PitchShift vs Rubber Band {pylibrb.__version__} (R2 real-time engine)")
    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, {pinned}; {args.seconds:g} s of speech at 48 kHz, "
          f"10 ms frames, median of {args.repeats}")
    print()

    audio = core.make_audio(args.seconds)[0]
    frames = split_frames(audio)
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
