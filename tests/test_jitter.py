"""The jitter buffer (engine.jitter), driven by a simulated clock without sockets.

A sender makes one packet per frame; frame ``i`` leaves at ``i * frame / FS``
seconds and arrives at that time plus a transit time the test chooses.  The
listener pulls 10 ms every 10 ms of simulated time; packets that have arrived
by a pull are put before it.  With the L16 (PCM) codec every played frame can
be checked sample by sample (int16 quantisation, 1/32768, is the only change),
and a lost frame is concealed with silence, so losses are exactly visible.
"""

import collections
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.engine.codec import OpusDecoder, OpusEncoder, PcmDecoder, PcmEncoder
from stagevox.engine.jitter import JitterBuffer
from stagevox.engine.red import RedBlock, encode_red
from stagevox.engine.rtp import PT_L16, PT_RED, RtpPacket
from test_feedback import reference_loss_reports

FS = 48000
FRAME = 960          # 20 ms
PULL = 480           # 10 ms
PULL_S = PULL / FS
TS0 = 123456         # RTP timestamp of frame 0 (any value)


# ----------------------------------------------------------------------------- helpers

def quantised(x):
    """What L16 makes of ``x``: round(x * 32768) / 32768, clipped to int16."""
    return (np.clip(np.rint(np.asarray(x, np.float64) * 32768), -32768, 32767) / 32768).astype(
        np.float32)


