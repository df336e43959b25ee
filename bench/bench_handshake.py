"""Benchmark of the stagevox server's handshake: joins per second, and an unauthenticated flood.

Runs ``engine.Server`` in its own process pinned to CPU 0 (as
bench_engine.py does, with the same fixed key) and drives it from this
process, pinned to CPU 1, over 127.0.0.1:

1. Joins per second per core.  Complete raw handshakes, as many at once as
   ``--in-flight`` (64), each slot on a socket of its own: the initiation
   (1200 bytes), the 24-byte cookie reply, the initiation again with the
   cookie, the response (``Joined``), a sealed Ping and the sealed Pong that
   shows the server admitted the member; then the slot sends a sealed Leave
   (so the server's member table stays small, as in a steady state where
   people come and go; ``--stay`` keeps them instead) and starts the next
   join at once.  Every join has its own uid and token, 1000 uids a
   channel.  The Initiators (the client's X25519 key and encrypted token) are
   made before the timed window, so the driver's side is only what answers
   the server.  Printed: joins per second of wall time, the server's CPU
   seconds per join (user + system of its process, ``os.times`` in it) and
   joins per CPU-second of the server, which is what one core sustains when
   the server is the bottleneck.  Target: at least 2,000 joins per second
   per core.  ``--repeats`` runs, each on a fresh server; medians printed.
   After each run the server's process also times its own code per join
   without sockets: a Server that is not started is handed the datagrams of
   STEP_JOINS joins one by one (``datagram_received``, its endpoint only
   collecting what it sends), timed per step (medians).
   Then the floor (``handshake_floor.py``): what the same CPU spends per join
   on the cryptography of a join alone, on its 7 system calls alone, and on
   both in one loop with nothing else, printed beside the server's cost.
   ``--strace`` adds a join run with ``strace -c`` on the server's process:
   its system calls per join.
2. Unauthenticated flood.  Datagrams no client could have made honestly,
   each kind sent from one socket as fast as this process can for
   ``--seconds`` (2 s): random bytes (random length 1..1200), initiations
   with a wrong mac1, genuine initiations without a cookie, genuine
   initiations with a wrong cookie (random mac2), sealed-looking datagrams
   with an unknown receiver index, and with the index of a real member but a
   wrong tag.  For each kind: the datagrams the server handled (from its
   drop counters; the rest overflowed its socket), the server's CPU per
   datagram, that cost above a random datagram's (the receive path every
   datagram pays) against the one check that kind should cost (timed alone
   in the server's process: one HMAC for mac1, mac1 and a cookie reply, mac1
   with the mac2 check against the address's cookies and a cookie reply, one
   AEAD check), the sessions the server holds before and after (no kind may
   create one), and the bytes the server sent back per byte it took in: from
   its counters (only cookie replies, 24 bytes for 1200) and as this process
   received them.  Then each kind again for 0.5 s with cProfile on in the
   server's thread, to count what the server did per datagram it handled:
   HMAC-SHA256 computations, AEAD opens and seals, X25519 operations and
   sends.  Target (judged on those counts, which do not depend on the
   machine's noise): a flood datagram costs at most one cookie check (no
   X25519, no AEAD, at most COOKIE_CHECK_HMACS HMACs: mac1, mac2 against the
   current and the previous secret's cookie, the reply's cookie) or one
   AEAD check (no HMAC), at most one datagram back, no session, and never
   more bytes back than it brought.  The real member pings before every
   kind and after the flood, and must get its Pong.  The time figures are
   printed beside: a check inside the running server costs more than the
   same check timed alone in a loop (cold caches between datagrams, the
   event loop in between), so "ratio" is information, not the verdict.

"Waited" is the share of a window in which the server was runnable but
another program held CPU 0 (/proc schedstat); when it is large, joins per
second of wall time measure the machine, and joins per CPU-second are the
better figure.

Usage::

    python bench/bench_handshake.py            # 10000 joins x 3, 2 s a flood kind
    python bench/bench_handshake.py --quick    # 4000 joins x 2, 1 s a flood kind
    python bench/bench_handshake.py --joins 20000 --in-flight 128 --stay --profile

``--profile`` adds a join run with cProfile in the server's thread and
prints where its time goes per join, and per datagram of three flood kinds
(from the counting pass).
"""

