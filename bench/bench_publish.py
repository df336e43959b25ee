"""Benchmark of the CDN push: one server channel of 17 hosts mixed and
pushed as AAC to two RTMP URLs of a local nginx-rtmp.

What it runs: the server's media bridges (``engine.media_bridges``, as
``Server`` holds them) get 17 hosts' Opus streams (the bundled speech, each
host from another point of it, 20 ms frames at 32 kb/s, encoded before the
clock starts) offered at their real-time pace, as the server's loop offers
what hosts send; the channel is mixed (stereo, 48 kHz, each host panned to
its own place) and pushed to two URLs of an nginx with its RTMP module
started here on 127.0.0.1 (Debian's ``nginx`` and ``libnginx-mod-rtmp``).

What it measures, over ``--seconds`` of streaming: the CPU time (user +
system, from /proc) of the mix's worker thread (17 reorder buffers, 17
Opus decoders, the mix-down, and the AAC-LC encoding, done once for both
URLs since they share the channel's settings), of the two publisher
threads (hand-over of the AAC packets to the worker processes) and of the
two worker processes (FLV muxing, RTMP), in percent of one core.  Target:
under 10 %.

Beside it, what a user pays at the least for the same output with FFmpeg
alone (PyAV, in one process, with the same encoder options, the
already-mixed signal encoded as fast as it can go, no network): the AAC
encoder once (as FFmpeg's ``tee`` muxer would send one encoding to two
URLs) and the 17 Opus streams decoded (libopus through PyAV): the floor
any tool pays, and the ratio to it.  The
machine's load average is printed too: on a busy machine CPU times grow.  And the forwarding side: what reached
nginx (its recordings' durations against the time pushed).

Usage::

    python bench/bench_publish.py               # 20 s of streaming
    python bench/bench_publish.py --seconds 5   # a quick run
"""

import argparse
import fractions
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rtmp_server import RtmpServer, find_nginx  # noqa: E402

from stagevox.dsp import samples  # noqa: E402
from stagevox.engine import codec  # noqa: E402
from stagevox.engine.channel_mix import Transcoding  # noqa: E402
from stagevox.engine.media_bridges import MediaBridges  # noqa: E402
from stagevox.engine.publish_worker import AAC_OPTIONS  # noqa: E402
from stagevox.engine.rtp import PT_OPUS, RtpPacket  # noqa: E402

HOSTS = 17
RATE = 48000
FRAME = 960                     # 20 ms Opus frames, as hosts send them
TARGET_PCT = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(path):
    """User + system seconds of a /proc .../stat file (0 if it is gone)."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def host_packets(seconds):
    """Each host's RTP packets, 20 ms of speech each, from its own point of the sample."""
    speech = samples.speech(RATE)
    n = int(seconds * RATE) // FRAME
    streams = []
    for h in range(HOSTS):
        start = (h * len(speech)) // HOSTS
        x = np.resize(np.roll(speech, -start), n * FRAME).astype(np.float32)
        enc = codec.OpusEncoder(bitrate=32000, frame_ms=20)
        streams.append([RtpPacket(payload_type=PT_OPUS, sequence_number=k & 0xFFFF,
                                  timestamp=(k * FRAME) & 0xFFFFFFFF, ssrc=1000 + h,
                                  payload=enc.encode(x[k * FRAME:(k + 1) * FRAME]))
                        for k in range(n)])
    return streams


def feed(bridges, streams, stop):
    """Offer every host's packet on its 20 ms schedule, as the server's loop does."""
    t0 = time.monotonic()
    for k in range(len(streams[0])):
        delay = t0 + k * FRAME / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if stop.is_set():
            return
        now = time.monotonic()
        for h, packets in enumerate(streams):
            bridges.offer("bench", h + 1, 1000 + h, packets[k], now)


def opus_floor(streams):
    """CPU seconds FFmpeg's libopus decoder (PyAV) takes for every host's packets."""
    start = time.process_time()
    for packets in streams:
        ctx = av.CodecContext.create("libopus", "r")
        ctx.sample_rate, ctx.layout = RATE, "mono"
        for p in packets:
            ctx.decode(av.Packet(p.payload))
    return time.process_time() - start


