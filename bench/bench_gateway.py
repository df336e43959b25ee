"""Benchmark of the browser gateway: listeners per core, loss, mouth-to-ear delay.

Three processes on 127.0.0.1:

- this one: an ``engine.Server``, a Python host (an ``engine.Client``)
  that speaks the bundled speech in real time, 10 ms a push, with a marker
  (a 30 ms chirp, 1 to 6 kHz) in place of the speech once a second, and a
  Python listener (the delay without the gateway);
- the gateway (``engine.Gateway`` with the secret, so its listeners of a
  channel share one member and one Opus encode; ``--no-share``: without,
  each listener its own ``Client`` and aiortc encoder, as a gateway that is
  not given the secret runs);
- the listeners: aiortc peers (the stand-in for browsers) that listen over
  WHEP, each with its own token, ICE and DTLS-SRTP.

The listeners are added in steps (``--listeners``, default 10,25,50,100);
after each step has settled (``--settle`` s) the counters are read over
``--window`` s.  Columns: the gateway's load (CPU seconds per second, user
+ system of all its threads, /proc/PID/stat), its CPU per listener served
and the listeners served per core (a listener served: 50 frames a second,
so the listeners less the gateway's loss; a gateway starved of CPU by other
programs skips frames and does less work); "loss gw", the
frames due to the listeners in the window that the gateway did not hand to
aiortc (skipped by a feed that fell more than 0.2 s behind, or pushed out of
a listener's queue); "recv", the frames due that the stand-ins had not
received (this adds their own lag); "gaps", the RTP packets their receivers
counted lost (aiortc's getStats); "encodes", the feed's Opus encodes in the
window (50 a second whatever the number of listeners); "waited", the
seconds per second the gateway's threads were runnable while the CPU ran
something else (/proc/PID/task/*/schedstat: the machine's contention); the
stand-ins' own load; the load average.  Target: 100 listeners per core with
under 1 % loss at the gateway.

The stand-ins: every aiortc receiver but listener 0's drops its frames
undecoded (a browser decodes on its own machine; here the two processes
share two cores), so each costs its process the RTP reception, SRTP and the
jitter buffer.

Mouth-to-ear delay: listener 0 keeps every frame its aiortc track hands over
with the time it came (``time.monotonic``, one clock for all processes on
Linux).  The host notes when it pushed each marker.  Each marker is found
in what listener 0 received by cross-correlation with the chirp; its ear
time is the arrival of the frame that holds its onset plus the onset's
place in that frame; delay = ear time - push time.  The median over the
markers of each step is printed; the verdict uses the first step (the
fewest listeners, where the stand-ins' own lag is least).  Target under
150 ms.  It includes the host's 20 ms packets, the server, the feed's
jitter buffer, its 20 ms frames and Opus, and aiortc's receiver, which
holds 4 packets (80 ms) before it decodes the first; a browser's jitter
buffer adapts instead.  Beside it, the same delay to a Python listener
on the server (a ``Client`` pulling 10 ms every 10 ms, its ear time the
pull), which shows what the gateway adds.

Usage::

    python bench/bench_gateway.py                    # 10, 25, 50, 100 listeners
    python bench/bench_gateway.py --listeners 10,50 --window 5
    python bench/bench_gateway.py --no-share --listeners 10,25    # one Client per listener
    python bench/bench_gateway.py --nice -5       # the gateway first on a shared machine
"""

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import sys
import threading
import time

import numpy as np
import scipy.signal as ss

from bench_engine import run_queue_wait, wait_reply
from stagevox import dsp, engine

RATE = 48000
BLOCK = 480                        # the host pushes 10 ms at a time
FRAME_S = 0.02                     # the gateway sends 20 ms frames
SECRET = "bench-gateway-secret"
CHANNEL = "bench"
HOST_UID = 1
REFERENCE_UID = 2
MARKER_EVERY_S = 1.0
MARKER_S = 0.03
TARGET_PER_CORE = 100
TARGET_LOSS = 0.01
TARGET_DELAY_MS = 150.0
CONNECT_BATCH = 10                 # WHEP offers sent at once