import argparse
import multiprocessing
import os
import platform
import random
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from stagevox.engine import control, make_token, session
from stagevox.engine.control import Join, Leave, Ping, Pong, Refused
from stagevox.engine.session import SessionError

from bench_engine import (COST_REPEATS, JOIN_STEPS, MEMBERS_CPU, SECRET, SERVER_CPU, Joining,
                          ServerProcess, bad_mac1_initiation, cpu_name, cpu_seconds, fmt,
                          join_blocking, pin, print_profile_rows, sealed_like, udp_socket_drops,
                          verdict)
from handshake_floor import FLOOR_JOINS, FLOOR_ROUNDS, measure_floor

JOINS = 10000
JOINS_QUICK = 4000
IN_FLIGHT = 64
CHANNEL_SIZE = 1000                    # uids a channel
JOIN_UID = 100000
STEP_RETRY_S = 0.25                    # a handshake step not answered is sent again
STEP_JOINS = 1000                      # joins timed step by step without sockets
TARGET_JOINS_PER_CORE = 2000
FLOOD_S = 2.0
FLOOD_S_QUICK = 1.0
POOL = 2048                            # distinct datagrams of a flood kind, sent in turn
SEALED_SIZE = 118                      # a sealed forwarded packet: 89 B of RTP + 29
FLOOD_RCVBUF = 4 << 20
SETTLE_S = 0.3                         # the server's counters still this long: it has caught up
FLOOD_PROFILE_S = 0.5                  # each kind again with cProfile on, to count operations
#: Most HMAC-SHA256 one cookie check does: mac1, mac2 against the cookies of
#: the current and the previous secret (the cookie, then mac2: two each) and
#: the cookie of the reply (session.Responder.receive_initiation).
COOKIE_CHECK_HMACS = 6
#: Operations counted in the profiled pass: label, substrings of the
#: profiler's function names (an HMAC under a key set up beforehand, as mac1's
#: and the cookies' are, starts as a copy of the keyed object).
OPERATIONS = (("HMAC", ("_hashlib.hmac_new", "_hashlib.hmac_digest",
                        "{method 'copy' of '_hashlib.HMAC' objects}")),
              ("AEAD open", ("{method 'decrypt' of",)),
              ("AEAD seal", ("{method 'encrypt' of",)),
              ("X25519", ("{method 'exchange' of", "x25519.generate_key")),
              ("sendto", ("{method 'sendto' of",)))
#: The server's counters that say it handled (and dropped or answered) a
#: datagram, one count each (``dropped_handshake_rate`` comes with a
#: ``dropped_bad_handshake`` for the same datagram, so it is not here).
HANDLED = ("dropped_unauthenticated", "dropped_bad_handshake", "cookie_replies",
           "dropped_unknown_session", "dropped_unauthentic", "dropped_replayed",
           "dropped_oversize", "handshakes", "handshake_resent", "internal_errors")
#: Flood kinds: (name, description, the check it should cost, timed alone).
FLOOD_KINDS = (
    ("random", "random bytes, 1..1200 B", None),
    ("bad_mac1", "initiation, wrong mac1", "bad_mac1"),
    ("no_cookie", "initiation, no cookie", "no_cookie"),
    ("wrong_cookie", "initiation, wrong cookie", "wrong_cookie"),
    ("unknown_index", "sealed, unknown index", None),
    ("bad_tag", "sealed, known index, bad tag", "bad_tag"),
)
CHECK_NAMES = {"bad_mac1": "mac1 (one HMAC)", "no_cookie": "mac1 + cookie reply",
               "wrong_cookie": "mac1 + mac2 check + cookie reply",
               "bad_tag": "one AEAD check"}


# ------------------------------------------------------------------ joins

def prepare_joins(server_key, count):
    """``count`` Joinings, uid JOIN_UID + k, 1000 a channel (their Initiators
    are made here, outside the timed window)."""
    joinings = []
    for k in range(count):
        uid = JOIN_UID + k
        channel = f"joins-{k // CHANNEL_SIZE}"
        join = Join(k + 1, channel, uid, "audience",
                    make_token(SECRET, channel, uid, "audience"), 0)
        joinings.append(Joining(server_key, join))
    return joinings


