"""Benchmark of stagevox spatial audio: the Spatializer and SpatialScene.render.

Prints real-time factors, ratios and the targets of the spatial audio issue
with PASS/FAIL, in one run, on one core, at 48 kHz in 10 ms frames:

1. One moving source through ``Spatializer`` (its azimuth changes every
   frame, so every frame interpolates a new HRTF and cross-fades to it)
   against ``scipy.signal.oaconvolve`` with a fixed 2 x 256-tap HRIR applied
   frame by frame with overlap-add (target >= 2x).
2. ``SpatialScene.render`` of 17 moving speakers (every position updated
   every frame), target >= 60x real time; also with Doppler (extra row),
   the same in CPU time of the running thread (less sensitive to other
   programs on a shared machine), and where a frame's time goes: the position updates,
   the bare kernel (``render_mix``) and the rest of ``render``.
3. The design choice behind the filters of one source (the Spatializer):
   one 10 ms frame of both ears through 128-tap filters, direct FIR (the
   kernel used) against FFT overlap-add inside Numba (rocket-fft: one rfft
   of the input, one irfft per ear and filter), still and cross-fading (two
   filters per ear).  A scene sums the spectra of all its speakers and needs
   two real FFTs per speaker and at most six inverse FFTs per frame, each
   kind in one batch, so for many speakers the FFT wins
   (``kernels.spatial.render_mix``).
4. Python overhead of ``Spatializer.process`` per frame above the bare kernel.

Real-time factor (x real time) = seconds of audio / seconds of processing;
ratio = stagevox's real-time factor / the other's.  Every figure is the
median of ``--repeats`` timed runs after one untimed warm-up; the two sides
of a comparison alternate.

Usage::

    python bench/bench_spatial.py            # 30 s of audio, 5 repeats
    python bench/bench_spatial.py --quick    # 5 s, 2 repeats
"""

import bench_core as core  # sets the one-thread environment before NumPy loads
from bench_core import cpu_name, medians, pin_to_one_core, split_frames, verdict

import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.signal  # noqa: E402

from stagevox import dsp  # noqa: E402
from stagevox.dsp.kernels import JIT_OPTIONS  # noqa: E402
from stagevox.dsp.kernels import spatial as k  # noqa: E402

RATE = 48000
FRAME = 480
SPEAKERS = 17
HRIR_TAPS = 256
#: Real-time factor asked of SpatialScene.render with 17 moving speakers.
SCENE_TARGET = 60.0


# ------------------------------------------------------------------ set-up