def chirp():
    """The marker: a 30 ms linear chirp from 1 to 6 kHz, Hann-windowed, peak 0.6."""
    t = np.arange(int(MARKER_S * RATE)) / RATE
    return (0.6 * np.hanning(t.size) * ss.chirp(t, 1000, MARKER_S, 6000)).astype(np.float32)


def cpu_of(pid):
    """User + system CPU seconds of process ``pid`` (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ gateway process

class ProfiledGateway(engine.Gateway):
    """A gateway whose event loop thread runs under cProfile (``profiler``)."""

    async def _main(self, ready):
        import cProfile
        self.profiler = cProfile.Profile()
        self.profiler.enable()
        try:
            await super()._main(ready)
        finally:
            self.profiler.disable()


def gateway_main(conn, server_address, server_key, share, profile, nice):
    """Run a gateway; answer "stats" with its listener counters until "stop"."""
    try:
        os.nice(nice)
        kind = ProfiledGateway if profile else engine.Gateway
        gw = kind(server_address, server_key, http_port=0,
                  secret=SECRET if share else None).start()
    except Exception as exc:                       # report it to the parent
        conn.send(("error", repr(exc)))
        return
    conn.send((gw.url, os.getpid()))
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        feeds = list(gw.feeds.values())
        tracks = [t for f in feeds for t in list(f.tracks)]
        buffers = [u["buffer_delay_ms"] for f in feeds
                   for u in f.client.stats()["users"].values()]
        conn.send({"at": time.monotonic(), "people": len(gw.people),
                   "feed_buffer_ms": max(buffers, default=None),
                   "encoded": sum(f.frames for f in feeds),
                   "delivered": sum(t.delivered for t in tracks),
                   "dropped": sum(t.dropped for t in tracks)})
    gw.stop()
    if profile:
        import io
        import pstats
        text = io.StringIO()
        pstats.Stats(gw.profiler, stream=text).sort_stats("tottime").print_stats(25)
        print("the gateway's event loop, by own time:\n" + text.getvalue(), flush=True)
    conn.send("stopped")


# ------------------------------------------------------------------ listeners process

class Peer:
    """One aiortc listener over WHEP; ``keep`` True: its frames are kept for the delay."""

    def __init__(self, keep):
        self.keep = keep
        self.frames = []               # (arrival monotonic s, float32 samples)
        self.pc = None
        self.location = None

    async def connect(self, session, url, token):
        from aiortc import RTCPeerConnection, RTCSessionDescription
        self.pc = RTCPeerConnection()
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", lambda track: asyncio.ensure_future(self._read(track)))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with session.post(f"{url}whep/{CHANNEL}", data=self.pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp",
                                         "Authorization": f"Bearer {token}"}) as res:
            if res.status != 201:
                raise RuntimeError(f"WHEP refused: {res.status} {await res.text()}")
            answer, self.location = await res.text(), res.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def _read(self, track):
        while True:
            try:
                frame = await track.recv()
            except Exception:          # the track ended
                return
            if self.keep:
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                self.frames.append((time.monotonic(), pcm.mean(axis=1) / 32768.0))

    async def rtp(self):
        """(packets received, packets lost) so far, from the receiver's stats."""
        received = lost = 0
        for stat in (await self.pc.getStats()).values():
            if stat.type == "inbound-rtp":
                received += stat.packetsReceived
                lost += max(0, stat.packetsLost)
        return received, lost


def listeners_main(conn, url):
    """Grow to the asked number of peers, report their counters, until "stop"."""
    count_only_after_first()
    asyncio.run(_listeners(conn, url))


def count_only_after_first():
    """Make every aiortc receiver but the first of this process drop its frames
    undecoded: the stand-ins for browsers then cost this process the RTP
    reception, SRTP and jitter buffer only (a browser decodes on its own
    machine), and the machine's two cores go to the gateway.  The first
    receiver (listener 0, whose audio gives the delay) decodes as usual."""
    from aiortc import rtcrtpreceiver
    decode = rtcrtpreceiver.decoder_worker
    started = []

    def worker(loop, input_q, output_q, decode_error):
        started.append(True)
        if len(started) == 1:
            return decode(loop, input_q, output_q, decode_error)
        while input_q.get() is not None:
            pass
        asyncio.run_coroutine_threadsafe(output_q.put(None), loop)   # the track ends

    rtcrtpreceiver.decoder_worker = worker