def run_joins(ctx, count, in_flight, stay, profile=False, trace=False):
    """One fresh server, ``count`` complete joins with ``in_flight`` at once;
    returns a dict of what they cost (with ``trace``, also ``syscalls``: the
    server process's system calls per join, counted by ``strace -c``)."""
    server = ServerProcess(ctx, profile)
    tracer = start_strace(server.proc.pid) if trace else None
    socks = []
    sel = selectors.EpollSelector()
    try:
        made = time.monotonic()
        joinings = prepare_joins(server.public_key, count)
        made = time.monotonic() - made
        for slot in range(in_flight):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            s.connect(server.address)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, slot)
        leave = Leave().encode()
        current = [None] * in_flight
        sent_at = [0.0] * in_flight
        next_join = 0
        done = retries = 0

        def start(slot, now):
            nonlocal next_join
            current[slot] = None
            if next_join < count:
                current[slot] = joinings[next_join]
                next_join += 1
                socks[slot].send(current[slot].next())
                sent_at[slot] = now

        time.sleep(0.5)                  # the server settles after start-up
        before = server.snapshot()
        driver0 = sum(cpu_seconds())
        if profile:
            server.profile(True)
        t0 = time.monotonic()
        for slot in range(in_flight):
            start(slot, t0)
        deadline = t0 + 60.0 + count / 100
        last_retry_check = t0
        while done < count:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"only {done} of {count} joins finished in time")
            for key, _ in sel.select(0.05):
                slot = key.data
                sock = key.fileobj
                while True:
                    try:
                        data = sock.recv(2048)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    joining = current[slot]
                    if joining is None:
                        continue
                    answer = joining.take(data)
                    now = time.monotonic()
                    if answer is not None:
                        sock.send(answer)
                        sent_at[slot] = now
                    if isinstance(joining.reply, Refused):
                        raise RuntimeError(f"join refused: {joining.reply.code} "
                                           f"{joining.reply.reason}")
                    if joining.admitted:
                        done += 1
                        if not stay:
                            sock.send(joining.session.seal(leave))
                        start(slot, now)
            now = time.monotonic()
            if now - last_retry_check > 0.05:
                last_retry_check = now
                for slot, joining in enumerate(current):
                    if joining is not None and now - sent_at[slot] > STEP_RETRY_S:
                        socks[slot].send(joining.next())
                        sent_at[slot] = now
                        retries += 1
        wall = time.monotonic() - t0
        driver = sum(cpu_seconds()) - driver0
        if profile:
            server.profile(False)
        time.sleep(0.2)                  # the last Leaves arrive
        after = server.snapshot()
        syscalls = stop_strace(tracer, count) if trace else None
        rows = server.profile_rows() if profile else []
        steps = server.join_steps(STEP_JOINS)
    finally:
        for s in socks:
            s.close()
        sel.close()
        server.stop()
    cpu = after.cpu - before.cpu          # the joins, and the last Leaves after them
    counters = {k: v - before.counters.get(k, 0) for k, v in after.counters.items()
                if v != before.counters.get(k, 0)}
    waited = None if before.waited is None or after.waited is None \
        else (after.waited - before.waited) / wall
    return dict(joins=count, wall=wall, per_s=count / wall, cpu=cpu, cpu_per_join=cpu / count,
                user_per_join=(after.user - before.user) / count,
                system_per_join=(after.system - before.system) / count,
                per_cpu_s=count / cpu if cpu > 0 else float("nan"), load=cpu / wall,
                waited=waited, driver_per_join=driver / count, retries=retries,
                counters=counters, sessions=after.sessions, made=made, profile=rows,
                steps=steps, syscalls=syscalls)


def start_strace(pid):
    """``strace -c`` attached to every thread of process ``pid`` (its counts go
    to a temporary file); returns ``(process, file name)``."""
    out = tempfile.NamedTemporaryFile(prefix="bench-strace-", suffix=".txt", delete=False)
    out.close()
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out.name],
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)                      # attached before the first join
    return tracer, out.name


