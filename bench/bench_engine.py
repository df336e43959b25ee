"""Benchmark of the stagevox live channel server: fan-out and a full stage.

Runs ``engine.Server`` in its own process pinned to CPU 0 and simulated
members in other processes pinned to CPU 1, all on 127.0.0.1, and prints what
was sent, what arrived, where packets were lost and what the server's CPU
paid for it.  The members speak the engine's sealed protocol (engine v2):
each joins through the handshake (``session.Initiator``: initiation, cookie
reply, initiation with the cookie, response carrying ``Joined``, then a
sealed Ping whose Pong shows the server admitted it), and after that every
datagram both ways is sealed (ChaCha20-Poly1305, ``Session.seal`` /
``Session.open``).  The server gets a fixed private key
(SERVER_PRIVATE_KEY); its public key comes back through the pipe with its
address.

1. Fan-out: one host (50 packets/s of 20 ms Opus frames of the bundled
   speech, encoded once, each sealed) to N listeners, N in 100 ... 2000.
   Each listener is a UDP socket that joins as audience with its own uid
   and token, pings the server once a second (sealed) and opens every
   datagram it receives, counting the RTP packets inside; a datagram that
   does not open (tag, replay window) is counted as "not opened" and must
   stay 0.  Target: at 1000 listeners under 0.5 % dropped, the server on
   one core.
2. Full stage: 17 hosts talking at once (50 packets/s each) to 100
   listeners; no listener may lose a packet.

Every point gets a fresh server process and a fresh channel.  Expected =
host packets sent x receivers; dropped = expected - received.  Where packets
go missing is shown three ways: the server's own counters (forwarded), the
per-socket drop counts of /proc/net/udp (the server's socket, the listeners'
sockets) and the change of the kernel's UDP RcvbufErrors / SndbufErrors
(/proc/net/snmp, system wide, so other programs' traffic shows there too).
Server CPU is user + system time of the server process (``os.times`` in it):
per forwarded packet in microseconds, and as load = CPU seconds / wall
seconds of the send window.  Beside it, "AEAD seal" is what sealing one
forwarded packet costs alone (``Session.seal`` of the packets' mean size,
timeit median in the server's process after the point) and its share of
the server's CPU per forwarded packet.  The keep-alive load is the same
measured for a few seconds before the host starts, while only pings arrive;
"net" subtracts it.  "Waited" is the share of the send window the server was
runnable but another program held its CPU (/proc schedstat): when it is
large, drops measure the machine's contention as much as the server.  The
delay is each packet's arrival time minus its host's send schedule (carried
in the RTP timestamp), above the earliest packet: it grows when the server
falls behind.

The listener process opens every datagram (no sampling): at 1000 listeners
(50,000 datagrams a second) that measured a load of 0.6 to 0.86 of CPU 1
(12 to 17 us a datagram, of which the open is about 5), with no drops on
the listeners' sockets, so the listener side keeps up at the target.
Somewhere between 1200 and 1700 listeners a server that delivered
everything would fill CPU 1; there the listeners' own drops show in the
"listener sockets" column and the "listener side" line says whether they
kept up.

Usage::

    python bench/bench_engine.py            # N = 100 ... 2000, 10 s of packets a point
    python bench/bench_engine.py --quick    # N = 100 and 1000, 4 s a point
    python bench/bench_engine.py --listeners 500,1000 --profile --nice -10

``--listeners`` picks the fan-out points; ``--profile`` adds one run at 1000
listeners (or the largest point below) with cProfile in the server's thread
and prints where its time goes; ``--nice N`` runs the benchmark's processes
at niceness N (negative needs root), for a machine other programs share.
``--repeats`` is accepted and not used (each point is one long run).
"""

import argparse
import cProfile
import dataclasses
import hashlib
import io
import multiprocessing
import os
import platform
import pstats
import random
import resource
import selectors
import socket
import statistics
import struct
import sys
import threading
import time
import timeit

from stagevox import dsp
from stagevox.engine import OpusEncoder, Server, make_token
from stagevox.engine import control, session
from stagevox.engine.control import Ack, Event, Join, Ping, Refused
from stagevox.engine.rtp import PT_OPUS, RtpPacket
from stagevox.engine.session import SessionError

RATE = 48000
FRAME_S = 0.020                       # one Opus frame per packet, 50 packets/s
FRAME_SAMPLES = 960
SECRET = "stagevox-bench-secret"
#: The server's long-term X25519 key, fixed so that every run's members know
#: its public key (it also comes back through the pipe with the address).
SERVER_PRIVATE_KEY = hashlib.sha256(b"stagevox bench server key").digest()
FAN_OUT = (100, 250, 500, 1000, 1500, 2000)
FAN_OUT_QUICK = (100, 1000)
TARGET_N = 1000
TARGET_DROP_PCT = 0.5
STAGE_HOSTS = 17
STAGE_LISTENERS = 100
SERVER_CPU = 0
MEMBERS_CPU = 1
RCVBUF = 1 << 20                      # asked for each listener socket, bytes
PING_INTERVAL_S = 1.0
KEEPALIVE_S = 3.0                     # pings-only window before the host starts
DRAIN_S = 5.0                         # longest wait for stragglers after the last packet
JOIN_WINDOW = 200                     # joins in flight at once
JOIN_RETRY_S = 1.0
HOST_UID = 1
LISTENER_UID = 10000
DELAY_BINS = 10000                    # 1 ms bins of the listeners' delay histogram
DELAY_SLACK_S = 0.5                   # room below the first packet's delay
IDLE_FUNCTION = "method 'poll' of 'select.epoll' objects"     # the event loop's wait
COST_REPEATS = 31                     # timeit runs of a cryptographic step (median)
#: ``--publish``: a second channel of this many hosts, pushed to two RTMP URLs.
PUSH_HOSTS = 17
PUSH_CHANNEL = "cdn-push"
PUSH_TRANSCODING = {"sample_rate": 48000, "channels": 2, "bitrate": 128000,
                    "pans": {HOST_UID + 1 + h: -1.0 + 2.0 * h / (PUSH_HOSTS - 1)
                             for h in range(PUSH_HOSTS)}}


# ------------------------------------------------------------------ helpers