def encode_frames(x, frame=FRAME, codec="pcm", **enc_kw):
    """The payloads of ``x`` (1-D) cut into frames of ``frame`` samples."""
    if codec == "pcm":
        enc = PcmEncoder(frame_ms=1000 * frame // FS)
    else:
        enc = OpusEncoder(frame_ms=1000 * frame // FS, **enc_kw)
    return [enc.encode(x[i * frame:(i + 1) * frame]) for i in range(len(x) // frame)], \
        enc.payload_type


def make_packets(payloads, payload_type=PT_L16, frame=FRAME, seq0=1000, ts0=TS0):
    """One RTP packet per payload: consecutive sequence numbers and timestamps (16/32-bit wrap)."""
    return [RtpPacket(payload_type=payload_type, sequence_number=(seq0 + i) % 2**16,
                      timestamp=(ts0 + i * frame) % 2**32, payload=p)
            for i, p in enumerate(payloads)]


def make_red_packets(payloads, depth, payload_type=PT_L16, frame=FRAME, seq0=1000, ts0=TS0):
    """RED packets: packet ``i`` carries frames ``i - depth .. i - 1`` again before frame ``i``."""
    out = []
    for i, p in enumerate(payloads):
        ts = (ts0 + i * frame) % 2**32
        blocks = [RedBlock(payload_type, (ts0 + j * frame) % 2**32, payloads[j])
                  for j in range(max(0, i - depth), i)]
        blocks.append(RedBlock(payload_type, ts, p))
        out.append(RtpPacket(payload_type=PT_RED, sequence_number=(seq0 + i) % 2**16,
                             timestamp=ts, payload=encode_red(blocks, ts)))
    return out


def send_times(n, frame=FRAME):
    return np.arange(n) * frame / FS


def play(jb, packets, arrivals, seconds, *, pull=PULL, start=0.0, log=None, retransmitted=()):
    """Put ``packets[i]`` at ``arrivals[i]`` (``None``/NaN: lost) and pull ``pull``
    samples every ``pull / FS`` seconds for ``seconds``, from ``start`` on
    (packets that arrived by the pull before ``start`` are taken to be in already).
    Packets whose index is in ``retransmitted`` are put as retransmissions.

    Returns the output, float32 (channels, pulls * pull).  ``log``, a list,
    receives a copy of ``jb.stats`` after every pull.
    """
    events = sorted((float(a), i) for i, a in enumerate(arrivals)
                    if a is not None and not math.isnan(a) and a > start - pull / FS + 1e-9)
    out = []
    k = 0
    m0 = round(start * FS / pull)
    for m in range(m0, m0 + round(seconds * FS / pull)):
        t = m * pull / FS
        while k < len(events) and events[k][0] <= t + 1e-9:
            i = events[k][1]
            jb.put(packets[i], events[k][0], retransmission=i in retransmitted)
            k += 1
        y = jb.pull(pull, t)
        assert y.shape == (jb.channels, pull) and y.dtype == np.float32
        out.append(y)
        if log is not None:
            log.append(collections.Counter(jb.stats))
    return np.concatenate(out, axis=1)


def find_delay(y, q, start=0, length=2000, longest=2.5):
    """The delay (0 to ``longest`` seconds) with which input sample ``start``
    is played, in samples: its output index less ``start`` (by correlation)."""
    c = np.correlate(y[start:start + int(longest * FS) + length], q[start:start + length],
                     mode="valid")
    return int(np.argmax(c))


def noise(seconds, seed=0, amplitude=0.5):
    rng = np.random.default_rng(seed)
    return quantised(rng.uniform(-amplitude, amplitude, int(seconds * FS)))


def sine(freq, seconds, amplitude=0.5):
    n = np.arange(int(seconds * FS))
    return quantised(amplitude * np.sin(2 * np.pi * freq * n / FS))


def norm_corr(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(a @ b / math.sqrt((a @ a) * (b @ b) + 1e-30))


# ----------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("kw, message", [
    ({"min_delay_ms": -1.0}, "min_delay_ms"),
    ({"min_delay_ms": 50.0, "max_delay_ms": 40.0}, "max_delay_ms"),
    ({"quantile": 1.0}, "quantile"),
    ({"quantile": 0.2}, "quantile"),
])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        JitterBuffer(PcmDecoder(), **kw)


def test_silence_before_any_packet():
    jb = JitterBuffer(PcmDecoder(channels=2))
    y = jb.pull(PULL, 0.0)
    assert y.shape == (2, PULL) and not y.any()
    assert jb.report() is None and not jb.playing


# ----------------------------------------------------------------------------- in order

@pytest.mark.parametrize("frame, min_delay_ms, transit", [
    (960, 0.0, 0.003), (960, 10.0, 0.0123), (960, 10.0, 0.05), (960, 40.0, 0.003),
    (960, 100.0, 0.0123), (480, 10.0, 0.003), (480, 60.0, 0.005)])
def test_in_order_output_is_the_input_delayed(frame, min_delay_ms, transit):
    """No loss, no jitter, 20 or 10 ms frames: the output is the whole input
    (exactly, after L16) delayed by one constant.  The target is the larger of
    min_delay and pull + 2 ms (nothing to wait for but the pull); playout
    starts at the first pull at least that long after the first arrival, so
    the buffer's share of the delay (output delay minus transit) lies in
    [target, target + one pull)."""
    x = noise(3.0)
    payloads, pt = encode_frames(x, frame)
    packets = make_packets(payloads, pt, frame)
    arrivals = send_times(len(packets), frame) + transit
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=min_delay_ms)
    y = play(jb, packets, arrivals, 3.6)[0]
    d = find_delay(y, x, start=FS)
    assert not y[:d].any()
    np.testing.assert_array_equal(y[d:d + len(x)], x)
    target = max(min_delay_ms * 1e-3 * FS, PULL + 0.002 * FS)
    assert jb.target_delay() == pytest.approx(target, abs=1e-6)
    buffered = d - transit * FS
    assert target - 1e-6 <= buffered < target + PULL, (buffered, target)
    assert jb.stats["frames_primary"] == len(packets)
    for key in ("late", "concealed", "frames_fec", "duplicates", "shortened_samples",
                "lengthened_samples"):
        assert jb.stats[key] == 0, key


def test_stereo_in_order():
    rng = np.random.default_rng(5)
    x = quantised(rng.uniform(-0.5, 0.5, (2, FS)))
    enc = PcmEncoder(channels=2)
    payloads = [enc.encode(x[:, i * FRAME:(i + 1) * FRAME]) for i in range(FS // FRAME)]
    packets = make_packets(payloads)
    jb = JitterBuffer(PcmDecoder(channels=2), min_delay_ms=20)
    y = play(jb, packets, send_times(len(packets)) + 0.004, 1.5)
    d = find_delay(y[0], x[0])
    np.testing.assert_array_equal(y[:, d:d + FS], x)


# ----------------------------------------------------------------------------- reordering

@pytest.mark.parametrize("frame", [480, 960])
def test_reordering_within_the_delay_changes_nothing(frame):
    """Arrival times shuffled by up to half the target (min_delay 60 ms, extra
    transit uniform in 0..30 ms) reorder packets by up to three 10 ms frames
    (or one 20 ms frame); the output is identical, sample for sample, to the
    in-order case."""
    x = noise(4.0, seed=1)
    payloads, pt = encode_frames(x, frame)
    packets = make_packets(payloads, pt, frame)
    n = len(packets)
    send = send_times(n, frame)
    rng = np.random.default_rng(7)
    extra = rng.uniform(0.0, 0.030, n)
    extra[0] = 0.0            # the same first arrival (the buffer starts from it)
    shuffled = send + 0.005 + extra
    order = np.argsort(shuffled)
    assert np.sum(order != np.arange(n)) > n // 10          # really out of order
    ref_jb = JitterBuffer(PcmDecoder(), min_delay_ms=60)
    ref = play(ref_jb, packets, send + 0.005, 4.6)
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=60)
    y = play(jb, packets, shuffled, 4.6)
    np.testing.assert_array_equal(y, ref)
    # (The first frames of a 10 ms stream are the subject of the in-order test.)
    d = find_delay(ref[0], x, start=FS)
    np.testing.assert_array_equal(ref[0, d + FS:d + len(x)], x[FS:])
    assert jb.stats["frames_primary"] == ref_jb.stats["frames_primary"]
    assert jb.stats["late"] == ref_jb.stats["late"]


def test_duplicates_are_ignored():
    """Every third packet arrives twice (the copy 0-15 ms later); the output
    is as without copies and each copy is counted once."""
    x = noise(2.0, seed=2)
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt)
    n = len(packets)
    arrivals = send_times(n) + 0.004
    rng = np.random.default_rng(3)
    dup = np.arange(0, n, 3)
    all_packets = packets + [packets[i] for i in dup]
    all_arrivals = np.concatenate([arrivals, arrivals[dup] + rng.uniform(0, 0.015, len(dup))])
    ref = play(JitterBuffer(PcmDecoder(), min_delay_ms=30), packets, arrivals, 2.5)
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=30)
    y = play(jb, all_packets, all_arrivals, 2.5)
    np.testing.assert_array_equal(y, ref)
    assert jb.stats["duplicates"] == len(dup)
    assert jb.stats["frames_primary"] == n
    assert jb.stats["packets_received"] == n + len(dup)


def level_frames(n, frame=FRAME):
    """Frame ``i`` is the constant (i + 1) * 4 / 32768 (exact in L16), so every
    output sample tells which frame it came from, even after stretching (a
    cross-fade of a constant is that constant)."""
    return np.repeat((np.arange(n) + 1) * 4 / 32768, frame).astype(np.float32)


def frames_heard(y):
    """The frame indices in ``y`` (see ``level_frames``), in order, each run
    once, with the length of each run; silence (concealment) is left out."""
    ids = np.rint(np.asarray(y, np.float64) * 32768 / 4).astype(int) - 1
    change = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(ids)]]))
    runs = [(int(ids[s]), int(k)) for s, k in zip(starts, lengths) if ids[s] >= 0]
    return [i for i, _ in runs], [k for _, k in runs]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_frame_in_time_is_played_once_in_order(data):
    """Random extra transit (0-40 ms), random drops and duplicates, min_delay
    80 ms (so every copy is in time): each frame that arrives is played exactly
    once, in order, at a length within one stretch of its own (480..1440
    samples); nothing is late; each extra copy is counted as a duplicate."""
    n = 40
    extra = data.draw(st.lists(st.floats(0.0, 0.040), min_size=n, max_size=n), label="extra")
    lost = data.draw(st.sets(st.integers(0, n - 1), max_size=12), label="lost")
    dups = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.floats(0.0, 0.040)),
                              max_size=8), label="dups")
    dups = [(i, e) for i, e in dups if i not in lost]
    payloads, pt = encode_frames(level_frames(n))
    packets = make_packets(payloads, pt)
    send = send_times(n)
    arrivals = [None if i in lost else send[i] + 0.003 + extra[i] for i in range(n)]
    all_packets = packets + [packets[i] for i, _ in dups]
    all_arrivals = arrivals + [send[i] + 0.003 + e for i, e in dups]
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=80)
    y = play(jb, all_packets, all_arrivals, 1.6)[0]
    heard, lengths = frames_heard(y)
    assert heard == sorted(set(range(n)) - lost)
    assert all(FRAME // 2 <= k <= FRAME * 3 // 2 for k in lengths), lengths
    assert jb.stats["late"] == 0
    assert jb.stats["duplicates"] == len(dups)
    assert jb.stats["frames_primary"] == n - len(lost)


# ----------------------------------------------------------------------------- recovery

@pytest.mark.parametrize("depth, burst", [(1, 1), (2, 2), (3, 2)])
def test_red_recovers_lost_frames_exactly(depth, burst):
    """RED packets carrying ``depth`` earlier frames; bursts of ``burst``
    packets lost (at most ``depth``, so the next packet still holds them).
    Every lost frame comes back from a redundant block: the output equals the
    output without loss, sample for sample, and each is counted in frames_red.
    (10 ms frames: a 20 ms L16 frame, 1920 bytes, is too long for a RED block.)"""
    frame = 480
    x = noise(3.0, seed=4)
    payloads, pt = encode_frames(x, frame)
    packets = make_red_packets(payloads, depth, pt, frame)
    n = len(packets)
    arrivals = list(send_times(n, frame) + 0.004)
    lost = [i for start in range(10, n - 10, 9) for i in range(start, start + burst)]
    ref_jb = JitterBuffer(PcmDecoder(), min_delay_ms=60)
    ref = play(ref_jb, packets, arrivals, 3.5)
    for i in lost:
        arrivals[i] = None
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=60)
    y = play(jb, packets, arrivals, 3.5)
    np.testing.assert_array_equal(y, ref)
    d = find_delay(y[0], x, start=FS)
    np.testing.assert_array_equal(y[0, d + FS:d + len(x)], x[FS:])
    assert jb.stats["frames_red"] == len(lost)
    assert jb.stats["frames_primary"] == ref_jb.stats["frames_primary"] - len(lost)
    assert jb.stats["concealed"] == jb.stats["frames_fec"] == 0
    assert jb.stats["late"] == ref_jb.stats["late"]