def stop_strace(tracer, joins):
    """Stop the tracer of ``start_strace``; ``{syscall: calls per join}`` from
    its summary (the calls of the whole traced window, over ``joins``)."""
    process, name = tracer
    process.send_signal(signal.SIGINT)
    process.wait(10.0)
    calls = {}
    with open(name) as f:
        for line in f:
            fields = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3]) / joins
    os.unlink(name)
    return calls


def print_syscalls(run):
    """The system calls per join of a traced join run."""
    calls = sorted(run["syscalls"].items(), key=lambda kv: -kv[1])
    print(f"   system calls of the server's process per join (strace -c on a run of "
          f"{run['joins']} joins; tracing slows the server, so it reads more datagrams per "
          "wake-up than untraced):")
    print("   " + ", ".join(f"{name} {n:.2f}" for name, n in calls if n >= 0.005))


def print_joins(runs, in_flight, stay):
    print(f"1. Joins: complete handshakes (cookie round trip, response, Ping, Pong), "
          f"{in_flight} in flight, one socket each; "
          + ("members stay" if stay else "each member then sends a sealed Leave"))
    print(f"   {'run':>3}  {'joins':>6}  {'wall s':>6}  {'joins/s':>7}  {'server':>6}  "
          f"{'us CPU per join':>17}  {'joins per':>9}  {'load':>5}  {'waited':>6}  "
          f"{'driver':>7}  {'step':>5}  {'sessions':>8}")
    print(f"   {'':>3}  {'':>6}  {'':>6}  {'(wall)':>7}  {'CPU s':>6}  "
          f"{'all':>5} {'user':>5} {'sys':>5}  {'CPU-sec':>9}  {'':>5}  {'%':>6}  "
          f"{'us/join':>7}  {'resent':>5}  {'at end':>8}")
    for i, r in enumerate(runs, 1):
        print(f"   {i:>3}  {r['joins']:>6}  {r['wall']:>6.2f}  {r['per_s']:>7.0f}  "
              f"{r['cpu']:>6.2f}  {r['cpu_per_join'] * 1e6:>5.0f} {r['user_per_join'] * 1e6:>5.0f} "
              f"{r['system_per_join'] * 1e6:>5.0f}  {r['per_cpu_s']:>9.0f}  "
              f"{r['load']:>5.2f}  "
              f"{fmt(None if r['waited'] is None else 100 * r['waited'], '.1f'):>6}  "
              f"{r['driver_per_join'] * 1e6:>7.0f}  {r['retries']:>5}  {r['sessions']:>8}")
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("per_s", "cpu_per_join", "per_cpu_s", "load")}
    print(f"   median: {med['per_s']:.0f} joins/s of wall time, {med['cpu_per_join'] * 1e6:.0f} us "
          f"of server CPU per join = {med['per_cpu_s']:.0f} joins per server CPU-second "
          f"(server load {med['load']:.2f})")
    steps = {step: statistics.median(r["steps"][step] for r in runs) for step in JOIN_STEPS}
    own = sum(steps.values()) - (steps[JOIN_STEPS[-1]] if stay else 0.0)
    print(f"   the server's own code per join, without sockets or event loop (Server."
          f"datagram_received of each datagram of {STEP_JOINS} joins, in its process, "
          "medians):")
    print("   " + "; ".join(f"{step} {us:.0f} us" for step, us in steps.items()))
    print(f"   = {own:.0f} us a join{' without the Leave' if stay else ''} ({1e6 / own:.0f} "
          f"joins per CPU-second if nothing else cost); the rest of the "
          f"{med['cpu_per_join'] * 1e6:.0f} us is the kernel's part of {3 if stay else 4} "
          "datagrams in and 3 out (sys), the event loop, and the same code running colder than "
          "in this loop")
    for i, r in enumerate(runs, 1):
        print(f"   server counters, run {i}: "
              + ", ".join(f"{k} {v}" for k, v in sorted(r["counters"].items())))
    print(f"   (Initiators made before each run: {runs[0]['made']:.1f} s for {runs[0]['joins']}; "
          "driver us/join: this process's CPU per join during the run, on CPU "
          f"{MEMBERS_CPU})")
    ok = med["per_cpu_s"] >= TARGET_JOINS_PER_CORE
    print(f"   target: at least {TARGET_JOINS_PER_CORE} joins per second per core (joins per "
          f"server CPU-second): {med['per_cpu_s']:.0f}   {verdict(ok)}")
    if med["load"] < 0.9:
        print(f"   note: the server was busy only {100 * med['load']:.0f} % of the time, so "
              "joins/s of wall time are below what it could do (the driver, or waiting for "
              "CPU 0, limited them); joins per CPU-second is its capacity")
    return ok


