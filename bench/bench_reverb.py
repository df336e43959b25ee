"""Side-by-side benchmark of the stagevox reverbs.

Runs stagevox and the tools a user would pick instead on the same speech, in
one run, and prints real-time factors, ratios and the targets of the
project's issue with PASS/FAIL.  Method (one core, one thread, median of
alternating runs after a warm-up, fresh processors per run, 10 ms frames at
48 kHz, each frame its own contiguous array) and helpers come from
``bench_core.py``.

1. ``Reverb`` against ``pedalboard.Reverb`` (JUCE's Freeverb) with
   comparable settings (room size 0.5 ~ rt60 1.3 s, damping 0.5, width 1):
   mono speech in, stereo out (pedalboard gets the mono frame on both
   channels, since it gives mono out for mono in), and stereo in and out.
   Target >= 1x.
2. ``ConvolutionReverb`` with a 1.5 s stereo impulse response (decaying
   noise), stereo in, against ``pedalboard.Convolution`` on the same file.
   Target >= 2x.
3. ``ConvolutionReverb`` with a 3 s mono impulse response, mono in, against
   ``pedalboard.Convolution`` (target >= 1x) and against frame-by-frame
   overlap-add with ``scipy.signal.oaconvolve`` (each frame convolved with
   the whole response and added into an output buffer; target >= 1x).

Before the tables a check line gives each convolution's largest error
against ``scipy.signal.fftconvolve`` of the whole signal (relative to the
peak; pedalboard normalizes the response, so its output is rescaled by a
least-squares gain first).

Usage::

    python bench/bench_reverb.py             # 30 s of audio, 5 repeats
    python bench/bench_reverb.py --quick     # smoke run
"""

import os
import platform
import sys
import tempfile

import bench_core as core  # sets the one-thread environment before NumPy loads
from bench_core import RATE, median_pair, print_speed_table, row, split_frames

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pedalboard  # noqa: E402
import scipy  # noqa: E402
import scipy.signal  # noqa: E402
import soundfile as sf  # noqa: E402

from stagevox.dsp.convolution import ConvolutionReverb  # noqa: E402
from stagevox.dsp.reverb import Reverb  # noqa: E402

#: pedalboard.Reverb defaults, and stagevox settings that sound alike.
PB_REVERB = dict(room_size=0.5, damping=0.5, wet_level=0.33, dry_level=0.4, width=1.0)
SV_REVERB = dict(rt60_s=1.3, damping=0.5, room_size=50.0, wet_level_db=-9.6,
                 dry_level_db=-8.0, width=1.0, wet_delay_ms=0.0)


def decaying_noise(channels, seconds, rt60_s, seed):
    """A synthetic impulse response: Gaussian noise decaying 60 dB per ``rt60_s``."""
    n = int(seconds * RATE)
    r = np.random.default_rng(seed)
    h = r.standard_normal((channels, n)) * 10.0 ** (-3.0 * np.arange(n) / (rt60_s * RATE))
    return (0.1 * h).astype(np.float32)


def frame_loop(proc, frames, **kwargs):
    def run():
        for frame in frames:
            proc.process(frame, RATE, **kwargs)
    return run


def oaconvolve_loop(frames, h):
    """Frame-by-frame overlap-add: each frame convolved with all of ``h``
    (``scipy.signal.oaconvolve``) and added into a running output."""
    def run():
        n = h.shape[-1]
        acc = np.zeros(FRAME_MAX + n - 1)
        for frame in frames:
            full = scipy.signal.oaconvolve(frame, h)
            acc[:full.size] += full
            m = frame.size                     # emit m samples, keep the rest
            acc[:-m] = acc[m:].copy()
            acc[-m:] = 0.0
    return run


FRAME_MAX = 480


def case_reverb(mono_frames, stereo_frames, seconds, repeats):
    dual = [np.ascontiguousarray(np.stack([f, f])) for f in mono_frames]
    rows = []
    sv, pb = median_pair(lambda: frame_loop(Reverb(**SV_REVERB), mono_frames),
                         lambda: frame_loop(pedalboard.Reverb(**PB_REVERB), dual, reset=False),
                         repeats)
    rows.append(row("Reverb, mono in, stereo out", "pedalboard Reverb (stereo)", seconds, sv,
                    pb, 1.0))
    sv, pb = median_pair(lambda: frame_loop(Reverb(**SV_REVERB), stereo_frames),
                         lambda: frame_loop(pedalboard.Reverb(**PB_REVERB), stereo_frames,
                                            reset=False), repeats)
    rows.append(row("Reverb, stereo in and out", "pedalboard Reverb (stereo)", seconds, sv, pb,
                    1.0))
    return rows