def speech(seconds, offset=0):
    """The bundled speech repeated to ``seconds``, rotated by ``offset`` samples."""
    s = dsp.samples.speech(RATE)
    n = int(round(seconds * RATE))
    return np.ascontiguousarray(np.roll(np.tile(s, -(-n // s.size)), offset)[:n],
                                dtype=np.float32)


# ------------------------------------------------------------------ case 1

def azimuth_at(i):
    """Azimuth of the moving source in frame ``i``: a turn every 2 s."""
    return (i * 1.8 + 180.0) % 360.0 - 180.0


def make_spatializer_run(frames):
    def make():
        fx = dsp.Spatializer()
        fx.process(frames[0], RATE)
        fx.reset()

        def run():
            for i, f in enumerate(frames):
                fx.azimuth_deg = azimuth_at(i)
                fx.process(f, RATE)
        return run
    return make


def fixed_hrir():
    """A 2 x 256-tap HRIR (KEMAR, 60 degrees left): onset delays put back in
    front of the minimum-phase filters."""
    filters, delays = dsp.Hrtf.default().interpolate(60.0, 0.0)
    hrir = np.zeros((2, HRIR_TAPS), np.float32)
    for ear in range(2):
        start = int(round(delays[ear]))
        hrir[ear, start:start + filters.shape[1]] = filters[ear][:HRIR_TAPS - start]
    return hrir


def make_oaconvolve_run(frames, hrir):
    def make():
        tail = np.zeros((2, HRIR_TAPS - 1), np.float32)

        def run():
            nonlocal tail
            for f in frames:
                y = scipy.signal.oaconvolve(f[None, :], hrir, axes=1)
                y[:, :HRIR_TAPS - 1] += tail
                tail = y[:, f.size:].copy()
                y[:, :f.size]  # the frame's output
        return run
    return make


def check_same_work(frames, hrir):
    """Largest errors: the frame-wise overlap-add against one lfilter over the
    whole signal, and a still Spatializer against delay + filter done with
    SciPy.  Shows both sides compute what they claim."""
    x = np.concatenate(frames).astype(np.float64)
    tail = np.zeros((2, HRIR_TAPS - 1))
    out = []
    for f in frames:
        y = scipy.signal.oaconvolve(f[None, :].astype(np.float64), hrir, axes=1)
        y[:, :HRIR_TAPS - 1] += tail
        tail = y[:, f.size:].copy()
        out.append(y[:, :f.size])
    ola = np.concatenate(out, axis=1)
    ref = np.stack([scipy.signal.lfilter(hrir[e], [1.0], x) for e in range(2)])
    ola_err = np.abs(ola - ref).max() / np.abs(ref).max()
    short = x[:RATE]
    sv = dsp.Spatializer(azimuth_deg=60.0).process(short.astype(np.float32), RATE)
    filters, delays = dsp.Hrtf.default().interpolate(60.0, 0.0)
    n_fft = 2 * short.size
    omega = 2 * np.pi * np.fft.rfftfreq(n_fft)
    spectrum = np.fft.rfft(short, n_fft)
    sos = scipy.signal.butter(8, 4000, fs=RATE, output="sos")
    sv_err = 0.0
    for e in range(2):
        # band-limited (exact) fractional delay, then the filter
        delay = delays[e] + k.BASE_DELAY
        delayed = np.fft.irfft(spectrum * np.exp(-1j * omega * delay), n_fft)[:short.size]
        ref = scipy.signal.lfilter(filters[e].astype(np.float64), [1.0], delayed)
        # third-order Lagrange is exact only at low frequencies: compare below 4 kHz
        a = scipy.signal.sosfilt(sos, sv[e])
        b = scipy.signal.sosfilt(sos, ref)
        sv_err = max(sv_err, np.abs(a - b).max() / np.abs(b).max())
    return ola_err, sv_err


# ------------------------------------------------------------------ case 2

def speaker_positions(i):
    """Positions of the 17 speakers in frame ``i``: each circles the listener
    at its own radius, height and speed, facing the way it walks."""
    out = []
    for u in range(SPEAKERS):
        a = u * 2 * math.pi / SPEAKERS + i * 0.01 * (1 + 0.1 * u)
        r = 1.5 + 0.4 * u
        out.append(((r * math.cos(a), r * math.sin(a), 0.2 * (u % 5) - 0.4),
                    (-math.sin(a), math.cos(a), 0.0)))
    return out


def make_scene_run(signals, doppler, part="all"):
    """A maker of runs of the scene over ``signals``; ``part``: "all" (what
    a user does: update the positions, render), "update" (the position
    updates alone) or "kernel" (the bare kernel on the same inputs, its
    targets computed beforehand)."""
    n_frames = signals.shape[1] // FRAME
    positions = [speaker_positions(i) for i in range(n_frames)]
    frames = [{u: np.ascontiguousarray(signals[u, i * FRAME:(i + 1) * FRAME])
               for u in range(SPEAKERS)} for i in range(n_frames)]

    def make():
        scene = dsp.SpatialScene(doppler=doppler)
        scene.update_self_position((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1))
        for u, (p, f) in enumerate(positions[0]):
            scene.update_remote_position(u, p, forward=f)
        scene.render(frames[0], RATE)
        scene.reset()

        def run():
            for i in range(n_frames):
                for u, (p, f) in enumerate(positions[i]):
                    scene.update_remote_position(u, p, forward=f)
                scene.render(frames[i], RATE)

        def update():
            for i in range(n_frames):
                for u, (p, f) in enumerate(positions[i]):
                    scene.update_remote_position(u, p, forward=f)

        if part == "update":
            return update
        if part == "all":
            return run
        sp = scene._spatial
        targets, inputs = [], []
        for i in range(n_frames):
            for u, (p, f) in enumerate(positions[i]):
                scene.update_remote_position(u, p, forward=f)
            scene._targets(sp.targets, RATE, 0.0)
            targets.append(sp.targets.copy())
            x = np.zeros((sp.targets.shape[0], FRAME), np.float32)
            x[:SPEAKERS] = signals[:, i * FRAME:(i + 1) * FRAME]
            inputs.append(x)
        out = np.empty((2, FRAME), np.float32)

        def kernel():
            for i in range(n_frames):
                sp.targets[:] = targets[i]  # a copy of 32 x 10 numbers, ~1 us
                sp.render(inputs[i], out)
        return kernel
    return make


def cpu_medians(makers, repeats):
    """Median CPU times of ``makers`` (of this thread only: other threads of
    the process, such as a BLAS pool, do not count), run as ``bench_core.medians``
    runs them (a warm-up each, then taking turns)."""
    times = [[] for _ in makers]

    def timed(make, t):
        def make_timed():
            run = make()

            def go():
                t0 = time.thread_time()
                run()
                t.append(time.thread_time() - t0)
            return go
        return make_timed

    medians([timed(make, t) for make, t in zip(makers, times)], repeats)
    return [statistics.median(t[1:]) for t in times]  # t[0]: the warm-up


# ------------------------------------------------------------------ case 3

@numba.njit(**JIT_OPTIONS)
def fft_frame(x, spectra, n_fft, overlap, out):
    """FFT overlap-add of one frame through ``spectra.shape[0]`` filters."""
    m = x.shape[0]
    xs = np.fft.rfft(x, n_fft)
    for f in range(spectra.shape[0]):
        y = np.fft.irfft(xs * spectra[f], n_fft)
        for j in range(m):
            out[f, j] = y[j] + overlap[f, j]
        for j in range(n_fft - m):
            overlap[f, j] = (overlap[f, m + j] if m + j < n_fft - m else 0.0) + y[m + j]


@numba.njit(**JIT_OPTIONS)
def direct_frame(buf, filters, out):
    """Direct FIR of one frame through each row of ``filters`` (the kernel's code)."""
    hist = filters.shape[1] - 1
    for f in range(filters.shape[0]):
        k._fir(buf, hist, filters[f], out[f], out.shape[1])


@numba.njit(**JIT_OPTIONS)
def direct_pair_frame(buf, old, new, ya, yb):
    hist = old.shape[1] - 1
    for e in range(old.shape[0]):
        k._fir_pair(buf, hist, old[e], new[e], ya[e], yb[e], ya.shape[1])


def fir_choice(repeats, calls=20000):
    """Microseconds per 10 ms frame, both ears: direct FIR vs FFT overlap-add."""
    taps = dsp.Hrtf.default().taps
    r = np.random.default_rng(0)
    buf = r.standard_normal(taps - 1 + FRAME).astype(np.float32)
    x = buf[taps - 1:].copy()
    filters = r.standard_normal((4, taps)).astype(np.float32)
    n_fft = 1 << int(math.ceil(math.log2(FRAME + taps - 1)))
    spectra = np.fft.rfft(filters, n_fft).astype(np.complex128)

    def per_frame(fn, *args):
        def make():
            def run():
                for _ in range(calls):
                    fn(*args)
            return run
        return make

    out2 = np.zeros((2, FRAME), np.float32)
    out4 = np.zeros((4, FRAME), np.float64)
    ya, yb = np.zeros((2, FRAME), np.float32), np.zeros((2, FRAME), np.float32)
    still = medians([per_frame(direct_frame, buf, filters[:2], out2),
                     per_frame(fft_frame, x, spectra[:2], n_fft, np.zeros((2, n_fft)), out4[:2])],
                    repeats)
    fading = medians([per_frame(direct_pair_frame, buf, filters[:2], filters[2:], ya, yb),
                      per_frame(fft_frame, x, spectra, n_fft, np.zeros((4, n_fft)), out4)],
                     repeats)
    return taps, n_fft, [t / calls * 1e6 for t in still], [t / calls * 1e6 for t in fading]


# ------------------------------------------------------------------ case 4

def overhead(frames, repeats):
    """Microseconds per frame: Spatializer.process, and the bare kernel with
    the processor's own state and preallocated arrays."""
    def make_process():
        fx = dsp.Spatializer(azimuth_deg=30.0)
        fx.process(frames[0], RATE)

        def run():
            for f in frames:
                fx.process(f, RATE)
        return run

    def make_kernel():
        fx = dsp.Spatializer(azimuth_deg=30.0)
        fx.process(frames[0], RATE)
        sp = fx._spatial
        out = np.empty((2, FRAME), np.float32)
        blocks = [f.reshape(1, -1) for f in frames if f.size == FRAME]

        def run():
            for b in blocks:
                sp.render(b, out)
        return run

    a, b = medians([make_process, make_kernel], repeats)
    return a / len(frames) * 1e6, b / len(frames) * 1e6


# ------------------------------------------------------------------ main

def main(argv=None):
    args = core.bench_arguments(__doc__.split("\n\n")[0], 30.0, argv)
    pinned = pin_to_one_core()
    seconds = args.seconds
    mono = speech(seconds)
    frames = split_frames(mono)
    hrir = fixed_hrir()
    print("stagevox spatial audio benchmark")
    print(f"  audio: {seconds:g} s of speech at {RATE} Hz in frames of {FRAME} samples; "
          f"median of {args.repeats} alternating runs after 1 warm-up")
    print(f"  CPU: {cpu_name()}, {pinned}; Python {platform.python_version()}, "
          f"NumPy {np.__version__}, Numba {numba.__version__}, SciPy {scipy.__version__}")
    if hasattr(os, "getloadavg"):
        print("  load average at the start (1, 5, 15 min): "
              + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    ola_err, sv_err = check_same_work(frames, hrir)
    print(f"  same work: frame-wise oaconvolve + overlap-add vs one lfilter, largest error / "
          f"peak {ola_err:.1e}; still Spatializer vs exact delay + lfilter (below 4 kHz) "
          f"{sv_err:.1e}")
    print()

    sv, sp = medians([make_spatializer_run(frames), make_oaconvolve_run(frames, hrir)],
                     args.repeats)
    ratio = sp / sv
    print("1. One moving source, 10 ms frames (x real time = audio s / processing s)")
    print(f"   Spatializer, azimuth changing every frame   {seconds / sv:8.1f}x")
    print(f"   scipy oaconvolve, fixed 2 x {HRIR_TAPS}-tap HRIR, overlap-add  "
          f"{seconds / sp:8.1f}x")
    print(f"   ratio {ratio:.2f}x   target >= 2x   {verdict(ratio >= 2.0)}")
    print()

    signals = np.stack([speech(seconds, 7919 * u) for u in range(SPEAKERS)])
    plain, doppler = medians([make_scene_run(signals, False), make_scene_run(signals, True)],
                             args.repeats)
    print(f"2. SpatialScene.render, {SPEAKERS} moving speakers, positions updated every frame")
    print(f"   air absorption, directivity                 {seconds / plain:8.1f}x real time"
          f"   target >= {SCENE_TARGET:g}x   {verdict(seconds / plain >= SCENE_TARGET)}")
    print(f"   the same with Doppler (extra)               {seconds / doppler:8.1f}x real time"
          f"   target >= {SCENE_TARGET:g}x   {verdict(seconds / doppler >= SCENE_TARGET)}")
    print(f"   per frame: {plain / len(frames) * 1e6:.0f} us, "
          f"{plain / len(frames) / SPEAKERS * 1e6:.1f} us per speaker")
    cpu, update, kernel = cpu_medians([make_scene_run(signals, False),
                                       make_scene_run(signals, False, "update"),
                                       make_scene_run(signals, False, "kernel")], args.repeats)
    per_frame = 1e6 / len(frames)
    print(f"   in CPU time (this thread)                   {seconds / cpu:8.1f}x real time"
          f"   target >= {SCENE_TARGET:g}x   {verdict(seconds / cpu >= SCENE_TARGET)}")
    print(f"   CPU per frame: {cpu * per_frame:.0f} us = position updates "
          f"{update * per_frame:.0f} + kernel {kernel * per_frame:.0f} + rest of render "
          f"{(cpu - update - kernel) * per_frame:.0f}")
    print()

    taps, n_fft, still, fading = fir_choice(args.repeats)
    print(f"3. Filtering one 10 ms frame, both ears, {taps} taps (us per frame)")
    print(f"   still:  direct FIR {still[0]:6.2f}   FFT overlap-add ({n_fft} points, rocket-fft) "
          f"{still[1]:6.2f}   direct is {still[1] / still[0]:.1f}x faster")
    print(f"   fading: direct FIR {fading[0]:6.2f}   FFT overlap-add ({n_fft} points, rocket-fft) "
          f"{fading[1]:6.2f}   direct is {fading[1] / fading[0]:.1f}x faster")
    print("   (direct FIR also has no latency and takes any block size)")
    print()

    proc_us, kern_us = overhead(frames, args.repeats)
    print("4. Spatializer.process per 10 ms frame, still source")
    print(f"   process {proc_us:.2f} us, bare kernel {kern_us:.2f} us, "
          f"overhead {proc_us - kern_us:.2f} us")
    print()
    results = [ratio >= 2.0, seconds / plain >= SCENE_TARGET]
    print(f"{results.count(True)} of {len(results)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