def pin(cpu):
    """Pin this process to ``cpu`` where the system allows; return a description."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    try:
        os.sched_setaffinity(0, {cpu})      # not checked against the inherited mask
        return f"CPU {cpu}"
    except OSError as exc:
        return f"not pinned to CPU {cpu} ({exc})"


def cpu_seconds():
    """User and system CPU seconds of this process (all threads)."""
    t = os.times()
    return t.user, t.system


def run_queue_wait(pid="self"):
    """Seconds the threads of process ``pid`` (default this one) have waited,
    runnable, for a CPU that ran something else (/proc/PID/task/*/schedstat),
    or None where unknown.  A thread that ends meanwhile is left out."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):      # a thread that just ended
            pass
    return total / 1e9


def udp_snmp():
    """The kernel's UDP counters from /proc/net/snmp as a dict (empty if unreadable)."""
    try:
        with open("/proc/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}
    except (OSError, IndexError, ValueError):
        return {}


def udp_socket_drops(ports):
    """Sum of the per-socket drop counters in /proc/net/udp of the sockets bound
    to 127.0.0.1 on ``ports`` (a set), or None if the file cannot be read."""
    try:
        total = 0
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                addr, port = cols[1].split(":")
                if addr == "0100007F" and int(port, 16) in ports:
                    total += int(cols[-1])
        return total
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def opus_frames():
    """The bundled speech as 20 ms Opus packets (32 kbit/s, mono), encoded once."""
    speech = dsp.samples.speech(RATE)
    enc = OpusEncoder(channels=1, bitrate=32000, frame_ms=20)
    n = speech.size // FRAME_SAMPLES
    return [enc.encode(speech[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(n)]


def end_process(proc):
    """Wait for ``proc`` to exit after being told to stop; kill it after 10 s."""
    proc.join(10.0)
    if proc.is_alive():
        proc.kill()
        proc.join(5.0)


def wait_reply(conn, timeout, what):
    """The next message on ``conn``, or RuntimeError after ``timeout`` seconds."""
    if not conn.poll(timeout):
        raise RuntimeError(f"no answer from the {what} within {timeout:g} s")
    reply = conn.recv()
    if isinstance(reply, tuple) and reply and reply[0] == "error":
        raise RuntimeError(f"the {what} failed: {reply[1]}")
    return reply


# ------------------------------------------------------------------ server process

def server_main(conn, secret, private_key, cpu, profile):
    """Child process: run a Server with ``private_key`` in a thread, answer
    snapshots and cost measurements on ``conn``."""
    try:
        pin(cpu)
        server = Server("127.0.0.1", 0, secret, private_key=private_key)
        profiler = cProfile.Profile() if profile else None
        thread = threading.Thread(target=server.run, name="bench-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10.0
        while server.address is None and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if server.address is None:
            conn.send(("error", "the server did not bind within 10 s"))
            return
        conn.send(("address", tuple(server.address), server.public_key))
        while True:
            if not conn.poll(600.0):
                break
            cmd = conn.recv()
            if cmd == "snapshot":
                conn.send(("snapshot", time.monotonic(), cpu_seconds(), run_queue_wait(),
                           counters_of(server), len(server._sessions)))
            elif isinstance(cmd, tuple) and cmd[0] == "costs":
                conn.send(("costs", crypto_costs(cmd[1], cmd[2], private_key)))
            elif isinstance(cmd, tuple) and cmd[0] == "join steps":
                conn.send(("join steps", join_steps(cmd[1], secret, private_key)))
            elif cmd in ("profile on", "profile off"):
                conn.send(("profile", switch_profiler(server, profiler, cmd == "profile on")))
            elif cmd == "profile rows":
                conn.send(("rows", profile_rows(profiler)))
                if profiler is not None:
                    profiler.clear()
            elif isinstance(cmd, tuple) and cmd[0] == "publish":
                conn.send(("publish", start_pushes(server, *cmd[1:])))
            elif cmd == "push states":
                conn.send(("push states", {u: s for u, s in server._bridges.publish_urls(
                    PUSH_CHANNEL).items()}, push_worker_cpu(server)))
            elif cmd == "stop":
                break
        server.stop()
        thread.join(10.0)
        conn.send(("stopped", counters_of(server), profile_rows(profiler)))
    except Exception as exc:       # report, never hang the parent
        conn.send(("error", repr(exc)))


def start_pushes(server, channel, urls, transcoding, timeout=15.0):
    """Push ``channel`` to every URL of ``urls``; wait until all run (or
    ``timeout`` s); returns ``{url: state}``."""
    for url in urls:
        server.add_publish_stream_url(channel, url, transcoding)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = server.publish_urls(channel)
        if all(state == "running" for state in states.values()):
            break
        time.sleep(0.1)
    return server.publish_urls(channel)


def push_worker_cpu(server):
    """CPU seconds of the server's RTMP worker processes (children, /proc)."""
    total = 0.0
    for publisher in server._bridges._publishers.get(PUSH_CHANNEL, {}).values():
        try:
            with open(f"/proc/{publisher.worker_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, TypeError):
            pass
    return total


def profile_rows(profiler):
    """``(function, calls, own seconds, cumulative seconds)`` of every function
    ``profiler`` (switched off, or None) has seen."""
    if profiler is None:
        return []
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats
    return [(pstats.func_std_string(func), nc, tt, ct)
            for func, (_, nc, tt, ct, _) in stats.items()]


def switch_profiler(server, profiler, on):
    """Turn ``profiler`` on or off in the server's own thread (cProfile follows
    the thread that enables it) by a callback on the server's event loop;
    returns whether that happened within 5 s."""
    if profiler is None:
        return False
    done = threading.Event()

    def switch():
        profiler.enable() if on else profiler.disable()
        done.set()

    server._loop.call_soon_threadsafe(switch)      # the benchmark reaches into the server
    return done.wait(5.0)


def counters_of(server):
    """A copy of ``server.counters`` taken while the server thread runs."""
    for _ in range(100):
        try:
            return dict(server.counters)
        except RuntimeError:       # changed size while copying: try again
            time.sleep(0.001)
    return {}


def rejected(function, *args):
    """Call ``function(*args)``, which is expected to raise SessionError."""
    try:
        function(*args)
    except SessionError:
        pass


def sealed_like(index, counter, size, rng):
    """A ``size``-byte datagram that looks sealed (transport header with
    ``index`` and ``counter``) but whose ciphertext and tag are random."""
    return struct.pack(">BIQ", session.KIND_TRANSPORT, index, counter) \
        + rng.randbytes(size - session.TRANSPORT_HEADER)


def bad_mac1_initiation(rng):
    """An initiation with a well-formed header and random contents: its mac1
    is wrong, mac2 is zero."""
    header = struct.pack(">BBHI", session.KIND_INITIATION, session.PROTOCOL_VERSION, 0,
                         rng.getrandbits(32))
    return header + rng.randbytes(session.INIT_SIZE - len(header) - 16) + bytes(16)


def timed_us(function, number):
    """Microseconds one call of ``function`` takes: the median of COST_REPEATS
    timeit runs of ``number`` calls (about a millisecond each), timed by this
    thread's CPU clock, so the server's own thread, which shares the CPU and
    the GIL in the server's process, does not count."""
    runs = timeit.repeat(function, number=number, repeat=COST_REPEATS, timer=time.thread_time)
    return statistics.median(runs) / number * 1e6


def crypto_costs(names, size, private_key):
    """Microseconds per call (timeit medians, in the calling process) of the
    cryptographic steps a datagram can cost the server, each on objects of
    its own (not the running server's):

    ``seal``: ``Session.seal`` of ``size`` inner bytes (one forwarded packet);
    ``bad_tag``: ``Session.open`` of a sealed-looking datagram of ``size`` +
    TRANSPORT_OVERHEAD bytes whose tag is wrong (one AEAD check);
    ``bad_mac1``: ``Responder.receive_initiation`` of an initiation whose mac1
    is wrong (one HMAC over the initiation);
    ``no_cookie``: the same of a genuine initiation without a cookie (mac1,
    then the 24-byte cookie reply is made);
    ``wrong_cookie``: of a genuine initiation with a random mac2 (mac1, mac2
    against the address's cookies, then a cookie reply).
    """
    rng = random.Random(7)
    responder = session.Responder(private_key)
    addr = ("127.0.0.1", 40000)
    sess = session.Session(rng.randbytes(32), rng.randbytes(32), 5, 6)
    inner = rng.randbytes(size)
    forged = sealed_like(5, 1000, size + session.TRANSPORT_OVERHEAD, rng)
    genuine = session.Initiator(responder.public_key, b"").initiation()
    wrong = genuine[:-16] + rng.randbytes(16)
    bad = bad_mac1_initiation(rng)
    tasks = {
        "seal": (lambda: sess.seal(inner), 400),
        "bad_tag": (lambda: rejected(sess.open, forged), 200),
        "bad_mac1": (lambda: rejected(responder.receive_initiation, bad, addr), 100),
        "no_cookie": (lambda: responder.receive_initiation(genuine, addr), 50),
        "wrong_cookie": (lambda: responder.receive_initiation(wrong, addr), 30),
    }
    return {name: timed_us(*tasks[name]) for name in names}


class _Collect:
    """Stands in for a server's endpoint: keeps what it sends."""

    def __init__(self):
        self.sent = []

    def send(self, data, addr=None):
        self.sent.append(data)


#: The datagrams of one join as the server sees them, in order.
JOIN_STEPS = ("initiation -> cookie reply", "initiation with cookie -> response",
              "sealed Ping -> admitted, Pong", "sealed Leave")


def join_steps(count, secret, private_key):
    """Microseconds (medians over ``count`` joins) the server's own code
    takes for each of JOIN_STEPS, without sockets or event loop: a Server that
    is not started, whose endpoint only collects what it sends, is handed each
    datagram of a join in turn (``datagram_received``); the client's side runs
    between the timed calls.  Returns ``{step: microseconds}``."""
    server = Server("127.0.0.1", 0, secret, private_key=private_key)
    out = server._endpoint = _Collect()           # the benchmark reaches into the server
    addr = ("127.0.0.1", 40000)
    times = {step: [] for step in JOIN_STEPS}
    clock = time.perf_counter
    leave = control.Leave().encode()
    took = []

    def feed(data):
        t = clock()
        server.datagram_received(data, addr)
        took.append(clock() - t)

    for k in range(count):
        uid = 100000 + k
        channel = f"steps-{k // 1000}"
        join = Join(k + 1, channel, uid, "audience", make_token(secret, channel, uid, "audience"),
                    0)
        joining = Joining(server.public_key, join)
        took.clear()
        feed(joining.next())
        feed(joining.take(out.sent.pop()))
        feed(joining.take(out.sent.pop()))
        joining.take(out.sent.pop())
        if not joining.admitted:
            raise RuntimeError("join steps: the Ping got no Pong")
        feed(joining.session.seal(leave))
        for step, seconds in zip(JOIN_STEPS, took):
            times[step].append(seconds)
    return {step: statistics.median(v) * 1e6 for step, v in times.items()}


@dataclasses.dataclass
class Snapshot:
    """The server process at one moment: monotonic time, user and system CPU
    seconds, seconds waited for a busy CPU (None if unknown), its counters and
    how many sessions it holds (pending, joined and retired)."""

    when: float
    user: float
    system: float
    waited: float | None
    counters: dict
    sessions: int

    @property
    def cpu(self):
        return self.user + self.system


class ServerProcess:
    """A Server in a spawned process pinned to SERVER_CPU, with the key
    SERVER_PRIVATE_KEY; ``address`` and ``public_key`` come back from it."""

    def __init__(self, ctx, profile=False):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=server_main,
                                args=(child, SECRET, SERVER_PRIVATE_KEY, SERVER_CPU, profile),
                                daemon=True)
        self.proc.start()
        child.close()
        _, self.address, self.public_key = wait_reply(self.conn, 60.0, "server process")

    def snapshot(self):
        """The server's ``Snapshot`` now."""
        self.conn.send("snapshot")
        _, when, (user, system), waited, counters, sessions = wait_reply(self.conn, 10.0,
                                                                         "server process")
        return Snapshot(when, user, system, waited, counters, sessions)

    def join_steps(self, count):
        """``join_steps(count)`` measured in the server's process."""
        self.conn.send(("join steps", count))
        return wait_reply(self.conn, 300.0, "server process")[1]

    def costs(self, names, size):
        """``crypto_costs(names, size)`` measured in the server's process (on its
        CPU, beside the idle server): ``{name: microseconds per call}``."""
        self.conn.send(("costs", tuple(names), size))
        return wait_reply(self.conn, 120.0, "server process")[1]

    def profile(self, on):
        """Start or stop the server's profiler (when it was started with one)."""
        self.conn.send("profile on" if on else "profile off")
        if not wait_reply(self.conn, 10.0, "server process")[1]:
            raise RuntimeError("the server's profiler could not be switched")

    def profile_rows(self):
        """The profile rows since the last call (the profiler must be off)."""
        self.conn.send("profile rows")
        return wait_reply(self.conn, 30.0, "server process")[1]

    def publish(self, channel, urls, transcoding):
        """Push ``channel`` to ``urls`` (the benchmark's CDN push); ``{url: state}``."""
        self.conn.send(("publish", channel, tuple(urls), transcoding))
        return wait_reply(self.conn, 30.0, "server process")[1]

    def push_states(self):
        """``({url: state}, CPU seconds of the RTMP worker processes)``."""
        self.conn.send("push states")
        return wait_reply(self.conn, 10.0, "server process")[1:]

    def stop(self):
        """Stop the server; returns ``(counters, profile rows)``, the rows
        ``(function, calls, own seconds, cumulative seconds)`` when profiled."""
        result = ({}, [])
        try:
            self.conn.send("stop")
            reply = wait_reply(self.conn, 20.0, "server process")
            result = reply[1], reply[2]
        except (OSError, EOFError, RuntimeError):
            pass
        end_process(self.proc)
        return result


# ------------------------------------------------------------------ joining

class Joining:
    """One member's way in through the handshake, step by step (no I/O here).

    Send ``next()``; hand every datagram from the server to ``take``, which
    returns the datagram to send in answer (or None).  The steps: the
    initiation (1200 bytes) earns a cookie reply, the initiation again with
    the cookie earns the response (``reply``: ``Joined`` or ``Refused``,
    and ``session``), then a sealed Ping; the first datagram that opens with
    the session (the Pong) shows the server admitted the member:
    ``admitted``.  ``next()`` after a loss sends the current step again.
    """

    def __init__(self, server_key, join):
        self.initiator = session.Initiator(server_key, join.encode())
        self.session = None
        self.reply = None
        self.admitted = False

    def next(self):
        """The initiation, or once the response came, a sealed Ping."""
        if self.session is None:
            return self.initiator.initiation()
        return self.session.seal(Ping(time.time()).encode())

    def take(self, data):
        """Read ``data`` from the server; returns what to send in answer, or None."""
        kind = data[0] if data else None
        if self.session is None:
            try:
                if kind == session.KIND_COOKIE:
                    return self.initiator.initiation() if self.initiator.read_cookie(data) \
                        else None
                if kind != session.KIND_RESPONSE:
                    return None
                payload, sess = self.initiator.read_response(data)
            except SessionError:          # not for this handshake (an older one's answer)
                return None
            self.reply = control.decode(payload)
            if isinstance(self.reply, Refused):
                return None
            self.session = sess
            return self.next()
        try:
            inner = self.session.open(data)
        except SessionError:
            return None
        self.admitted = True
        return answer_control(self.session, inner)


def answer_control(sess, inner):
    """The sealed Ack that answers an Event (the server repeats events until
    acknowledged), or None for anything else."""
    if not control.is_control(inner):
        return None
    try:
        msg = control.decode(inner)
    except control.ControlError:
        return None
    return sess.seal(Ack(msg.seq).encode()) if isinstance(msg, Event) else None


def join_blocking(sock, server_key, join, timeout=10.0):
    """Join on the blocking socket ``sock`` (connected to the server); returns
    the admitted session.  RuntimeError on a refusal or after ``timeout`` s."""
    joining = Joining(server_key, join)
    deadline = time.monotonic() + timeout
    resend = 0.0
    while not joining.admitted:
        if isinstance(joining.reply, Refused):
            raise RuntimeError(f"uid {join.uid} refused: {joining.reply.code} "
                               f"{joining.reply.reason}")
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"uid {join.uid} not admitted within {timeout:g} s")
        if now >= resend:
            sock.send(joining.next())
            resend = now + JOIN_RETRY_S
        sock.settimeout(max(0.001, resend - now))
        try:
            data = sock.recv(2048)
        except socket.timeout:
            continue
        answer = joining.take(data)
        if answer is not None:
            sock.send(answer)
    return joining.session


class Receiving:
    """What a group of members receives: every datagram is opened with the
    member's session; RTP packets are counted (per member, with their inner
    bytes and delay), events are acknowledged, and datagrams that do not
    open are counted in ``unopened`` (it must stay 0)."""

    def __init__(self, socks, sessions):
        self.socks = socks
        self.sessions = sessions
        self.counts = [0] * len(socks)
        self.inner_bytes = 0
        self.unopened = 0
        self.delays = DelayHistogram()

    def take(self, i, data):
        """Take datagram ``data`` that member ``i`` received; True if it was RTP."""
        sess = self.sessions[i]
        try:
            inner = sess.open(data)
        except SessionError:
            self.unopened += 1
            return False
        if len(inner) >= 12 and inner[0] >> 6 == 2:
            self.counts[i] += 1
            self.inner_bytes += len(inner)
            self.delays.add(inner)
            return True
        answer = answer_control(sess, inner)
        if answer is not None:
            try:
                self.socks[i].send(answer)
            except (BlockingIOError, ConnectionRefusedError):
                pass
        return False


# ------------------------------------------------------------------ listener process

def listener_main(conn, address, server_key, secret, channel, count, first_uid, cpu):
    """Child process: ``count`` audience sockets that join, ping and count RTP packets."""
    socks = []
    try:
        pin(cpu)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < count + 100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
        sel = selectors.EpollSelector()
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            s.bind(("127.0.0.1", 0))
            s.connect(address)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        rcvbuf = socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) if socks else 0
        ports = {s.getsockname()[1] for s in socks}
        sessions = join_listeners(socks, sel, server_key, secret, channel, first_uid)
        conn.send(("joined", count, rcvbuf))
        sel.register(conn, selectors.EVENT_READ, None)
        got = Receiving(socks, sessions)
        pings = 0
        t0 = time.monotonic()
        while True:
            for key, _ in sel.select(0.01):
                i = key.data
                if i is None:
                    cmd = conn.recv()
                    if cmd == "counts":
                        conn.send(("counts", got.counts, cpu_seconds()))
                        continue
                    queued = drain(socks, got)
                    conn.send(("final", got.counts, cpu_seconds(), udp_socket_drops(ports), queued,
                               got.delays.bins, got.inner_bytes, got.unopened))
                    return
                try:
                    data = key.fileobj.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                got.take(i, data)
            # Keep-alive: each listener pings once a second, spread evenly.
            due = int((time.monotonic() - t0) * count / PING_INTERVAL_S)
            if due > pings:
                ping = Ping(time.time()).encode()
                for _ in range(min(due - pings, count)):
                    j = pings % count
                    try:
                        socks[j].send(sessions[j].seal(ping))
                    except (BlockingIOError, ConnectionRefusedError):
                        pass
                    pings += 1
                pings = max(pings, due - count)
    except Exception as exc:       # report, never hang the parent
        conn.send(("error", repr(exc)))
    finally:
        for s in socks:
            s.close()


def drain(socks, got):
    """Read what is still queued on every socket into ``got`` (a ``Receiving``);
    returns how many RTP packets were still queued."""
    queued = 0
    for i, s in enumerate(socks):
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                break
            queued += got.take(i, data)
    return queued


class DelayHistogram:
    """Arrival time minus media time (RTP timestamp / 48 kHz) of every packet
    received, in 1 ms bins.  The hosts' timestamps follow their send schedule,
    so the spread above the earliest packet is the delay the path added
    (server queueing, and the simulation's own lateness)."""

    def __init__(self):
        self.bins = [0] * DELAY_BINS
        self.base = None

    def add(self, data):
        late = time.monotonic() - int.from_bytes(data[4:8], "big") / RATE
        if self.base is None:
            self.base = late - DELAY_SLACK_S
        b = int((late - self.base) * 1000)
        self.bins[0 if b < 0 else (b if b < DELAY_BINS else DELAY_BINS - 1)] += 1


def delay_summary(bins):
    """``(p50, p99, max)`` in ms above the earliest bin of a delay histogram."""
    total = sum(bins)
    if not total:
        return None
    first = next(i for i, c in enumerate(bins) if c)
    last = max(i for i, c in enumerate(bins) if c)
    out, seen = [], 0
    wanted = [0.5 * total, 0.99 * total]
    for i, c in enumerate(bins):
        seen += c
        while wanted and seen >= wanted[0]:
            out.append(i - first)
            wanted.pop(0)
    return out[0], out[1], last - first


def join_listeners(socks, sel, server_key, secret, channel, first_uid):
    """Join every socket as audience (uid first_uid + i) through the handshake
    (``Joining``), at most JOIN_WINDOW in flight, sending a step again after
    JOIN_RETRY_S; returns the sessions.  RuntimeError on a refusal or when
    some are still waiting after a bounded time."""
    count = len(socks)
    joinings = [None] * count
    waiting = {}                   # index -> time its last step was sent
    todo = list(range(count - 1, -1, -1))
    done = 0
    deadline = time.monotonic() + 20.0 + count / 50
    while done < count:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"only {done} of {count} listeners joined in time")
        for i, sent in list(waiting.items()):
            if now - sent > JOIN_RETRY_S:
                socks[i].send(joinings[i].next())
                waiting[i] = now
        while todo and len(waiting) < JOIN_WINDOW:
            i = todo.pop()
            uid = first_uid + i
            join = Join(i + 1, channel, uid, "audience",
                        make_token(secret, channel, uid, "audience"), 0)
            joinings[i] = Joining(server_key, join)
            socks[i].send(joinings[i].next())
            waiting[i] = now
        for key, _ in sel.select(0.05):
            i = key.data
            try:
                data = key.fileobj.recv(2048)
            except BlockingIOError:
                continue
            if i not in waiting:
                continue
            joining = joinings[i]
            answer = joining.take(data)
            if answer is not None:
                socks[i].send(answer)
                waiting[i] = time.monotonic()
            if isinstance(joining.reply, Refused):
                raise RuntimeError(f"listener {first_uid + i} refused: {joining.reply.code} "
                                   f"{joining.reply.reason}")
            if joining.admitted:
                del waiting[i]
                done += 1
    return [j.session for j in joinings]


class Listeners:
    """N audience members simulated in a spawned process pinned to MEMBERS_CPU."""

    def __init__(self, ctx, address, server_key, channel, count, first_uid=LISTENER_UID):
        self.count = count
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=listener_main,
                                args=(child, address, server_key, SECRET, channel, count,
                                      first_uid, MEMBERS_CPU), daemon=True)
        self.proc.start()
        child.close()
        self.rcvbuf = None

    def wait_joined(self, hosts):
        """Wait until every listener has joined, keeping the hosts alive meanwhile."""
        deadline = time.monotonic() + 60.0 + self.count / 25
        while not self.conn.poll(0.5):
            hosts.ping()
            if time.monotonic() > deadline or not self.proc.is_alive():
                raise RuntimeError("the listeners did not join in time")
        reply = wait_reply(self.conn, 1.0, "listener process")
        self.rcvbuf = reply[2]

    def counts(self):
        """``(per-listener RTP counts, cpu seconds)`` so far."""
        self.conn.send("counts")
        _, counts, cpu = wait_reply(self.conn, 10.0, "listener process")
        return counts, sum(cpu)

    def stop(self):
        """Stop; returns ``(counts, cpu seconds, drops on the listeners' sockets,
        RTP packets still queued on them at the end, delay histogram, inner
        bytes of the RTP packets, datagrams that did not open)``, or None when
        the process did not answer.  The counts include the queued packets."""
        result = None
        try:
            self.conn.send("final")
            reply = wait_reply(self.conn, 20.0, "listener process")
            _, counts, cpu, drops, queued, delays, inner_bytes, unopened = reply
            result = counts, sum(cpu), drops, queued, delays, inner_bytes, unopened
        except (OSError, EOFError, RuntimeError):
            pass
        end_process(self.proc)
        return result


# ------------------------------------------------------------------ hosts

class Hosts:
    """Synthetic hosts in this process: each joins as host with a valid token
    through the handshake and sends the pre-encoded Opus frames as sealed
    RTP, 50 packets a second; what they receive from each other is opened
    and counted."""

    def __init__(self, address, server_key, channel, count, frames, channels=None):
        channels = channels or [channel] * count
        self.frames = frames
        self.sel = selectors.EpollSelector()
        self.socks = []
        self.sessions = []
        self.sent = [0] * count
        self.ssrcs = [0x5E000000 + h for h in range(count)]
        self.lateness = 0.0
        for h in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.connect(address)
            self.socks.append(s)
            uid = HOST_UID + h
            join = Join(h + 1, channels[h], uid, "host",
                        make_token(SECRET, channels[h], uid, "host"), self.ssrcs[h])
            self.sessions.append(join_blocking(s, server_key, join))
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, h)
        self.got = Receiving(self.socks, self.sessions)

    @property
    def received(self):
        return self.got.counts

    def ping(self):
        ping = Ping(time.time()).encode()
        for s, sess in zip(self.socks, self.sessions):
            s.send(sess.seal(ping))
        self._drain(0.0)

    def _drain(self, timeout):
        for key, _ in self.sel.select(timeout):
            try:
                data = key.fileobj.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            self.got.take(key.data, data)

    def send(self, seconds):
        """Send ``seconds`` of packets from every host, host h offset by h/count
        of a frame; returns the wall time from the first packet to the last."""
        n = round(seconds / FRAME_S)
        count = len(self.socks)
        start = time.monotonic() + 0.05
        for k in range(n):
            for h, sock in enumerate(self.socks):
                due = start + (k + h / count) * FRAME_S
                while (left := due - time.monotonic()) > 0:
                    self._drain(left)
                self.lateness = max(self.lateness, time.monotonic() - due)
                frame = self.frames[(k + 97 * h) % len(self.frames)]
                packet = RtpPacket(payload_type=PT_OPUS, sequence_number=(1000 * h + k) % 65536,
                                   timestamp=self._timestamp(h, k), ssrc=self.ssrcs[h],
                                   marker=k == 0, payload=frame)
                sock.send(self.sessions[h].seal(packet.serialize()))
                self.sent[h] += 1
        end = time.monotonic()
        self._drain(0.0)
        return end - start

    def _timestamp(self, h, k):
        """RTP timestamp of host h's packet k: its send schedule in 48 kHz samples."""
        return round((k + h / len(self.socks)) * FRAME_SAMPLES) % 2**32

    def drain_for(self, seconds):
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._drain(min(left, 0.05))

    def close(self):
        for s in self.socks:
            s.close()
        self.sel.close()


# ------------------------------------------------------------------ one point

def run_point(ctx, frames, n_hosts, n_listeners, seconds, channel, profile=False, push=()):
    """One fresh server, ``n_hosts`` hosts and ``n_listeners`` listeners; returns
    a dict of what was sent, received, dropped and spent.  ``push``: RTMP URLs
    to which a second channel of PUSH_HOSTS hosts (talking all the time, the
    listeners do not hear them) is pushed meanwhile."""
    server = ServerProcess(ctx, profile)
    hosts = listeners = None
    push_states = push_cpu = None
    try:
        extra = PUSH_HOSTS if push else 0
        hosts = Hosts(server.address, server.public_key, channel, n_hosts + extra, frames,
                      [channel] * n_hosts + [PUSH_CHANNEL] * extra)
        if push:
            push_states = server.publish(PUSH_CHANNEL, push, PUSH_TRANSCODING)
        listeners = Listeners(ctx, server.address, server.public_key, channel, n_listeners)
        listeners.wait_joined(hosts)
        rcvbuf = listeners.rcvbuf
        # Keep-alive only: the listeners ping, the hosts send a ping a second.
        idle = server.snapshot()
        deadline = time.monotonic() + KEEPALIVE_S
        while time.monotonic() < deadline:
            hosts.ping()
            hosts.drain_for(min(PING_INTERVAL_S, max(0.0, deadline - time.monotonic())))
        start = server.snapshot()
        snmp0 = udp_snmp()
        counts0, lcpu0 = listeners.counts()
        lwall0 = time.monotonic()
        drops0 = udp_socket_drops({server.address[1]})
        if profile:
            server.profile(True)
        push_cpu0 = server.push_states()[1] if push else 0.0
        send_wall = hosts.send(seconds)
        sent_end = server.snapshot()
        if push:
            push_states, push_cpu = server.push_states()
            push_cpu -= push_cpu0
        expected = sum(hosts.sent[:n_hosts]) * n_listeners
        wait_for_stragglers(server, listeners, hosts, sum(counts0) + expected)
        if profile:
            server.profile(False)
        end = server.snapshot()
        drops1 = udp_socket_drops({server.address[1]})
        snmp1 = udp_snmp()
        lcpu1 = listeners.counts()[1]
        lwall1 = time.monotonic()
        final, listeners = listeners.stop(), None
        if final is None:
            raise RuntimeError("the listener process did not report its final counts")
        counts, _, listener_drops, queued, delays, inner_bytes, unopened = final
        # What sealing one forwarded packet costs, timed in the server's process.
        inner_size = round(inner_bytes / max(1, sum(counts)))
        seal_us = server.costs(["seal"], inner_size)["seal"]
    finally:
        if listeners is not None:
            listeners.stop()
        if hosts is not None:
            hosts.close()
        profile_rows = server.stop()[1]
    keepalive_load = (start.cpu - idle.cpu) / (start.when - idle.when)
    cpu = end.cpu - start.cpu                          # host start .. all arrived
    wall = end.when - start.when
    counters = {k: v - start.counters.get(k, 0) for k, v in end.counters.items()
                if v != start.counters.get(k, 0)}
    forwarded = counters.get("forwarded", 0)
    per_packet = (lambda x: x / forwarded * 1e6) if forwarded else (lambda x: float("nan"))
    send = sent_end.when - start.when
    waited = None if start.waited is None or sent_end.waited is None \
        else (sent_end.waited - start.waited) / send
    return dict(
        push_states=push_states, push_worker_load=None if push_cpu is None else push_cpu / send,
        listeners=n_listeners, hosts=n_hosts, sent=sum(hosts.sent[:n_hosts]),
        host_sent=list(hosts.sent),
        host_received=list(hosts.received), expected=expected,
        received=[c - c0 for c, c0 in zip(counts, counts0)], forwarded=forwarded,
        load=(sent_end.cpu - start.cpu) / send, waited=waited, cpu=cpu,
        keepalive_load=keepalive_load, us_per_packet=per_packet(cpu),
        user_us=per_packet(end.user - start.user), system_us=per_packet(end.system - start.system),
        net_us_per_packet=per_packet(cpu - keepalive_load * wall),
        server_socket_drops=None if drops0 is None or drops1 is None else drops1 - drops0,
        listener_socket_drops=listener_drops, queued_at_end=queued,
        delay=delay_summary(delays),
        snmp={k: snmp1.get(k, 0) - snmp0.get(k, 0) for k in ("RcvbufErrors", "SndbufErrors")},
        listener_load=(lcpu1 - lcpu0) / (lwall1 - lwall0), send_wall=send_wall,
        lateness_ms=hosts.lateness * 1e3, rcvbuf=rcvbuf, counters=counters,
        unopened=unopened + hosts.got.unopened, inner_size=inner_size, seal_us=seal_us,
        profile=profile_rows)


def wait_for_stragglers(server, listeners, hosts, total):
    """Wait until the listeners' counts reach ``total``, or neither they nor the
    server's forwarded counter have moved for 0.5 s, or DRAIN_S has passed."""
    last, still_since = None, time.monotonic()
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        got = sum(listeners.counts()[0])
        if got >= total:
            break
        state = (got, server.snapshot().counters.get("forwarded", 0))
        if state != last:
            last, still_since = state, time.monotonic()
        elif time.monotonic() - still_since > 0.5:
            break
        hosts.drain_for(0.1)
    hosts.drain_for(0.1)


# ------------------------------------------------------------------ output

def verdict(ok):
    return "PASS" if ok else "FAIL"


def fmt(value, spec="d"):
    return "n/a" if value is None else format(value, spec)


def delay_text(delay):
    return "n/a" if delay is None else "/".join(str(d) for d in delay)


def print_fan_out(rows):
    print(f"{'listeners':>9}  {'expected':>9}  {'forwarded':>9}  {'received':>9}  "
          f"{'dropped':>8}  {'server':>6}  {'listener':>8}  {'queued':>6}  {'Rcvbuf':>6}  "
          f"{'Sndbuf':>6}  {'delay ms':>12}  {'not':>6}")
    print(f"{'':>9}  {'packets':>9}  {'(server)':>9}  {'':>9}  {'%':>8}  {'socket':>6}  "
          f"{'sockets':>8}  {'at end':>6}  {'Errors':>6}  {'Errors':>6}  {'p50/p99/max':>12}  "
          f"{'opened':>6}")
    for r in rows:
        got = sum(r["received"])
        print(f"{r['listeners']:>9}  {r['expected']:>9}  {r['forwarded']:>9}  {got:>9}  "
              f"{100 * (r['expected'] - got) / r['expected']:>8.3f}  "
              f"{fmt(r['server_socket_drops']):>6}  {fmt(r['listener_socket_drops']):>8}  "
              f"{r['queued_at_end']:>6}  {r['snmp']['RcvbufErrors']:>6}  "
              f"{r['snmp']['SndbufErrors']:>6}  {delay_text(r['delay']):>12}  "
              f"{r['unopened']:>6}")
    print()
    print(f"{'listeners':>9}  {'server':>7}  {'load':>5}  {'waited':>6}  {'us per fwd packet':>19}  "
          f"{'AEAD seal':>13}  {'keep-alive':>10}  {'net us':>7}  {'one core':>8}  "
          f"{'listener':>8}  {'host late':>9}")
    print(f"{'':>9}  {'CPU s':>7}  {'':>5}  {'%':>6}  {'all':>6} {'user':>6} {'sys':>5}  "
          f"{'us':>5} {'share':>7}  {'load':>10}  {'per pkt':>7}  {'serves N':>8}  "
          f"{'load':>8}  {'max ms':>9}")
    for r in rows:
        print(f"{r['listeners']:>9}  {r['cpu']:>7.2f}  {r['load']:>5.2f}  "
              f"{fmt(None if r['waited'] is None else 100 * r['waited'], '.1f'):>6}  "
              f"{r['us_per_packet']:>6.2f} {r['user_us']:>6.2f} {r['system_us']:>5.2f}  "
              f"{r['seal_us']:>5.2f} {100 * r['seal_us'] / r['us_per_packet']:>6.1f}%  "
              f"{r['keepalive_load']:>10.3f}  {r['net_us_per_packet']:>7.2f}  "
              f"{one_core_listeners(r):>8.0f}  {r['listener_load']:>8.2f}  "
              f"{r['lateness_ms']:>9.1f}")
    r = rows[-1]
    print(f"   AEAD seal: Session.seal of one forwarded packet ({r['inner_size']} B of RTP, "
          f"+{session.TRANSPORT_OVERHEAD} B sealed), timeit median of {COST_REPEATS} runs in "
          "the server's process (thread CPU time); share = of the server's CPU per forwarded "
          "packet ('all')")


def one_core_listeners(r):
    """Listeners of one host that one core could serve at this point's net cost."""
    return 1e6 / (r["net_us_per_packet"] / FRAME_S) if r["net_us_per_packet"] > 0 \
        else float("nan")


def print_contention(rows, nice):
    """A warning when the server waited for its CPU (another program ran there)."""
    worst = max((r["waited"] for r in rows if r["waited"] is not None), default=None)
    if worst is not None and worst > 0.05:
        advice = "an idle machine" if nice < 0 else \
            "an idle machine, or --nice -10 (root) to put the benchmark's processes first"
        print(f"   note: the server was runnable but waiting for CPU {SERVER_CPU} up to "
              f"{100 * worst:.0f} % of a send window (another program ran there); drops at "
              f"such points measure that contention as much as the server.  Use {advice}.")


def print_keeping_up(rows):
    """Whether the listener process (which opens every datagram) kept up:
    its sockets dropped nothing and it had CPU to spare."""
    for r in rows:
        drops = r["listener_socket_drops"]
        ok = drops == 0 and r["listener_load"] < 0.9
        print(f"   listener side at {r['listeners']}: opens every datagram, load "
              f"{r['listener_load']:.2f} of CPU {MEMBERS_CPU}, socket drops {fmt(drops)}, "
              f"queued at end {r['queued_at_end']}: "
              + ("kept up" if ok else "did NOT keep up (its drops count as dropped)"))


def print_counters(rows):
    """Server counters that moved during the send window, other than forwarding."""
    for r in rows:
        extra = {k: v for k, v in r["counters"].items() if k not in ("forwarded",)}
        if extra:
            print(f"   server counters at {r['listeners']} listeners: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(extra.items())))


def print_profile(r, plain=None, top=16):
    """The functions with the most own time in a profiled point, per forwarded
    packet and as a share of the time not spent waiting in epoll.  ``plain``:
    the unprofiled row of the same point, for its user/system split."""
    fwd = max(r["forwarded"], 1)
    total = sum(row[2] for row in r["profile"] if IDLE_FUNCTION not in row[0])
    print(f"   {fwd} packets forwarded; {total:.2f} s profiled outside the epoll wait, "
          f"{total / fwd * 1e6:.2f} us per forwarded packet (the profiler's own overhead, and "
          "time spent descheduled, inflate every figure; compare shares)")
    if plain is not None:
        print(f"   unprofiled, same point: {plain['us_per_packet']:.2f} us per forwarded packet = "
              f"user (Python) {plain['user_us']:.2f} + system (kernel: sendto, recvfrom, "
              f"epoll) {plain['system_us']:.2f}")
    print_profile_rows(r["profile"], fwd, "us/pkt", top)


def print_profile_rows(profile, count, unit, top=16):
    """The ``top`` functions with the most own time among ``profile`` rows
    ``(function, calls, own s, cumulative s)``, leaving out the epoll wait: own
    seconds, share, microseconds per one of ``count`` units (column ``unit``)."""
    rows = sorted((row for row in profile if IDLE_FUNCTION not in row[0]),
                  key=lambda row: -row[2])
    total = sum(row[2] for row in rows) or 1.0
    count = max(count, 1)
    print(f"   {'own s':>7}  {'share':>6}  {unit:>8}  {'cum s':>7}  {'calls':>8}  function")
    for name, calls, own, cum in rows[:top]:
        if name.startswith("{method ") and " of '" in name:      # keep the method's name
            head, _, owner = name.partition(" of '")
            name = f"{head} of '{owner.rsplit('.', 1)[-1]}"
        if len(name) > 70:
            name = "..." + name[-67:]
        print(f"   {own:>7.3f}  {100 * own / total:>5.1f}%  {own / count * 1e6:>8.3f}  "
              f"{cum:>7.3f}  {calls:>8}  {name}")


# ------------------------------------------------------------------ main

def cpu_name():
    """The CPU model, where /proc/cpuinfo says (bench_core has the same, but
    importing it needs pedalboard, which this benchmark does not)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fan_out_while_pushing(ctx, frames, args):
    """``--publish``: each fan-out point while the server also pushes a
    second channel of PUSH_HOSTS talking hosts to two URLs of a local
    nginx-rtmp (as ``bench_publish``, but through the server's network
    path: the hosts join and send sealed packets, and hear each other)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import tempfile

    from rtmp_server import RtmpServer, find_nginx
    if find_nginx() is None:
        sys.exit("nginx with the RTMP module is needed: apt-get install nginx libnginx-mod-rtmp")
    points = args.points if args.listeners else (TARGET_N,)
    nginx = RtmpServer(tempfile.mkdtemp(prefix="bench-engine-push-")).start()
    rows = []
    try:
        for i, n in enumerate(points):
            urls = [nginx.url(f"p{i}a"), nginx.url(f"p{i}b")]
            rows.append(run_point(ctx, frames, 1, n, args.seconds, f"fan-out-{n}", push=urls))
            print(f"   ... {n} listeners done", file=sys.stderr)
    finally:
        nginx.stop()
    print(f"Fan-out while pushing: one host to N listeners, and meanwhile a second channel of "
          f"{PUSH_HOSTS} talking hosts (hearing each other) mixed and pushed as AAC 128 kb/s "
          f"stereo to two RTMP URLs of a local nginx ({args.seconds:g} s of packets)")
    print_fan_out(rows)
    print_counters(rows)
    print_contention(rows, args.nice)
    results = []
    for r in rows:
        pct = 100 * (r["expected"] - sum(r["received"])) / r["expected"]
        states = ", ".join(sorted(set(r["push_states"].values()))) or "none"
        ok = pct < TARGET_DROP_PCT and states == "running"
        if r["listeners"] == TARGET_N:
            results.append(ok)
        print(f"   {r['listeners']} listeners: dropped {pct:.3f} % (target under "
              f"{TARGET_DROP_PCT} % at {TARGET_N}), server load {r['load']:.2f} (its process: "
              f"forwarding, the mix worker, hand-over), RTMP worker processes "
              f"{100 * r['push_worker_load']:.1f} % of a core, pushes {states}, "
              f"mix/publish drops {r['counters'].get('mix_dropped', 0)}/"
              f"{r['counters'].get('publish_dropped', 0)}   {verdict(ok)}")
    print(f"{results.count(True)} of {len(results)} targets met")
    return 0


def arguments(argv):
    """The command line: bench_core's common options (``--repeats``,
    ``--seconds``, ``--quick``) and this benchmark's own."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=1,
                   help="accepted, not used (one long run a point)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of packets a point")
    p.add_argument("--quick", action="store_true", help="100 and 1000 listeners, 4 s a point")
    p.add_argument("--listeners", type=str, default=None, help="fan-out points, N,N,...")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the server at 1000 listeners")
    p.add_argument("--nice", type=int, default=0, help="niceness of the benchmark's processes")
    p.add_argument("--publish", action="store_true",
                   help=f"fan-out to --listeners (default {TARGET_N}) while the server pushes a "
                        f"{PUSH_HOSTS}-host channel to two RTMP URLs of a local nginx")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 4.0)
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    try:
        args.points = tuple(int(v) for v in args.listeners.split(",")) if args.listeners \
            else (FAN_OUT_QUICK if args.quick else FAN_OUT)
    except ValueError:
        p.error(f"--listeners must be a comma-separated list of counts, got {args.listeners!r}")
    if any(not 1 <= n <= 10000 for n in args.points):
        p.error(f"--listeners counts must be in 1..10000, got {args.listeners!r}")
    if not -20 <= args.nice <= 19:
        p.error(f"--nice must be in -20..19, got {args.nice}")
    return args


def main(argv=None):
    args = arguments(argv)
    ctx = multiprocessing.get_context("spawn")
    placement = pin(MEMBERS_CPU)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)    # the spawned processes inherit it
    frames = opus_frames()
    mean_bytes = sum(map(len, frames)) / len(frames)
    print("stagevox live channel server benchmark")
    print(f"  CPU: {cpu_name()}, {os.cpu_count()} cores; server process on CPU {SERVER_CPU}, "
          f"listeners and hosts on {placement}; Python {platform.python_version()}")
    print(f"  media: bundled speech as {len(frames)} Opus frames of 20 ms (32 kbit/s, "
          f"{mean_bytes:.0f} B mean payload), 50 packets/s a host, {args.seconds:g} s a point; "
          f"loopback 127.0.0.1 only")
    print()

    if args.publish:
        return fan_out_while_pushing(ctx, frames, args)
    rows = []
    for n in args.points:
        rows.append(run_point(ctx, frames, 1, n, args.seconds, f"fan-out-{n}"))
        print(f"   ... {n} listeners done", file=sys.stderr)
    print(f"1. Fan-out: one host, N listeners ({args.seconds:g} s of packets each; "
          "dropped = expected - received)")
    print_fan_out(rows)
    print_counters(rows)
    print_contention(rows, args.nice)
    print(f"   listener sockets: SO_RCVBUF {rows[0]['rcvbuf']} B (asked {RCVBUF}); a Ping a "
          "second each, spread evenly")
    at_target = [r for r in rows if r["listeners"] == TARGET_N]
    results = []
    if at_target:
        r = at_target[0]
        pct = 100 * (r["expected"] - sum(r["received"])) / r["expected"]
        ok = pct < TARGET_DROP_PCT
        results.append(ok)
        print(f"   target: at {TARGET_N} listeners under {TARGET_DROP_PCT} % dropped, server on "
              f"one core: {pct:.3f} %, load {r['load']:.2f}   {verdict(ok)}")
    print_keeping_up(rows)
    print("   (server socket / listener sockets: drops the kernel counted on those sockets, "
          "/proc/net/udp;\n    delay: arrival minus the host's send schedule, above the "
          "earliest packet, ms;\n    queued at end: packets the listeners had not read yet when the "
          "point ended (counted as received);\n    Rcvbuf/SndbufErrors: change of the "
          "system-wide /proc/net/snmp UDP counters, other programs' traffic included)")
    print()

    stage = run_point(ctx, frames, STAGE_HOSTS, STAGE_LISTENERS, args.seconds, "full-stage")
    got = stage["received"]
    expected_each = stage["sent"]
    worst = min(got)
    dropped = stage["expected"] - sum(got)
    host_expected = [stage["sent"] - s for s in stage["host_sent"]]
    host_worst = min(r - e for r, e in zip(stage["host_received"], host_expected))
    print(f"2. Full stage: {STAGE_HOSTS} hosts talking at once, {STAGE_LISTENERS} listeners "
          f"({args.seconds:g} s)")
    print(f"   packets sent by the hosts {stage['sent']}; each listener expects {expected_each}")
    print(f"   listeners: received {sum(got)} of {stage['expected']}, dropped {dropped}; "
          f"worst listener {worst} of {expected_each} "
          f"({expected_each - worst} lost); best {max(got)}")
    print(f"   hosts (each hears the other {STAGE_HOSTS - 1}): worst host short by {-host_worst}")
    print(f"   delay above the earliest packet, p50/p99/max: {delay_text(stage['delay'])} ms")
    print(f"   where: server socket drops {fmt(stage['server_socket_drops'])}, listener socket "
          f"drops {fmt(stage['listener_socket_drops'])} (queued at end "
          f"{stage['queued_at_end']}), RcvbufErrors "
          f"{stage['snmp']['RcvbufErrors']}, SndbufErrors {stage['snmp']['SndbufErrors']}")
    print(f"   server: load {stage['load']:.2f}, waited "
          f"{fmt(None if stage['waited'] is None else 100 * stage['waited'], '.1f')} %, "
          f"{stage['us_per_packet']:.2f} us per forwarded packet ({stage['forwarded']} "
          f"forwarded), host lateness max {stage['lateness_ms']:.1f} ms")
    print(f"   AEAD seal of one forwarded packet ({stage['inner_size']} B): "
          f"{stage['seal_us']:.2f} us = "
          f"{100 * stage['seal_us'] / stage['us_per_packet']:.1f} % of the server's CPU per "
          "forwarded packet")
    print_counters([stage])
    print_contention([stage], args.nice)
    ok = worst == expected_each and host_worst >= 0
    results.append(ok)
    print(f"   target: no listener loses a packet   {verdict(ok)}")
    print()
    unopened = sum(r["unopened"] for r in rows + [stage])
    ok = unopened == 0
    results.append(ok)
    print(f"every datagram the members received opened (AEAD tag and replay window): "
          f"{unopened} did not   {verdict(ok)}")
    print()

    if args.profile:
        below = [n for n in args.points if n <= TARGET_N]
        n = TARGET_N if not below else max(below)
        prof = run_point(ctx, frames, 1, n, args.seconds, f"profile-{n}", profile=True)
        print(f"3. Where the server's time goes: cProfile in the server thread, one host, "
              f"{n} listeners")
        print_profile(prof, next((r for r in rows if r["listeners"] == n), None))

    print(f"{results.count(True)} of {len(results)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