def aac_floor(seconds, bitrate, times=1):
    """CPU seconds FFmpeg's AAC encoder (PyAV) takes for ``seconds`` of
    48 kHz stereo, ``times`` times, already mixed."""
    x = np.ascontiguousarray(np.tile(samples.speech(RATE)[:RATE], (2, int(seconds) + 1))
                             [:, :int(seconds * RATE)], dtype=np.float32)
    start = time.process_time()
    for _ in range(times):
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = RATE, "stereo", "fltp", bitrate
        ctx.time_base = fractions.Fraction(1, RATE)
        ctx.options = AAC_OPTIONS
        ctx.open()
        for i in range(0, x.shape[1] - 1024, 1024):
            frame = av.AudioFrame.from_ndarray(x[:, i:i + 1024], format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = RATE, i
            ctx.encode(frame)
        ctx.encode(None)
    return time.process_time() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    if find_nginx() is None:
        sys.exit("nginx with the RTMP module is needed: apt-get install nginx libnginx-mod-rtmp")
    print(f"encoding {HOSTS} hosts' streams ({args.seconds:g} s each) ...", flush=True)
    streams = host_packets(args.seconds + 1.0)
    root = tempfile.mkdtemp(prefix="bench-publish-")
    nginx = RtmpServer(root).start()
    counters = __import__("collections").Counter()
    bridges = MediaBridges(counters, lambda name: False)
    running = threading.Event()
    states = []

    class Handler:
        def on_rtmp_streaming_state_changed(self, url, state, reason):
            states.append((url, state, reason))
            if sum(s == "running" for _, s, _ in states) >= 2:
                running.set()
    bridges.add_handler(Handler())
    config = Transcoding(sample_rate=RATE, channels=2, bitrate=128000,
                         pans={h + 1: -1.0 + 2.0 * h / (HOSTS - 1) for h in range(HOSTS)})
    urls = [nginx.url("a"), nginx.url("b")]
    try:
        for url in urls:
            bridges.add_publish_stream_url("bench", url, config)
        if not running.wait(15):
            sys.exit(f"the pushes did not start: {states}\n{nginx.log()}")
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(bridges, streams, stop), daemon=True)
        feeder.start()
        time.sleep(1.0)                  # the jitter buffers fill; then the clock starts
        threads = {t.native_id: t.name for t in threading.enumerate()
                   if t.name.startswith(("stagevox-mix", "stagevox-rtmp"))}
        pids = [p.worker_pid for p in bridges._publishers["bench"].values()]

        def sample():
            tasks = {tid: cpu_of(f"/proc/self/task/{tid}/stat") for tid in threads}
            return tasks, [cpu_of(f"/proc/{pid}/stat") for pid in pids], time.monotonic()
        t_before, p_before, w0 = sample()
        time.sleep(args.seconds - 1.0)
        t_after, p_after, w1 = sample()
        stop.set()
        feeder.join()
        for url in urls:
            bridges.remove_publish_stream_url("bench", url)
    finally:
        bridges.close()
        nginx.stop()
    wall = w1 - w0
    mix = sum(t_after[t] - t_before[t] for t in threads if threads[t].startswith("stagevox-mix"))
    hand = sum(t_after[t] - t_before[t] for t in threads
               if threads[t].startswith("stagevox-rtmp"))
    workers = sum(a - b for a, b in zip(p_after, p_before))
    total = mix + hand + workers
    aac = aac_floor(wall, 128000)
    opus = opus_floor([packets[:round(wall * RATE / FRAME)] for packets in streams])
    floor = aac + opus
    pct = lambda s: 100.0 * s / wall  # noqa: E731
    print(f"\n{HOSTS} hosts -> 2 RTMP URLs (AAC-LC 48 kHz stereo 128 kb/s), {wall:.1f} s "
          f"measured, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  mix worker (17 reorder buffers + Opus decoders + mix-down + AAC encoding once) "
          f"{pct(mix):6.2f} % of a core")
    print(f"  publisher threads (hand-over to the workers)             {pct(hand):6.2f} %")
    print(f"  worker processes (FLV muxing, RTMP), both                {pct(workers):6.2f} %")
    print(f"  total                                                     {pct(total):6.2f} %  "
          f"target < {TARGET_PCT:g} %: {'PASS' if pct(total) < TARGET_PCT else 'FAIL'}")
    print(f"  FFmpeg alone (PyAV): 17 Opus decodes {pct(opus):.2f} % + AAC encoder once "
          f"{pct(aac):.2f} % = {pct(floor):.2f} %  (stagevox total / floor = {total / floor:.1f}x)")
    print(f"  dropped: mix queue {counters['mix_dropped']}, publish queues "
          f"{counters['publish_dropped']}, errors {counters['publish_errors']}")
    for name in ("a", "b"):
        with av.open(str(nginx.recording(name))) as c:
            st = c.streams.audio[0]
            n = sum(f.samples for f in c.decode(st))
        print(f"  nginx recording {name}: {n / st.rate:.2f} s")


if __name__ == "__main__":
    main()