def print_floor(floor, runs):
    """The floor (``handshake_floor``) beside the server's median cost per join."""
    server = statistics.median(r["cpu_per_join"] for r in runs) * 1e6
    both = floor["both"]
    print(f"   the floor, measured on CPU {SERVER_CPU} by bench/handshake_floor.py (medians of "
          f"{FLOOR_ROUNDS} rounds of {FLOOR_JOINS} joins, the process's CPU time): X25519 alone "
          f"{floor['x25519']:.0f} us; the join's cryptography {floor['crypto']:.0f} us; its 7 "
          f"system calls (4 recvfrom, 3 sendto) {floor['syscalls']:.0f} us; both in one loop "
          f"{both:.0f} us = {1e6 / both:.0f} joins per CPU-second at most")
    print(f"   the server's {server:.0f} us a join are {server - both:.0f} us "
          f"({100 * (server - both) / server:.0f} %) above that floor: its own Python (parsing, "
          "checks, admission, member tables, replies) and the event loop")


# ------------------------------------------------------------------ flood

def flood_pools(server_key, known_index, rng):
    """The datagrams of each flood kind (POOL of each, the genuine initiations
    fewer as each costs an X25519 key)."""
    genuine = [session.Initiator(server_key, b"").initiation() for _ in range(256)]
    unknown = []
    while len(unknown) < POOL:
        index = rng.getrandbits(32)
        if index != known_index:
            unknown.append(sealed_like(index, rng.getrandbits(32), SEALED_SIZE, rng))
    return {
        "random": [rng.randbytes(rng.randint(1, session.INIT_SIZE)) for _ in range(POOL)],
        "bad_mac1": [bad_mac1_initiation(rng) for _ in range(POOL)],
        "no_cookie": genuine,
        "wrong_cookie": [d[:-16] + rng.randbytes(16) for d in genuine],
        "unknown_index": unknown,
        # Counters above anything the member sent: the replay window passes
        # them, so each costs the AEAD check (a failed one moves no window).
        "bad_tag": [sealed_like(known_index, 1_000_000 + k, SEALED_SIZE, rng)
                    for k in range(POOL)],
    }