class _NoFec:
    """An Opus decoder without ``decode_fec``: the buffer can only conceal."""

    def __init__(self):
        self._dec = OpusDecoder()
        self.channels = 1

    def decode(self, payload):
        return self._dec.decode(payload)

    def conceal(self, n):
        return self._dec.conceal(n)

    def reset(self):
        self._dec.reset()


@pytest.fixture(scope="module")
def opus_speech(speech):
    """8 s of the speech sample, Opus at 32 kb/s with FEC for 30 % loss, 20 ms frames."""
    x = speech[:8 * FS]
    payloads, pt = encode_frames(x, codec="opus", fec=True, packet_loss_pct=30)
    return make_packets(payloads, pt)


def test_fec_rebuilds_a_single_lost_frame(opus_speech):
    """One packet in ten lost, its successor present: the buffer rebuilds the
    frame from the successor's in-band FEC.  Against the frame heard without
    loss, the rebuilt frames correlate better than concealment of the same
    losses (by another buffer whose decoder has no FEC): at least 0.8 on
    average and 0.25 above concealment (measured 0.87 against 0.46)."""
    packets = opus_speech
    n = len(packets)
    arrivals = list(send_times(n) + 0.004)
    log = []
    ref = play(JitterBuffer(OpusDecoder(), min_delay_ms=60), packets, arrivals, 8.5, log=log)[0]
    lost = list(range(5, n - 5, 10))
    for i in lost:
        arrivals[i] = None
    with_fec = JitterBuffer(OpusDecoder(), min_delay_ms=60)
    y_fec = play(with_fec, packets, arrivals, 8.5)[0]
    no_fec = JitterBuffer(_NoFec(), min_delay_ms=60)
    y_plc = play(no_fec, packets, arrivals, 8.5)[0]
    assert with_fec.stats["frames_fec"] == len(lost) and with_fec.stats["concealed"] == 0
    assert no_fec.stats["concealed"] == len(lost) and no_fec.stats["frames_fec"] == 0
    # Frame 0 starts the output of the first pull that plays anything.
    start = PULL * next(m for m, st_ in enumerate(log) if st_.get("samples_played"))
    fec_corr, plc_corr = [], []
    for i in lost:
        seg = slice(start + i * FRAME, start + (i + 1) * FRAME)
        if np.sqrt(np.mean(ref[seg] ** 2)) > 0.01:       # speech, not a pause
            fec_corr.append(norm_corr(y_fec[seg], ref[seg]))
            plc_corr.append(norm_corr(y_plc[seg], ref[seg]))
    assert len(fec_corr) >= 15
    fec, plc = np.mean(fec_corr), np.mean(plc_corr)
    assert fec >= 0.8 and fec >= plc + 0.25, (fec, plc)


def test_lost_frames_without_a_copy_are_concealed():
    """L16 has no FEC and no RED here: lost frames (single and bursts of 3)
    are concealed, which for L16 is silence of exactly one frame; the rest of
    the output is the input, the output is as long as asked, and the losses
    are counted as concealed (nothing could rebuild them, so none is counted
    as recovered by FEC)."""
    x = noise(3.0, seed=6)
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt)
    n = len(packets)
    arrivals = list(send_times(n) + 0.004)
    lost = [20, 45, 46, 47, 90, 120, 121, 122]
    for i in lost:
        arrivals[i] = None
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=60)
    y = play(jb, packets, arrivals, 3.5)[0]
    assert y.shape == (350 * PULL,) and np.all(np.isfinite(y))
    expected = x.copy()
    for i in lost:
        expected[i * FRAME:(i + 1) * FRAME] = 0.0
    d = find_delay(y, x, start=FS // 10)
    np.testing.assert_array_equal(y[d:d + len(x)], expected)
    assert jb.stats["frames_primary"] == n - len(lost)
    assert jb.stats["late"] == 0
    assert jb.stats["concealed"] + jb.stats["frames_fec"] == len(lost)
    assert jb.stats["concealed"] == len(lost), dict(jb.stats)


def test_opus_bursts_are_concealed_without_nan(opus_speech):
    """Opus with bursts of three lost packets: the first two of each burst have
    no successor to take FEC from and are concealed, the third is rebuilt by
    FEC; the output stays finite, within [-1, 1] and exactly as long as asked."""
    packets = opus_speech
    n = len(packets)
    arrivals = list(send_times(n) + 0.004)
    bursts = list(range(10, n - 10, 25))
    for b in bursts:
        for i in range(b, b + 3):
            arrivals[i] = None
    jb = JitterBuffer(OpusDecoder(), min_delay_ms=80)
    y = play(jb, packets, arrivals, 8.5)
    assert y.shape == (1, 850 * PULL)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    assert jb.stats["concealed"] == 2 * len(bursts)
    assert jb.stats["frames_fec"] == len(bursts)
    assert jb.stats["frames_primary"] == n - 3 * len(bursts)


def expected_target(arrivals, lateness, now, pull=PULL, min_delay_ms=10.0, max_delay_ms=1000.0,
                    quantile=0.99):
    """The documented target, in samples, from the first copies that arrived
    (arrival times in s, in arrival order, and their lateness ``arrival * FS -
    timestamp``): lateness is measured from the fastest copy of the last 4 s;
    the target is the ``quantile`` of the last 500 latenesses plus the pull
    and 2 ms, within [min_delay, max_delay]."""
    arrivals = np.asarray(arrivals, np.float64)
    lateness = np.asarray(lateness, np.float64)
    base = lateness[arrivals >= now - 4.0].min()
    q = float(np.quantile(lateness[-500:] - base, quantile))
    return min(max(q + pull + 0.002 * FS, min_delay_ms * 1e-3 * FS), max_delay_ms * 1e-3 * FS)


def test_a_late_frame_is_dropped_and_raises_the_target():
    """Frame 50 arrives 100 ms late (long after its playout time, target 12
    ms): it is counted late and never played, its place is silence (L16
    concealment), every other frame is played, and its lateness enters the
    target (compared with the quantile of the lateness pattern computed here),
    after which the buffer lengthens frames to reach the new target."""
    x = noise(3.0, seed=8)
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt)
    n = len(packets)
    send = send_times(n)
    arrivals = send + 0.004
    k = 50
    arrivals[k] += 0.100
    jb = JitterBuffer(PcmDecoder())
    first = play(jb, packets, arrivals, arrivals[k] - 0.001)
    before = jb.target_delay()
    order = np.argsort(arrivals)
    arrived = order[arrivals[order] < arrivals[k]]
    times = list(arrivals[arrived])
    lateness = list(arrivals[arrived] * FS - arrived * FRAME)
    assert before == pytest.approx(expected_target(times, lateness, arrivals[k]), abs=1e-6)
    jb.put(packets[k], arrivals[k])
    after = jb.target_delay()
    assert jb.stats["late"] == 1
    assert after == pytest.approx(expected_target(times + [arrivals[k]], lateness + [
        arrivals[k] * FS - k * FRAME], arrivals[k]), abs=1e-6)
    assert after > before + 0.02 * FS
    rest = play(jb, packets, arrivals, 3.6 - len(first[0]) / FS, start=len(first[0]) / FS)
    y = np.concatenate([first, rest], axis=1)[0]
    d = find_delay(y, x, start=FS // 10)
    np.testing.assert_array_equal(y[d:d + k * FRAME], x[:k * FRAME])
    assert not y[d + k * FRAME:d + (k + 1) * FRAME].any()
    # Frame 50 never shows up later.
    frame_k = x[k * FRAME:(k + 1) * FRAME]
    assert np.max(np.abs(np.correlate(y, frame_k, mode="valid"))) < 0.5 * float(frame_k @ frame_k)
    assert jb.stats["frames_primary"] == n - 1
    assert jb.stats["late"] == 1
    assert jb.stats["lengthened_samples"] > 0


# ----------------------------------------------------------------------------- adaptation

def jitter_run(jb, x, extra, seconds, checkpoints):
    """Play ``x`` (L16, 20 ms frames) with frame ``i`` arriving 4 ms + ``extra[i]``
    after it is sent; at each time in ``checkpoints`` record (target, stats,
    lateness of every first copy so far).  Returns output, log, records."""
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt)
    arrivals = send_times(len(packets)) + 0.004 + extra
    order = np.argsort(arrivals, kind="stable")
    log, parts, records = [], [], []
    t = 0.0
    for stop in list(checkpoints) + [seconds]:
        parts.append(play(jb, packets, arrivals, stop - t, start=t, log=log))
        t = stop
        last_pull = t - PULL_S
        seen = order[arrivals[order] <= last_pull + 1e-9]
        expected = expected_target(arrivals[seen], arrivals[seen] * FS - seen * FRAME, last_pull,
                                   min_delay_ms=jb.min_delay * 1e3 / FS,
                                   max_delay_ms=jb.max_delay * 1e3 / FS)
        records.append((jb.target_delay(), collections.Counter(jb.stats), expected))
    return np.concatenate(parts, axis=1)[0], log, records[:-1]