async def _listeners(conn, url):
    import aiohttp
    loop = asyncio.get_running_loop()
    peers = []
    async with aiohttp.ClientSession() as session:
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            try:
                if msg[0] == "grow":
                    while len(peers) < msg[1]:
                        # Listener 0 alone first (its receiver is the one that
                        # decodes), then in batches, each connected before the next.
                        size = min(CONNECT_BATCH if peers else 1, msg[1] - len(peers))
                        batch = [Peer(keep=not peers) for _ in range(size)]
                        first = 100 + len(peers)
                        await asyncio.gather(*(p.connect(session, url, engine.make_token(
                            SECRET, CHANNEL, first + i, "audience", expire_s=3600))
                            for i, p in enumerate(batch)))
                        peers += batch
                        for _ in range(200):
                            if all(p.pc.connectionState == "connected" for p in batch):
                                break
                            await asyncio.sleep(0.05)
                    conn.send(sum(p.pc.connectionState == "connected" for p in peers))
                elif msg[0] == "stats":
                    before = time.monotonic()
                    counts = await asyncio.gather(*(p.rtp() for p in peers))
                    at = (before + time.monotonic()) / 2
                    kept, peers[0].frames = peers[0].frames, []
                    conn.send((sum(c[0] for c in counts), sum(c[1] for c in counts), kept, at))
                elif msg[0] == "stop":
                    for p in peers:
                        async with session.delete(url.rstrip("/") + p.location):
                            pass
                        await p.pc.close()
                    conn.send("stopped")
                    return
            except Exception as exc:                 # report it to the parent
                conn.send(("error", repr(exc)))
                return


# ------------------------------------------------------------------ host (this process)

class PacedMember:
    """A member of the channel (``uid``, ``role``) whose ``step(i)`` runs every
    10 ms in a thread of its own from the start until ``stop``."""

    def __init__(self, server, uid, role):
        self.client = engine.Client()
        self.client.join_channel(server.address, CHANNEL, uid,
                                 engine.make_token(SECRET, CHANNEL, uid, role), role,
                                 server_key=server.public_key)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            delay = t0 + i * BLOCK / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.step(i)
            i += 1

    def stop(self):
        self._stop.set()
        self._thread.join(5.0)
        self.client.leave_channel()