class RealMember:
    """A member joined by the handshake, to give the flood a known index and
    to show the server still serves it."""

    def __init__(self, server):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(server.address)
        join = Join(1, "flood", 1, "audience", make_token(SECRET, "flood", 1, "audience"), 0)
        self.session = join_blocking(self.sock, server.public_key, join)
        self.server_index = self.session.remote_index

    def alive(self, timeout=2.0):
        """Whether a sealed Ping gets its Pong within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.send(self.session.seal(Ping(time.time()).encode()))
            self.sock.settimeout(0.2)
            try:
                while True:
                    data = self.sock.recv(2048)
                    try:
                        inner = self.session.open(data)
                    except SessionError:
                        continue
                    if isinstance(decode_or_none(inner), Pong):
                        return True
            except socket.timeout:
                continue
        return False

    def close(self):
        self.sock.close()


def decode_or_none(inner):
    """The control message in ``inner``, or None if it is not one."""
    if not control.is_control(inner):
        return None
    try:
        return control.decode(inner)
    except control.ControlError:
        return None


def handled(counters):
    """Datagrams the server dealt with, by its counters."""
    return sum(counters.get(k, 0) for k in HANDLED)


def flood_kind(server, sock, pool, seconds):
    """Send ``pool`` round and round from ``sock`` for ``seconds``, reading what
    comes back; wait for the server to work through its queue.  Returns a
    dict of what was sent, handled, spent and answered."""
    server_port = server.address[1]
    own_port = sock.getsockname()[1]
    before = server.snapshot()
    server_drops0 = udp_socket_drops({server_port})
    own_drops0 = udp_socket_drops({own_port})
    sent = sent_bytes = back = back_bytes = 0
    send = sock.send
    recv = sock.recv

    def read_back():
        nonlocal back, back_bytes
        while True:
            try:
                data = recv(4096)
            except (BlockingIOError, ConnectionRefusedError):
                return
            back += 1
            back_bytes += len(data)

    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        for i in range(0, len(pool), 256):
            for d in pool[i:i + 256]:
                try:
                    send(d)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                sent += 1
                sent_bytes += len(d)
            read_back()
    send_wall = time.monotonic() - t0
    at_send_end = server.snapshot()
    # The server's socket may still hold a backlog: wait until it is worked off.
    last, still = handled(at_send_end.counters), time.monotonic()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        read_back()
        now_handled = handled(server.snapshot().counters)
        if now_handled != last:
            last, still = now_handled, time.monotonic()
        elif time.monotonic() - still > SETTLE_S:
            break
    read_back()
    after = server.snapshot()
    server_drops1 = udp_socket_drops({server_port})
    own_drops1 = udp_socket_drops({own_port})
    counters = {k: v - before.counters.get(k, 0) for k, v in after.counters.items()
                if v != before.counters.get(k, 0)}
    n = handled(counters)
    cpu = after.cpu - before.cpu
    span = at_send_end.when - before.when
    waited = None if before.waited is None or at_send_end.waited is None \
        else (at_send_end.waited - before.waited) / span
    mean_size = sent_bytes / max(1, sent)
    own_drops = None if own_drops0 is None or own_drops1 is None else own_drops1 - own_drops0
    return dict(
        sent=sent, sent_per_s=sent / send_wall, handled=n,
        handled_per_s=n / (after.when - before.when), cpu=cpu,
        us=cpu / n * 1e6 if n else float("nan"),
        load=(at_send_end.cpu - before.cpu) / span, waited=waited,
        server_socket_drops=None if server_drops0 is None or server_drops1 is None
        else server_drops1 - server_drops0,
        sessions_before=before.sessions, sessions_after=after.sessions,
        counters=counters, mean_size=mean_size,
        # Bytes the server took in (the datagrams it handled) and sent back:
        # from its counters (a cookie reply is its only possible answer here)
        # and as this socket received them (its own drops added).
        bytes_in=n * mean_size,
        bytes_out=counters.get("cookie_replies", 0) * session.COOKIE_REPLY_SIZE,
        back=back, back_bytes=back_bytes + (own_drops or 0) * session.COOKIE_REPLY_SIZE,
        own_drops=own_drops)


def run_flood(ctx, seconds, profile=False):
    """One fresh server, a real member, then each flood kind in turn; returns
    ``(results by kind, check costs, member alive after, profile rows by kind)``;
    the check costs (timed alone in the server's process) only when not profiled."""
    server = ServerProcess(ctx, profile)
    member = sock = None
    results, rows, costs = {}, {}, {}
    try:
        if not profile:
            costs = server.costs([c for _, _, c in FLOOD_KINDS if c],
                                 SEALED_SIZE - session.TRANSPORT_OVERHEAD)
        member = RealMember(server)
        pools = flood_pools(server.public_key, member.server_index, random.Random(11))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FLOOD_RCVBUF)
        sock.bind(("127.0.0.1", 0))
        sock.connect(server.address)
        sock.setblocking(False)
        for name, _, _ in FLOOD_KINDS:
            if not member.alive():
                raise RuntimeError(f"the real member got no Pong before the {name} flood")
            if profile:
                server.profile(True)
            results[name] = flood_kind(server, sock, pools[name], seconds)
            if profile:
                server.profile(False)
                rows[name] = server.profile_rows()
            print(f"   ... flood {name} done", file=sys.stderr)
        alive = member.alive()
    finally:
        if sock is not None:
            sock.close()
        if member is not None:
            member.close()
        server.stop()
    return results, costs, alive, rows


def operations(rows):
    """``(datagrams, {label: calls per datagram})``: the datagrams the server
    handled (calls of its ``datagram_received``) in profile ``rows`` and the
    calls of each of OPERATIONS per datagram."""
    datagrams = sum(calls for name, calls, _, _ in rows
                    if "server.py:" in name and name.endswith("(datagram_received)"))
    per = {}
    for label, needles in OPERATIONS:
        calls = sum(c for name, c, _, _ in rows if any(k in name for k in needles))
        per[label] = calls / datagrams if datagrams else float("nan")
    return datagrams, per