@pytest.mark.parametrize("jitter_ms", [0, 20, 60])
def test_target_follows_the_jitter_and_comes_back(jitter_ms):
    """Arrival jitter uniform in [0, J] from 2 s to 14 s, none before or after.
    At 14 s the target is the 99th percentile of the lateness of the last 500
    frames (computed here from the arrival pattern) plus pull + 2 ms, which is
    about 0.99 J + 12 ms (within 3 ms).  Five seconds after the jitter stopped
    the history (500 frames, 10 s) still holds it; eleven seconds after, the
    target is back at 12 ms.  Coming back, the buffer shortens frames and
    drops none: no frame is late, concealed or expanded after 14.5 s, and
    every frame is played but those late when the jitter began."""
    J = jitter_ms * 1e-3
    x = noise(28.0, seed=9)
    n = len(x) // FRAME
    send = send_times(n)
    rng = np.random.default_rng(jitter_ms)
    extra = np.where((send >= 2.0) & (send < 14.0), rng.uniform(0.0, J, n), 0.0)
    jb = JitterBuffer(PcmDecoder())
    y, log, records = jitter_run(jb, x, extra, 28.5, [14.0, 14.5, 19.0, 25.0])
    (t14, _, ref14), (_, s145, _), (t19, _, _), (t25, _, ref25) = records
    assert t14 == pytest.approx(ref14, abs=1e-6)
    assert t14 == pytest.approx((0.99 * J + 0.012) * FS, abs=0.003 * FS)
    assert t19 >= (0.5 * 0.99 * J + 0.012) * FS - 1
    assert t25 == pytest.approx(ref25, abs=1e-6)
    assert t25 == pytest.approx(0.012 * FS, abs=1e-6)
    # The stats when the last frame was decoded (before the stream's end).
    end = next(st_ for st_ in log if st_["frames_primary"] == jb.stats["frames_primary"])
    for key in ("late", "concealed", "expanded", "frames_fec", "lengthened_samples"):
        assert end[key] == s145[key], key
    assert end["frames_primary"] == n - end["late"]
    if jitter_ms:
        assert end["shortened_samples"] > s145["shortened_samples"]
    # What is played after the last stretch is the input, exactly.
    d = find_delay(y, x, start=27 * FS)
    np.testing.assert_array_equal(y[d + 26 * FS:d + 27 * FS], x[26 * FS:27 * FS])


def test_target_is_bounded_by_max_delay():
    """Jitter 0-60 ms calls for about 71 ms; with max_delay_ms=40 the target is 40 ms."""
    x = noise(8.0, seed=10)
    n = len(x) // FRAME
    rng = np.random.default_rng(11)
    extra = rng.uniform(0.0, 0.060, n)
    _, _, [(free, _, _)] = jitter_run(JitterBuffer(PcmDecoder()), x, extra, 8.0, [7.0])
    assert free > 0.065 * FS
    jb = JitterBuffer(PcmDecoder(), max_delay_ms=40)
    _, _, [(target, _, expected)] = jitter_run(jb, x, extra, 8.0, [7.0])
    assert target == expected == pytest.approx(0.040 * FS, abs=1e-6)