class Host(PacedMember):
    """The speaking host: speech with a marker each second, pushed 10 ms at a time."""

    def __init__(self, server):
        speech = dsp.samples.speech(RATE)
        self.speech = (0.3 * speech / np.max(np.abs(speech))).astype(np.float32)
        self.marker = chirp()
        self.markers = []                # push time of each marker's first sample
        super().__init__(server, HOST_UID, "host")

    def step(self, i):
        start = (i * BLOCK) % (self.speech.size - BLOCK)
        block = self.speech[start:start + BLOCK].copy()
        k = i % (int(MARKER_EVERY_S * RATE) // BLOCK)
        if k * BLOCK < self.marker.size:       # the marker's blocks replace the speech
            piece = self.marker[k * BLOCK:(k + 1) * BLOCK]
            block[:] = 0.0
            block[:piece.size] = piece
            if k == 0:
                self.markers.append(time.monotonic())
        self.client.push_audio(block)


class Reference(PacedMember):
    """A Python listener on the server itself (no gateway): pulls 10 ms every
    10 ms and keeps each block with the time it was pulled, for the same delay."""

    def __init__(self, server):
        self.frames = []
        super().__init__(server, REFERENCE_UID, "audience")

    def step(self, i):
        self.frames.append((time.monotonic(), self.client.pull_audio(BLOCK)[0]))

    def take(self):
        """The blocks kept since the last call."""
        kept, self.frames = self.frames, []
        return kept


def marker_times(frames, marker, threshold=0.7):
    """The time of each marker's first sample found in ``frames`` (a list of
    ``(time of its first sample, samples)``), at most one a marker period:
    where the normalised cross-correlation with ``marker`` peaks above
    ``threshold``."""
    if not frames:
        return []
    audio = np.concatenate([f for _, f in frames])
    starts = np.cumsum([0] + [f.size for _, f in frames[:-1]])
    arrivals = np.array([t for t, _ in frames])
    corr = ss.correlate(audio, marker, mode="valid", method="fft")
    # Normalised cross-correlation (1 for the marker itself); the local energy
    # is floored at an RMS of 0.01 so that near-silence scores near 0.
    local = ss.correlate(audio ** 2, np.ones(marker.size), mode="valid", method="fft")
    score = corr / np.sqrt(np.maximum(local, 1e-4 * marker.size) * np.sum(marker ** 2))
    out = []
    spacing = int(MARKER_EVERY_S * RATE)
    for pos in range(0, score.size, spacing):
        k = pos + int(np.argmax(score[pos:pos + spacing]))
        if score[k] > threshold:
            j = int(np.searchsorted(starts, k, side="right") - 1)
            out.append(arrivals[j] + (k - starts[j]) / RATE)
    return out


def delays_ms(frames, marker, pushed, threshold=0.7):
    """Mouth-to-ear delay of each marker found in ``frames`` (arrival, samples),
    in ms, given the push times ``pushed`` of all markers."""
    out = []
    for ear in marker_times(frames, marker, threshold):
        # The marker pushed last before the ear time (markers are 1 s apart).
        before = [p for p in pushed if p < ear]
        if before:
            out.append(1e3 * (ear - before[-1]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listeners", default="10,25,50,100",
                    help="listener counts, in rising order (default 10,25,50,100)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after each step")
    ap.add_argument("--window", type=float, default=8.0, help="measured seconds a step")
    ap.add_argument("--profile", action="store_true",
                    help="profile the gateway's event loop (cProfile; slows it) and print it")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness added to the gateway process (negative needs root: the "
                         "gateway first on a machine other programs share)")
    ap.add_argument("--no-share", action="store_true",
                    help="a gateway without the secret: one Client and encoder per listener")
    args = ap.parse_args()
    steps = [int(n) for n in args.listeners.split(",")]
    share = not args.no_share
    ctx = mp.get_context("spawn")
    print(f"bench_gateway: listeners {steps}, window {args.window:g} s, "
          f"{'shared member and encode per channel' if share else 'one Client per listener'}"
          f"{f', gateway at niceness {args.nice:+d}' if args.nice else ''}; "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with engine.Server(secret=SECRET) as server:
        gw_conn, child = ctx.Pipe()
        gw_proc = ctx.Process(target=gateway_main,
                              args=(child, server.address, server.public_key, share,
                                    args.profile, args.nice))
        gw_proc.start()
        url, gw_pid = wait_reply(gw_conn, 60, "gateway")
        host = Host(server)
        reference = Reference(server)
        ls_conn, child = ctx.Pipe()
        ls_proc = ctx.Process(target=listeners_main, args=(child, url))
        ls_proc.start()
        rows = []
        print(HEADER, flush=True)
        try:
            for n in steps:
                ls_conn.send(("grow", n))
                connected = wait_reply(ls_conn, 300, "listeners")
                time.sleep(args.settle)
                ls_conn.send(("stats",))
                rx0, lost0, _, at0 = wait_reply(ls_conn, 60, "listeners")
                gw_conn.send("stats")
                g0 = wait_reply(gw_conn, 10, "gateway")
                reference.take()
                c0, w0, p0, t0 = (cpu_of(gw_pid), run_queue_wait(gw_pid), cpu_of(ls_proc.pid),
                                  time.monotonic())
                time.sleep(args.window)
                c1, w1, p1, t1 = (cpu_of(gw_pid), run_queue_wait(gw_pid), cpu_of(ls_proc.pid),
                                  time.monotonic())
                gw_conn.send("stats")
                g1 = wait_reply(gw_conn, 10, "gateway")
                ls_conn.send(("stats",))
                rx1, lost1, kept, at1 = wait_reply(ls_conn, 60, "listeners")
                load = (c1 - c0) / (t1 - t0)
                due = (at1 - at0) / FRAME_S * connected
                rx, lost = rx1 - rx0, lost1 - lost0
                delays = delays_ms(kept, host.marker, list(host.markers))
                direct = delays_ms(reference.take(), host.marker, list(host.markers))
                sent = g1["delivered"] - g0["delivered"]
                gw_due = (g1["at"] - g0["at"]) / FRAME_S * connected
                rows.append(Row(n, connected, load, gw_due, sent, due, rx, lost,
                                g1["dropped"] - g0["dropped"], g1["encoded"] - g0["encoded"],
                                delays, os.getloadavg()[0], (p1 - p0) / (t1 - t0),
                                (w1 - w0) / (t1 - t0), direct))
                print_row(rows[-1])
        finally:
            ls_conn.send(("stop",))
            try:
                wait_reply(ls_conn, 60, "listeners")
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
            gw_conn.send("stop")
            try:
                wait_reply(gw_conn, 30, "gateway")
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
            for proc in (ls_proc, gw_proc):
                proc.join(10.0)
                if proc.is_alive():
                    proc.kill()
            host.stop()
            reference.stop()
    summary(rows)


Row = collections.namedtuple("Row", "n connected load gw_due sent due rx lost dropped encoded "
                                   "delays loadavg peers_load waited direct")


def gateway_loss(row):
    """Share of the frames due to the listeners that the gateway did not send
    (None without a shared feed, whose tracks count what they hand aiortc)."""
    return max(0.0, 1.0 - row.sent / row.gw_due) if row.encoded and row.gw_due else None


def served(row):
    """Listeners served at the full frame rate: those connected, less the gateway's loss."""
    loss = gateway_loss(row)
    return row.connected * (1.0 - loss) if loss is not None else row.connected


HEADER = (f"{'listeners':>9} {'gateway':>8} {'CPU each':>9} {'per core':>8} {'loss gw':>8} "
          f"{'recv':>6} {'gaps':>6} {'encodes':>7} {'delay':>10} {'waited':>6} {'stand-ins':>9} "
          f"{'load':>5}\n"
          f"{'':>9} {'cores':>8} {'ms/s':>9} {'':>8} {'%':>8} {'%':>6} {'%':>6} {'':>7} "
          f"{'ms (n)':>10} {'s/s':>6} {'cores':>9} {'avg':>5}")


def print_row(r):
    loss = gateway_loss(r)
    loss = f"{100 * loss:.2f}" if loss is not None else "-"
    missing = max(0.0, 1.0 - r.rx / r.due) if r.due else 0.0
    gaps = r.lost / (r.rx + r.lost) if r.rx + r.lost else 0.0
    delay = f"{np.median(r.delays):.0f} ({len(r.delays)})" if r.delays else "-"
    per_core = f"{served(r) / r.load:.0f}" if r.load else "-"
    each = f"{1e3 * r.load / served(r):.2f}" if served(r) else "-"
    shown = f"{r.connected}" if r.connected == r.n else f"{r.connected}/{r.n}"
    print(f"{shown:>9} {r.load:8.3f} {each:>9} {per_core:>8} "
          f"{loss:>8} {100 * missing:6.2f} {100 * gaps:6.2f} {r.encoded:7d} {delay:>10} "
          f"{r.waited:6.2f} {r.peers_load:9.2f} {r.loadavg:5.2f}", flush=True)


def summary(rows):
    if not rows:
        return
    last = rows[-1]
    per_core = served(last) / last.load if last.load else float("inf")
    print(f"\nlisteners per core at {last.connected}: {per_core:.0f} "
          f"(target >= {TARGET_PER_CORE}) {'PASS' if per_core >= TARGET_PER_CORE else 'FAIL'}")
    losses = [gateway_loss(r) for r in rows]
    if None not in losses:
        worst = max(losses)
        print(f"worst loss at the gateway: {100 * worst:.2f} % "
              f"(target < {100 * TARGET_LOSS:g} %) {'PASS' if worst < TARGET_LOSS else 'FAIL'}")
    if rows[0].delays:
        med = float(np.median(rows[0].delays))
        print(f"mouth-to-ear, Python host -> gateway -> aiortc listener at {rows[0].connected} "
              f"listeners: median {med:.1f} ms over {len(rows[0].delays)} markers "
              f"(target < {TARGET_DELAY_MS:g} ms) {'PASS' if med < TARGET_DELAY_MS else 'FAIL'}")
    if rows[0].direct:
        print(f"beside it, Python host -> Python listener on the server (no gateway): median "
              f"{float(np.median(rows[0].direct)):.1f} ms over {len(rows[0].direct)} markers")


if __name__ == "__main__":
    main()