def case_convolution(frames, h, path, seconds, repeats, label, target):
    sv, pb = median_pair(lambda: frame_loop(ConvolutionReverb(ir=h), frames),
                         lambda: frame_loop(pedalboard.Convolution(path), frames, reset=False),
                         repeats)
    return row(f"ConvolutionReverb, {label}", "pedalboard Convolution", seconds, sv, pb, target)


def case_oaconvolve(frames, h, seconds, repeats, label):
    sv, sp = median_pair(lambda: frame_loop(ConvolutionReverb(ir=h), frames),
                         lambda: oaconvolve_loop(frames, h[0].astype(np.float64)), repeats)
    return row(f"ConvolutionReverb, {label}", "scipy oaconvolve per frame", seconds, sv, sp, 1.0)


def convolution_errors(frames, h, path):
    """Largest error / peak of stagevox and pedalboard against fftconvolve."""
    x = np.concatenate(frames, axis=-1).astype(np.float64)
    x2 = np.atleast_2d(x)
    ref = np.stack([scipy.signal.fftconvolve(x2[c % x2.shape[0]], h[c % h.shape[0]])[:x.shape[-1]]
                    for c in range(max(h.shape[0], x2.shape[0]))])
    fx = ConvolutionReverb(ir=h, dry_level_db=-np.inf)
    sv = np.atleast_2d(np.concatenate([fx.process(f, RATE) for f in frames], axis=-1))
    lat = fx.latency
    sv_err = np.abs(sv[:, lat:] - ref[:, :ref.shape[1] - lat]).max() / np.abs(ref).max()
    board = pedalboard.Convolution(path)
    pb = np.atleast_2d(np.concatenate([board.process(f, RATE, reset=False) for f in frames],
                                      axis=-1)).astype(np.float64)
    best = None
    for shift in range(0, 2048):  # pedalboard's latency, whatever it is
        a, b = pb[:, shift:], ref[:, :ref.shape[1] - shift]
        g = np.sum(a * b) / max(np.sum(a * a), 1e-30)
        err = np.abs(g * a - b).max() / np.abs(ref).max()
        if best is None or err < best[0]:
            best = (err, shift)
        if err < 1e-3:
            break
    return sv_err, lat, best


def main(argv=None):
    args = core.bench_arguments(__doc__.split("\n\n")[0], 30.0, argv)
    pinned = core.pin_to_one_core()
    mono, stereo = core.make_audio(args.seconds)
    seconds = mono.shape[0] / RATE
    mono_frames, stereo_frames = split_frames(mono), split_frames(stereo)
    print("stagevox reverb benchmark")
    print(f"  audio: {seconds:g} s of speech at {RATE} Hz, 10 ms frames; median of "
          f"{args.repeats} alternating runs after 1 warm-up")
    print(f"  CPU: {core.cpu_name()}, {pinned}; Python {platform.python_version()}, "
          f"NumPy {np.__version__}, Numba {numba.__version__}, SciPy {scipy.__version__}, "
          f"pedalboard {pedalboard.__version__}")
    with tempfile.TemporaryDirectory(prefix="stagevox-bench-") as tmp:
        ir15 = decaying_noise(2, 1.5, 1.2, seed=1)
        ir3 = decaying_noise(1, 3.0, 2.0, seed=2)
        path15, path3 = os.path.join(tmp, "ir15.wav"), os.path.join(tmp, "ir3.wav")
        sf.write(path15, ir15.T, RATE, subtype="FLOAT")
        sf.write(path3, ir3.T, RATE, subtype="FLOAT")
        check = stereo_frames[:500]
        sv_err, lat, (pb_err, pb_lat) = convolution_errors(check, ir15.astype(np.float64),
                                                           path15)
        print(f"  same work (1.5 s stereo response, 5 s of audio) vs fftconvolve, largest "
              f"error / peak: stagevox {sv_err:.1e} (latency {lat}), pedalboard {pb_err:.1e} "
              f"(gain-matched, latency {pb_lat})")
        print()
        rows = case_reverb(mono_frames, stereo_frames, seconds, args.repeats)
        rows.append(case_convolution(stereo_frames, ir15, path15, seconds, args.repeats,
                                     "1.5 s stereo IR, stereo in", 2.0))
        rows.append(case_convolution(mono_frames, ir3, path3, seconds, args.repeats,
                                     "3 s IR, mono", 1.0))
        rows.append(case_oaconvolve(mono_frames, ir3, seconds, args.repeats, "3 s IR, mono"))
    print("Speed (x real time = audio seconds / processing seconds; ratio = stagevox / other)")
    print_speed_table(rows)
    print()
    ok = [r["ok"] for r in rows]
    print(f"{ok.count(True)} of {len(ok)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