def test_stretching_keeps_a_sine_continuous():
    """Jitter rising slowly from 0 to 0-60 ms (2 s to 10 s), held to 14 s, then
    gone: the target rises and the buffer lengthens frames, then falls and
    it shortens them.  On a 173 Hz sine (a period of 277.46 samples, so the
    frame and period edges never line up) the output never jumps by more than
    the sine's own largest step (+5 % and two L16 steps), away from the few
    frames that were concealed or expanded (L16 conceals with silence); the
    stretches counted are among the frames checked."""
    x = sine(173.0, 26.0)
    n = len(x) // FRAME
    send = send_times(n)
    rng = np.random.default_rng(12)
    ramp = np.clip((send - 2.0) / 8.0, 0.0, 1.0) * (send < 14.0)
    extra = rng.uniform(0.0, 0.060, n) * ramp
    jb = JitterBuffer(PcmDecoder())
    y, log, [(_, s14, _)] = jitter_run(jb, x, extra, 26.0, [14.0])
    assert s14["lengthened_samples"] > 0
    assert jb.stats["shortened_samples"] > s14["shortened_samples"]
    # Pulls whose output a concealed or expanded frame may reach (a frame
    # decoded at pull k, up to 1680 samples after stretching, behind up to 479
    # waiting samples, is played by pull k + 4).
    unsure = np.zeros(len(log) + 6, bool)
    lengthened, shortened = [], []
    keys = ("concealed", "expanded", "frames_fec", "late", "stalls")
    previous = collections.Counter()
    for k, st_ in enumerate(log):
        if any(st_[key] != previous[key] for key in keys):
            unsure[max(0, k - 1):k + 6] = True
        if st_["lengthened_samples"] != previous["lengthened_samples"]:
            lengthened.append(k)
        if st_["shortened_samples"] != previous["shortened_samples"]:
            shortened.append(k)
        previous = st_
    start = next(k for k, st_ in enumerate(log) if st_["samples_played"])
    last = next(k for k, st_ in enumerate(log) if st_["frames_primary"] == log[-1]["frames_primary"])
    checked = [k for k in range(start + 1, last) if not unsure[k]]
    assert len(checked) > 0.9 * (last - start)
    assert any(not unsure[k:k + 5].any() for k in lengthened)
    assert sum(1 for k in shortened if not unsure[k:k + 5].any()) >= 3
    limit = np.max(np.abs(np.diff(x))) * 1.05 + 2 / 32768
    # Each checked pull's samples and the step into them from the sample before.
    steps = np.abs(np.diff(y))
    worst = max(float(steps[k * PULL - 1:(k + 1) * PULL - 1].max()) for k in checked)
    assert worst <= limit, (worst, limit)


def test_playout_starts_at_the_frame_due_not_at_older_red_copies():
    """10 ms frames.  Packets 0-9 are lost (a listener joining mid-stream);
    packet 10 comes first and carries frames 5-9 again (RED, depth 5).  Those
    copies are of frames from before the stream began for this listener:
    playout begins with frame 10, its buffer share in [target, target + one
    pull), and the copies neither play (the stream would start 50 ms behind
    and need 50 ms of shortening) nor count as late (the target would carry
    their 10-50 ms of "lateness" for the next 500 frames)."""
    frame = 480
    x = noise(2.0, seed=21)
    payloads, pt = encode_frames(x, frame=frame)
    packets = make_red_packets(payloads, 5, pt, frame=frame)
    arrivals = [None] * 10 + list(send_times(len(packets), frame)[10:] + 0.004)
    jb = JitterBuffer(PcmDecoder())
    y = play(jb, packets, arrivals, 2.2)[0]
    assert jb.target_delay() == pytest.approx(0.012 * FS)
    start = 10 * frame
    d = find_delay(y, x, start=start)
    np.testing.assert_array_equal(y[d + start:d + len(x)], x[start:])
    assert not y[:d + start].any()
    buffered = d + start - arrivals[10] * FS
    assert jb.target_delay() - 1e-6 <= buffered < jb.target_delay() + PULL, buffered
    assert jb.stats["shortened_samples"] == jb.stats["lengthened_samples"] == 0
    assert jb.stats["frames_red"] == 0 and jb.stats["late"] == 0


def frozen_path_stream(seconds, freeze_s):
    """Speech-like L16 frames (300 ms of loud noise, 200 ms 40 dB quieter, over
    and over) on a path that freezes at 4 s for ``freeze_s`` and then delivers
    the backlog at once: ``(x, packets, arrivals)``."""
    t = np.arange(int(seconds * FS)) / FS
    loud = (t % 0.5) < 0.3
    x = quantised(noise(seconds, seed=22) * np.where(loud, 1.0, 0.01))
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt)
    send = send_times(len(packets))
    arrivals = send + 0.004
    frozen = (send >= 4.0) & (send < 4.0 + freeze_s)
    arrivals[frozen] = 4.0 + freeze_s + 0.004
    return x, packets, arrivals


def test_catching_up_waits_for_pauses():
    """Speech-like input: 300 ms of loud noise, 200 ms 40 dB quieter, over and
    over.  At 4 s the path freezes for 280 ms and then delivers the backlog
    at once; the buffer (target 200 ms: min_delay, and a 90 % quantile the
    few late frames leave alone) waits for the frame it lacks and ends up
    about 80 ms behind.  It catches up by shortening quiet frames only (80 ms
    is below the 8 ms + 50 % of the target that loud frames need): every loud
    stretch is played exactly, at one delay, and the delay comes back to
    within the quiet-frame threshold (8 ms + 10 % of the target)."""
    seconds = 9.0
    x, packets, arrivals = frozen_path_stream(seconds, 0.28)
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=200, quantile=0.9)
    y = play(jb, packets, arrivals, seconds + 0.4)[0]
    assert jb.target_delay() == pytest.approx(0.2 * FS)
    assert jb.stats["expanded"] > 0 and jb.stats["shortened_samples"] > 0
    delays = []
    for k in range(int(seconds / 0.5) - 1):
        a, b = int((k * 0.5 + 0.02) * FS), int((k * 0.5 + 0.28) * FS)
        d = find_delay(y, x, start=a)
        np.testing.assert_array_equal(y[d + a:d + b], x[a:b], err_msg=f"loud stretch {k}")
        delays.append(d)
    before = delays[7]                       # the stretch before the freeze
    assert delays[8] - before >= 0.06 * FS, delays
    assert delays[-1] - before <= (0.008 + 0.1 * 0.2) * FS, delays
    assert np.all(np.diff(delays[8:]) <= 0), delays


def test_a_wait_beyond_the_delay_bound_is_skipped_not_hurried():
    """Speech-like input as above; the delay is held at 100 ms (min and max).
    At 4 s the path freezes for 400 ms and then delivers the backlog at once.
    The buffer waits for the frame it lacks, fades out, resumes when the
    backlog comes, and is then 300 ms behind: it skips ahead to its ideal
    point (more than ``_JUMP_S`` behind) rather than shortening its way back
    over seconds of speech.  Every loud stretch before and after the freeze
    plays exactly, at the delay it had before the freeze (within the one
    frame a skip of whole frames leaves), and less than 20 ms was shortened
    in all."""
    seconds = 9.0
    x, packets, arrivals = frozen_path_stream(seconds, 0.4)
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=100, max_delay_ms=100)
    y = play(jb, packets, arrivals, seconds + 0.4)[0]
    assert jb.stats["jumped_samples"] >= 0.2 * FS
    assert jb.stats["shortened_samples"] < 0.02 * FS
    delays = {}
    for k in list(range(8)) + list(range(9, int(seconds / 0.5) - 1)):
        a, b = int((k * 0.5 + 0.02) * FS), int((k * 0.5 + 0.28) * FS)
        d = find_delay(y, x, start=a)
        np.testing.assert_array_equal(y[d + a:d + b], x[a:b], err_msg=f"loud stretch {k}")
        delays[k] = d
    before = delays[7]
    assert all(abs(d - before) <= FRAME for d in delays.values()), delays