def print_flood(results, costs, alive, seconds, rows):
    base = results["random"]["us"]
    print(f"2. Unauthenticated flood: each kind from one socket as fast as this process "
          f"sends, {seconds:g} s")
    print(f"   {'kind':<29}  {'sent/s':>7}  {'handled':>7}  {'server':>7}  {'load':>4}  "
          f"{'waited':>6}  {'us per':>6}  {'above':>6}  {'check':>6}  {'ratio':>5}  "
          f"{'sessions':>9}  {'bytes out/in':>12}  {'seen':>6}")
    print(f"   {'':<29}  {'':>7}  {'per s':>7}  {'socket':>7}  {'':>4}  "
          f"{'%':>6}  {'dgram':>6}  {'random':>6}  {'alone':>6}  {'':>5}  "
          f"{'before/aft':>9}  {'(counters)':>12}  {'here':>6}")
    for name, text, check in FLOOD_KINDS:
        r = results[name]
        above = r["us"] - base
        alone = costs[check] if check else None
        ratio = r["bytes_out"] / r["bytes_in"] if r["bytes_in"] else 0.0
        seen = r["back_bytes"] / r["bytes_in"] if r["bytes_in"] else 0.0
        print(f"   {text:<29}  {r['sent_per_s']:>7.0f}  {r['handled_per_s']:>7.0f}  "
              f"{fmt(r['server_socket_drops']):>7}  {r['load']:>4.2f}  "
              f"{fmt(None if r['waited'] is None else 100 * r['waited'], '.1f'):>6}  "
              f"{r['us']:>6.2f}  {above:>6.2f}  {fmt(alone, '.2f'):>6}  "
              f"{fmt(None if alone is None else above / alone, '.2f'):>5}  "
              f"{r['sessions_before']:>4}/{r['sessions_after']:<4}  {ratio:>12.4f}  "
              f"{seen:>6.4f}")
    print("   check alone: " + "; ".join(f"{CHECK_NAMES[c]} {costs[c]:.2f} us"
                                         for c in ("bad_mac1", "no_cookie", "wrong_cookie",
                                                   "bad_tag"))
          + f" (timeit medians of {COST_REPEATS} runs in the server's process); an unknown "
          "index is a dictionary miss, no check")
    print("   (handled: datagrams the server's counters show it dealt with, the rest overflowed "
          "its socket (server socket drops);\n    us per dgram: server CPU / handled; above "
          "random: minus the random datagrams' cost, the receive path every datagram pays;\n"
          "    ratio: that excess over the kind's check timed alone (the two cookie kinds' "
          "excess also holds the sendto of their reply, which on loopback does the receiving "
          "socket's work too);\n    bytes out/in: what the server sent back per byte it "
          "handled, from its counters; seen here: the same from what the flooding socket "
          "received)")
    for name, text, _ in FLOOD_KINDS:
        r = results[name]
        print(f"   server counters, {name}: "
              + ", ".join(f"{k} {v}" for k, v in sorted(r["counters"].items()))
              + f"; {r['back']} datagrams back here ({r['back_bytes']} B"
              + (f", {r['own_drops']} dropped at this socket" if r["own_drops"] else "") + ")")
    print(f"   Operations per datagram handled (calls counted by cProfile in the server "
          f"thread, each kind again for {FLOOD_PROFILE_S:g} s):")
    print(f"   {'kind':<29}  {'handled':>7}  " + "  ".join(f"{label:>9}" for label, _ in OPERATIONS)
          + "  verdict")
    ok_all = True
    for name, text, check in FLOOD_KINDS:
        r = results[name]
        datagrams, per = operations(rows[name])
        transport = name in ("unknown_index", "bad_tag")
        no_session = r["sessions_after"] <= r["sessions_before"] \
            and not r["counters"].get("handshakes") and not r["counters"].get("joined")
        bounded = per["X25519"] == 0 and per["AEAD seal"] == 0 and per["sendto"] <= 1 and (
            per["AEAD open"] <= 1 and per["HMAC"] == 0 if transport
            else per["AEAD open"] == 0 and per["HMAC"] <= COOKIE_CHECK_HMACS)
        ratio = r["bytes_out"] / r["bytes_in"] if r["bytes_in"] else 0.0
        seen = r["back_bytes"] / r["bytes_in"] if r["bytes_in"] else 0.0
        ok = bool(datagrams) and bounded and no_session and ratio <= 1.0 and seen <= 1.0
        ok_all &= ok
        print(f"   {text:<29}  {datagrams:>7}  "
              + "  ".join(f"{per[label]:>9.3f}" for label, _ in OPERATIONS) + f"  {verdict(ok)}")
    print(f"   the real member's Ping after the flood got its Pong: {'yes' if alive else 'NO'}")
    ok = ok_all and alive
    print(f"   target: no flood datagram costs the server more than one cookie check (no "
          f"X25519, no AEAD, at most {COOKIE_CHECK_HMACS} HMAC) or one AEAD check (no HMAC), "
          "sends more than one datagram, creates a session, or gets more bytes back than it "
          "sent   " + verdict(ok))
    return ok