# ----------------------------------------------------------------------------- stalls

def test_a_stopped_stream_fades_to_silence():
    """An Opus 300 Hz sine stops after 2 s.  The buffer conceals for a short
    while, then fades out and plays exact silence (no endless concealment):
    silent from 0.5 s after the last packet on, one stall counted.  The fade
    reaches zero smoothly: the last millisecond before the silence is below
    5 % of the sine's amplitude, and no step while stopping is larger than
    the decoded sine's own largest step (+10 %)."""
    x = (0.5 * np.sin(2 * np.pi * 300 * np.arange(2 * FS) / FS)).astype(np.float32)
    payloads, pt = encode_frames(x, codec="opus")
    packets = make_packets(payloads, pt)
    n = len(packets)
    arrivals = send_times(n) + 0.004
    jb = JitterBuffer(OpusDecoder())
    y = play(jb, packets, arrivals, 3.5)[0]
    assert np.all(np.isfinite(y))
    end = int((arrivals[-1] + 0.5) * FS)
    assert not y[end:].any()
    assert jb.stats["stalls"] == 1 and jb.stats["frames_primary"] == n
    last = int(np.flatnonzero(y)[-1])
    tail = float(np.max(np.abs(y[last - 47:last + 1])))
    steady = float(np.max(np.abs(np.diff(y[FS // 2:int(1.8 * FS)]))))
    stopping = float(np.max(np.abs(np.diff(y[int(1.8 * FS):]))))
    assert tail <= 0.05 * 0.5 and stopping <= 1.1 * steady, (tail, stopping, steady)


@pytest.mark.parametrize("clock_runs, pause", [(True, 1.0), (True, 0.3), (False, 0.3),
                                               (False, 1.0)])
def test_playback_resumes_after_a_stall(clock_runs, pause):
    """Frames 0-99 (2 s), nothing for ``pause`` seconds, then frames 100-199.
    ``clock_runs``: the sender's RTP clock ran on during the pause (a muted
    host: the timestamp jumps by the pause), otherwise it stood still (the
    sender stopped and went on: timestamps continue where they were).  Either
    way, after the stall the second part is played completely and exactly,
    like a new stream: a constant delay whose buffer share lies in
    [target, target + one pull), with nothing of the first part in it."""
    x = noise(4.0, seed=13)
    payloads, pt = encode_frames(x)
    n = len(payloads)
    skip = int(pause * FS) if clock_runs else 0
    packets = [RtpPacket(payload_type=pt, sequence_number=(1000 + i) % 2**16,
                         timestamp=(TS0 + i * FRAME + (skip if i >= 100 else 0)) % 2**32,
                         payload=payloads[i]) for i in range(n)]
    arrivals = send_times(n) + 0.004 + np.where(np.arange(n) >= 100, pause, 0.0)
    jb = JitterBuffer(PcmDecoder())
    y = play(jb, packets, arrivals, 4.6 + pause)[0]
    d1 = find_delay(y, x, start=FS)
    np.testing.assert_array_equal(y[d1:d1 + 2 * FS], x[:2 * FS])
    assert jb.stats["stalls"] >= 1
    target = 0.012 * FS
    resumed = int(arrivals[100] * FS)
    d2 = find_delay(y, x, start=2 * FS)
    assert not y[d1 + 2 * FS + 2 * FRAME:d2 + 2 * FS].any()    # silence, stale audio neither
    np.testing.assert_array_equal(y[d2 + 2 * FS:d2 + 4 * FS], x[2 * FS:])
    assert target - 1e-6 <= d2 + 2 * FS - resumed < target + PULL, (d2 + 2 * FS - resumed)
    assert jb.stats["frames_primary"] == n and jb.stats["late"] == 0


def test_a_retransmitted_newer_frame_does_not_end_the_wait():
    """RED depth 5.  Packets 100-103 are lost; the retransmission of frame 103
    comes first (at packet 101's time), then packet 104 on time with frames
    99-103 again.  Frames 100-102 can still come by RED, so the buffer waits
    for them (expands) rather than concealing them because a newer frame is
    here: every frame is played, none concealed or late."""
    x = noise(3.0, seed=24)
    payloads, pt = encode_frames(x, frame=480)
    packets = make_red_packets(payloads, 5, pt, frame=480)
    arrivals = list(send_times(len(packets), 480) + 0.004)
    arrivals[100:104] = [None] * 4
    packets += make_packets([payloads[103]], pt, frame=480, seq0=1103, ts0=TS0 + 103 * 480)
    arrivals.append(send_times(102, 480)[101] + 0.004)
    jb = JitterBuffer(PcmDecoder())
    play(jb, packets, arrivals, 3.2, retransmitted={len(packets) - 1})
    assert jb.stats["frames_rtx"] == 1 and jb.stats["frames_red"] == 3
    assert jb.stats["expanded"] > 0
    assert jb.stats["concealed"] == jb.stats["late"] == 0


def test_a_gap_in_the_path_is_played_through_after_a_stall():
    """10 ms frames, RED depth 20.  Packets 200-219 (200 ms) are lost; packet
    220 comes on time and carries frames 200-219 again.  Nothing comes for
    210 ms, longer than the buffer waits before it fades out (a stall); but
    the frames of the gap then arrive, so playout goes on where it stopped
    rather than starting a new stream that would begin at frame 220: every
    frame is played once, in order (frame 200 follows within the pause),
    and none is concealed or dropped as late."""
    frame = 480
    x = noise(6.0, seed=23)
    payloads, pt = encode_frames(x, frame=frame)
    packets = make_red_packets(payloads, 20, pt, frame=frame)
    arrivals = send_times(len(packets), frame) + 0.004
    arrivals[200:220] = np.nan
    jb = JitterBuffer(PcmDecoder())
    y = play(jb, packets, arrivals, 5.9)[0]
    assert jb.stats["stalls"] == 1 and jb.stats["resumed"] == 1
    assert jb.stats["frames_red"] == 20
    assert jb.stats["concealed"] == jb.stats["late"] == 0
    gap = 200 * frame
    before = find_delay(y, x, start=gap - 5 * frame)
    after = find_delay(y, x, start=gap, length=frame // 2, longest=3.0)
    assert after - before >= 0.15 * FS, (before, after)
    np.testing.assert_array_equal(y[after + gap:after + gap + frame // 2], x[gap:gap + frame // 2])


def test_a_packet_far_out_of_sequence_is_dropped():
    """Among 100 in-order frames, three stray packets: sequence numbers 5000
    ahead, 200 behind and 30000 away, with random timestamps and payloads.
    They are dropped and counted (RFC 3550 A.1: none is followed by its
    successor): the output is exactly that of the clean stream, and the
    loss, jitter and NACK state do not see them."""
    x = noise(2.0, seed=23)
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt, seq0=SEQ0)
    arrivals = list(send_times(len(packets)) + 0.004)
    rng = np.random.default_rng(24)
    strays = [RtpPacket(payload_type=pt, sequence_number=(SEQ0 + 40 + jump) % 2**16,
                        timestamp=int(rng.integers(2**32)), payload=rng.bytes(FRAME * 2))
              for jump in (5000, -200, 30000)]
    clean = JitterBuffer(PcmDecoder())
    ref = play(clean, packets, arrivals, 2.3)
    jb = JitterBuffer(PcmDecoder())
    y = play(jb, packets + strays, arrivals + [0.805, 1.205, 1.605], 2.3)
    np.testing.assert_array_equal(y, ref)
    assert jb.stats["out_of_sequence"] == 3 and jb.stats["restarts"] == 0
    assert jb.summary(2.3)["lost"] == 0
    assert jb.summary(2.3)["jitter_ms"] == clean.summary(2.3)["jitter_ms"]
    assert jb.nacks(2.3, 0.01) == []


def test_a_restarted_sender_is_followed():
    """Frames 0-49 numbered from 1000, then the sender restarts: frames 50-99
    numbered from 40000 with unrelated timestamps.  The first new packet is
    held back as a possible stray; the second follows it, so the buffer
    starts over on the new numbering (one restart counted) and takes the
    held one first: every frame is heard once, in order, and nothing of the
    new stream counts as lost."""
    payloads, pt = encode_frames(level_frames(100))
    first = make_packets(payloads[:50], pt, seq0=SEQ0)
    second = make_packets(payloads[50:], pt, seq0=40000, ts0=987654321)
    arrivals = list(send_times(100) + 0.004)
    jb = JitterBuffer(PcmDecoder())
    y = play(jb, first + second, arrivals, 2.5)[0]
    assert jb.stats["restarts"] == 1 and jb.stats["out_of_sequence"] == 1
    heard, _ = frames_heard(y)
    assert heard == list(range(100))
    assert jb.summary(2.5)["lost"] == 0 and jb.stats["late"] == 0


# ----------------------------------------------------------------------------- NACK

SEQ0 = 1000


def nack_run(jb, packets, arrivals, seconds, rtt, *, answer=False, **kw):
    """Like ``play``, and ask ``jb.nacks(now, rtt)`` 5 ms after every pull.
    ``answer``: the sender retransmits what is asked for, arriving ``rtt``
    later (when it has sent it).  Returns the list of (time, [requested 16-bit
    sequence numbers]) and the output."""
    events = sorted((float(a), i) for i, a in enumerate(arrivals) if a is not None)
    by_seq = {p.sequence_number: i for i, p in enumerate(packets)}
    asked, out = [], []
    k = 0
    for m in range(round(seconds / 0.005)):
        t = m * 0.005
        while k < len(events) and events[k][0] <= t + 1e-9:
            jb.put(packets[events[k][1]], events[k][0])
            k += 1
        if m % 2 == 0:
            out.append(jb.pull(PULL, t))
        else:
            seqs = jb.nacks(t, rtt, **kw)
            asked.append((t, seqs))
            if answer:
                events[k:] = sorted(events[k:] + [(t + rtt, by_seq[s]) for s in seqs
                                                  if s in by_seq])
    return asked, np.concatenate(out, axis=1)


def playout_time(jb, i, transit=0.004, frame=FRAME):
    """When frame ``i`` is due (in order, constant ``transit``): sent + transit + target."""
    return i * frame / FS + transit + jb.target_delay() / FS


def test_nack_after_a_gap_once_a_round_trip_and_at_most_max_tries():
    """Frames 30 and 35 lost (min_delay 400 ms, so there is time).  Each is
    asked for as soon as the next frame shows the gap (by the first call at
    least 3 ms later), then again every round trip (40 ms, never sooner), 4
    times at most (max_tries=4); no other sequence number is ever asked for."""
    payloads, pt = encode_frames(noise(2.0, seed=14))
    packets = make_packets(payloads, pt, seq0=SEQ0)
    arrivals = list(send_times(len(packets)) + 0.004)
    arrivals[30] = arrivals[35] = None
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=400)
    asked, _ = nack_run(jb, packets, arrivals, 2.0, 0.04, max_tries=4)
    assert sorted({s for _, seqs in asked for s in seqs}) == [SEQ0 + 30, SEQ0 + 35]
    for i in (30, 35):
        when = [t for t, seqs in asked if SEQ0 + i in seqs]
        assert len(when) == 4, (i, when)
        gap_seen = arrivals[i + 1]
        assert gap_seen + 0.003 <= when[0] <= gap_seen + 0.003 + 0.010 + 1e-9, (gap_seen, when)
        assert np.all(np.diff(when) >= 0.04 - 1e-9) and np.all(np.diff(when) <= 0.05 + 1e-9)
        assert all(list(seqs).count(SEQ0 + i) <= 1 for _, seqs in asked)
    assert jb.stats["nacks_sent"] == 8


@pytest.mark.parametrize("rtt", [0.02, 0.1, 0.15, 0.16, 0.17, 0.3])
def test_no_nack_when_the_answer_would_come_too_late(rtt):
    """min_delay 200 ms; frame 30 lost, seen missing when frame 31 arrives.
    A retransmission asked for at ``now`` comes back at ``now + rtt``: it is
    asked for only while the frame's playout time (sent + transit + target)
    is more than ``rtt`` away, and it is asked for at the first chance when
    that time is more than ``rtt`` + 10 ms away."""
    payloads, pt = encode_frames(noise(1.5, seed=15))
    packets = make_packets(payloads, pt, seq0=SEQ0)
    arrivals = list(send_times(len(packets)) + 0.004)
    arrivals[30] = None
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=200)
    asked, _ = nack_run(jb, packets, arrivals, 1.5, rtt)
    due = playout_time(jb, 30)
    when = [t for t, seqs in asked if SEQ0 + 30 in seqs]
    assert all(due - t > rtt for t in when), (due, when)
    first_chance = next(t for t, _ in asked if t >= arrivals[31] + 0.003)
    if due - first_chance > rtt + 0.010:
        assert when and when[0] == first_chance, (due, first_chance, when)
    if due - first_chance <= rtt:
        assert not when


def test_nack_for_overdue_packets_while_nothing_arrives():
    """Frames from 30 on never come.  Nothing is asked for while the silence
    is shorter than two frame times; once it is longer (more than 40 ms after
    the last arrival) the first missing frame is asked for; later ones follow
    as they become overdue."""
    payloads, pt = encode_frames(noise(1.0, seed=16))
    packets = make_packets(payloads[:30], pt, seq0=SEQ0)
    arrivals = list(send_times(30) + 0.004)
    last = arrivals[-1]
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=300)
    play(jb, packets, arrivals, 0.6)
    assert jb.playing
    assert jb.nacks(last + 0.035, 0.02) == []
    assert jb.nacks(last + 0.045, 0.02) == [SEQ0 + 30]
    assert jb.nacks(last + 0.070, 0.02) == [SEQ0 + 30, SEQ0 + 31]
    assert jb.nacks(last + 0.085, 0.02) == [SEQ0 + 32]


def test_nack_across_the_sequence_wrap():
    """Sequence numbers 65520 ... 65535, 0, 1, ...: 65535 and 0 lost, then
    later 2 alone.  They are asked for as 16-bit numbers (65535 first, by the
    overdue rule, as 60 ms pass without a packet), and nothing else."""
    payloads, pt = encode_frames(noise(1.5, seed=17))
    packets = make_packets(payloads, pt, seq0=65520)
    arrivals = list(send_times(len(packets)) + 0.004)
    for i in (15, 16, 18):
        arrivals[i] = None
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=300)
    asked, _ = nack_run(jb, packets, arrivals, 1.45, 0.05)
    requested = [seqs for t, seqs in asked if seqs]
    assert requested[0] == [65535]
    assert {s for seqs in requested for s in seqs} == {65535, 0, 2}


def test_retransmissions_fill_the_gaps():
    """Random losses (10 %) answered by retransmission one round trip (60 ms)
    after each request, min_delay 150 ms: every lost frame comes back in
    time, the output is the input exactly, and the copies are counted as
    retransmitted (frames_rtx), not as new packets."""
    x = noise(3.0, seed=18)
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt, seq0=SEQ0)
    n = len(packets)
    rng = np.random.default_rng(19)
    lost = sorted(int(i) for i in rng.choice(np.arange(5, n - 5), n // 10, replace=False))
    arrivals = list(send_times(n) + 0.004)
    for i in lost:
        arrivals[i] = None
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=150)
    asked, y = nack_run(jb, packets, arrivals, 3.6, 0.06, answer=True)
    y = y[0]
    before_end = {s for t, seqs in asked if t < arrivals[-1] for s in seqs}
    assert before_end == {SEQ0 + i for i in lost}
    d = find_delay(y, x, start=FS // 10)
    np.testing.assert_array_equal(y[d:d + len(x)], x)
    assert jb.stats["frames_rtx"] == len(lost)
    assert jb.stats["retransmitted_received"] >= len(lost)
    assert jb.stats["packets_received"] == n - len(lost)
    assert jb.stats["concealed"] == jb.stats["frames_fec"] == jb.stats["late"] == 0


# ----------------------------------------------------------------------------- reports

def test_report_loss_against_a_slow_reference():
    """Bursty loss (a two-state model: 3 % chance to enter a loss burst, 40 %
    to leave it), a little reordering, reports every 0.5 s, sequence numbers
    crossing the 16-bit wrap: each report's fraction_lost and burst equal the
    reference computed from the arrival pattern (to 1e-12)."""
    x = noise(12.0, seed=20)
    payloads, pt = encode_frames(x)
    packets = make_packets(payloads, pt, seq0=65300)
    n = len(packets)
    rng = np.random.default_rng(21)
    losing = False
    arrivals = []
    for i in range(n):
        losing = rng.random() < (0.6 if losing else 0.03)
        arrivals.append(None if losing else i * FRAME / FS + 0.004 + rng.uniform(0, 0.025))
    assert sum(a is None for a in arrivals) > 20
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=40)
    events = sorted((a, i) for i, a in enumerate(arrivals) if a is not None)
    timeline, got = [], []
    k = 0
    for m in range(1, 25):
        t = 0.5 * m
        while k < len(events) and events[k][0] <= t:
            jb.put(packets[events[k][1]], events[k][0])
            timeline.append(("packet", 65300 + events[k][1]))
            k += 1
        timeline.append(("report",))
        got.append(jb.report())
    expected = reference_loss_reports(timeline)
    assert any(e and e[1] >= 2 for e in expected)
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if g is not None:
            assert g["fraction_lost"] == pytest.approx(e[0], abs=1e-12)
            assert g["burst"] == pytest.approx(e[1], abs=1e-12), (g, e)
    assert got[-1]["highest_seq"] == max(item[1] for item in timeline if item[0] == "packet")


def rfc3550_jitter(arrivals, timestamps, rate=FS):
    """RFC 3550 section 6.4.1 / A.8: J += (|D(i-1, i)| - J) / 16 with
    D = (R_i - R_{i-1}) - (S_i - S_{i-1}), over packets in arrival order; in ms."""
    order = np.argsort(arrivals, kind="stable")
    j = 0.0
    for a, b in itertools.pairwise(order):
        d = (arrivals[b] - arrivals[a]) * rate - (timestamps[b] - timestamps[a])
        j += (abs(d) - j) / 16
    return 1e3 * j / rate


def test_report_jitter_follows_rfc3550():
    """Interarrival jitter for a known transit pattern (alternating 4 ms and
    9 ms, then random 0-30 ms with reordering): the RFC 3550 estimate
    computed here, and for the alternating part also its closed form
    5 ms * (1 - (15/16)^n)."""
    payloads, pt = encode_frames(noise(4.0, seed=22))
    packets = make_packets(payloads, pt)
    n = len(packets)
    send = send_times(n)
    transit = np.where(np.arange(n) % 2, 0.009, 0.004)
    jb = JitterBuffer(PcmDecoder(), min_delay_ms=60)
    play(jb, packets[:50], send[:50] + transit[:50], 1.0)
    closed = 5.0 * (1 - (15 / 16) ** 49)
    assert jb.report()["jitter_ms"] == pytest.approx(closed, rel=1e-9)
    rng = np.random.default_rng(23)
    transit[50:] = rng.uniform(0.0, 0.030, n - 50)
    arrivals = send + transit
    play(jb, packets, arrivals, 3.5, start=1.0)
    timestamps = np.arange(n) * FRAME
    assert jb.report()["jitter_ms"] == pytest.approx(rfc3550_jitter(arrivals, timestamps),
                                                     rel=1e-9)


def test_quantile_window_matches_numpy(rng):
    """The sorted window the delay target is read from gives numpy.quantile
    of the last values added, as values come and go."""
    from stagevox.engine.jitter import _QuantileWindow
    window = _QuantileWindow(50)
    values = rng.normal(0.0, 1000.0, 400).round(1)       # ties as well
    values[100:150] = 7.0
    for k, v in enumerate(values):
        window.append(float(v))
        last = values[max(0, k - 49):k + 1]
        for q in (0.5, 0.9, 0.99):
            assert window.quantile(q) == pytest.approx(np.quantile(last, q), rel=0, abs=1e-9)
    window.clear()
    assert len(window) == 0