# ------------------------------------------------------------------ main

def arguments(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="join runs (median)")
    p.add_argument("--seconds", type=float, default=FLOOD_S, help="seconds of each flood kind")
    p.add_argument("--quick", action="store_true",
                   help=f"{JOINS_QUICK} joins x 2, {FLOOD_S_QUICK:g} s a flood kind")
    p.add_argument("--joins", type=int, default=None, help=f"joins a run ({JOINS})")
    p.add_argument("--in-flight", type=int, default=IN_FLIGHT, help="handshakes at once")
    p.add_argument("--stay", action="store_true", help="members stay instead of leaving")
    p.add_argument("--strace", action="store_true",
                   help="also count the server's system calls per join (strace -c, one more run)")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile the server during a join run and the flood")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.seconds = min(args.seconds, FLOOD_S_QUICK)
    if args.joins is None:
        args.joins = JOINS_QUICK if args.quick else JOINS
    if args.repeats < 1 or args.seconds <= 0 or args.joins < 1 or not 1 <= args.in_flight <= 1000:
        p.error("--repeats and --joins must be >= 1, --seconds > 0, --in-flight in 1..1000")
    return args


def main(argv=None):
    args = arguments(argv)
    ctx = multiprocessing.get_context("spawn")
    placement = pin(MEMBERS_CPU)
    print("stagevox handshake benchmark")
    print(f"  CPU: {cpu_name()}, {os.cpu_count()} cores; server process on CPU {SERVER_CPU}, "
          f"driver on {placement}; Python {platform.python_version()}; loopback 127.0.0.1 only")
    print()
    results = []
    runs = []
    for i in range(args.repeats):
        runs.append(run_joins(ctx, args.joins, args.in_flight, args.stay))
        print(f"   ... join run {i + 1} done", file=sys.stderr)
    results.append(print_joins(runs, args.in_flight, args.stay))
    print_floor(measure_floor(ctx), runs)
    if args.strace:
        print_syscalls(run_joins(ctx, args.joins, args.in_flight, args.stay, trace=True))
    print()
    flood, costs, alive, _ = run_flood(ctx, args.seconds)
    counted, _, alive_after_count, rows = run_flood(ctx, FLOOD_PROFILE_S, profile=True)
    results.append(print_flood(flood, costs, alive and alive_after_count, args.seconds, rows))
    print()
    if args.profile:
        prof = run_joins(ctx, args.joins, args.in_flight, args.stay, profile=True)
        print("3. Where the server's time goes: cProfile in the server thread (the profiler's "
              "overhead inflates every figure; compare shares)")
        print(f"   joins ({prof['joins']}; {prof['cpu_per_join'] * 1e6:.0f} us of server CPU per "
              "join while profiled):")
        print_profile_rows(prof["profile"], prof["joins"], "us/join", 24)
        for name in ("no_cookie", "wrong_cookie", "bad_tag"):
            datagrams, _ = operations(rows[name])
            print(f"   flood {name} ({datagrams} datagrams handled while profiled, "
                  f"{counted[name]['us']:.2f} us each):")
            print_profile_rows(rows[name], datagrams, "us/dgram", 12)
        print()
    print(f"{results.count(True)} of {len(results)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
