"""A UDP impairment relay for the engine's network tests.

``UdpRelay`` sits between clients and one target (the stagevox server), all on
127.0.0.1, and impairs the packets it forwards: independent random loss or
bursty Gilbert-Elliott loss, constant delay, jitter (which reorders packets when
it exceeds their spacing) and duplication.  Each direction has its own
``Impairment``; one ``random.Random(seed)`` draws every decision, so a run with
the same seed and the same packet arrival order makes the same decisions.

The relay runs one background thread that stops by itself at ``stop()``, after
``max_seconds`` or after ``max_packets`` received packets, whichever comes
first; every wait in it is bounded.  It only binds and sends on loopback.

    with UdpRelay(server_address, upstream=Impairment(loss=0.1)) as relay:
        client.connect(relay.address)
        ...
        relay.counters["upstream"]["dropped"]
"""

import dataclasses
import heapq
import ipaddress
import math
import queue
import random
import selectors
import socket
import threading
import time

#: The only address the relay binds and sends to.
LOOPBACK = "127.0.0.1"
#: Longest select wait when no packet is due: how quickly the thread notices
#: ``stop()``, a rebind request or its deadline, in seconds.
POLL_S = 0.005
#: Largest UDP datagram.
MAX_DATAGRAM = 65535
#: Datagrams read from one socket before serving the others and the due queue.
READ_BURST = 64
#: Receive buffer asked for on every relay socket (the kernel may cap it).
RCVBUF_BYTES = 1 << 21
#: Counter names kept for each direction.
COUNTER_NAMES = ("received", "dropped", "duplicated", "sent", "send_errors")


def _check_probability(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")


def _check_delay(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {value!r}")


@dataclasses.dataclass
class Impairment:
    """What happens to the packets of one direction.

    ``loss`` is an independent per-packet loss probability.  When
    ``p_good_to_bad > 0`` a Gilbert-Elliott two-state model replaces it: the
    state moves good -> bad with ``p_good_to_bad`` and bad -> good with
    ``p_bad_to_good`` once per packet, and a packet is lost with
    ``loss_in_good`` or ``loss_in_bad`` according to the state it meets.
    A packet that is not lost waits ``delay_ms`` plus a uniform draw in
    ``[0, jitter_ms]``; with probability ``duplicate`` it is also sent a second
    time, the copy with its own jitter draw.
    """

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    duplicate: float = 0.0
    p_good_to_bad: float = 0.0
    p_bad_to_good: float = 1.0
    loss_in_bad: float = 1.0
    loss_in_good: float = 0.0

    @classmethod
    def gilbert_elliott(cls, average_loss, mean_burst, **kw):
        """Bursty loss with a stationary loss rate of ``average_loss`` (0 <= x < 1)
        in bursts of ``mean_burst`` packets on average (>= 1).

        Every packet in the bad state is lost and none in the good state, so a
        burst is a stay in the bad state: ``p_bad_to_good = 1 / mean_burst`` and
        ``p_good_to_bad = average_loss * p_bad_to_good / (1 - average_loss)``.
        Other fields (delay, jitter, duplication) come from ``kw``.  Raises
        ``ValueError`` when the pair is impossible (``average_loss`` above
        ``mean_burst / (mean_burst + 1)``) or out of range.
        """
        clash = sorted(set(kw) & {"loss", "p_good_to_bad", "p_bad_to_good", "loss_in_bad", "loss_in_good"})
        if clash:
            raise ValueError(f"gilbert_elliott sets the loss model itself; do not pass {', '.join(clash)}")
        if not isinstance(average_loss, (int, float)) or not 0.0 <= average_loss < 1.0:
            raise ValueError(f"average_loss must be in [0, 1), got {average_loss!r}")
        if not isinstance(mean_burst, (int, float)) or not math.isfinite(mean_burst) or mean_burst < 1.0:
            raise ValueError(f"mean_burst must be a finite number of packets >= 1, got {mean_burst!r}")
        p_bad_to_good = 1.0 / mean_burst
        p_good_to_bad = average_loss * p_bad_to_good / (1.0 - average_loss)
        if p_good_to_bad > 1.0:
            raise ValueError(f"average_loss {average_loss} is impossible with mean_burst {mean_burst}: "
                             f"it must be at most mean_burst / (mean_burst + 1) = "
                             f"{mean_burst / (mean_burst + 1.0):.6g}")
        imp = cls(p_good_to_bad=p_good_to_bad, p_bad_to_good=p_bad_to_good,
                  loss_in_bad=1.0, loss_in_good=0.0, **kw)
        imp.validate()
        return imp

    @property
    def bursty(self):
        """True when the Gilbert-Elliott model is in use (``p_good_to_bad > 0``)."""
        return self.p_good_to_bad > 0.0

    def validate(self):
        """Raise ``ValueError`` naming the field when a probability is outside
        [0, 1] or a delay is negative or not finite; return ``self``."""
        for name in ("loss", "duplicate", "p_good_to_bad", "p_bad_to_good", "loss_in_bad", "loss_in_good"):
            _check_probability(name, getattr(self, name))
        for name in ("delay_ms", "jitter_ms"):
            _check_delay(name, getattr(self, name))
        return self


class Impairer:
    """The decisions of one direction, without sockets: ``decide()`` is called
    once per arriving packet and returns the delays, in seconds, after which
    to send it (empty: dropped; two: duplicated).  Holds the Gilbert-Elliott
    state; draws from the ``random.Random`` it is given."""

    def __init__(self, impairment, rng):
        self.rng = rng
        self.impairment = impairment

    @property
    def impairment(self):
        return self._impairment

    @impairment.setter
    def impairment(self, value):
        if not isinstance(value, Impairment):
            raise TypeError(f"impairment must be an Impairment, got {type(value).__name__}")
        self._impairment = dataclasses.replace(value).validate()
        self.bad = False            # Gilbert-Elliott state: start in the good state

    def _lost(self):
        imp = self._impairment
        if not imp.bursty:
            return imp.loss > 0.0 and self.rng.random() < imp.loss
        p_loss = imp.loss_in_bad if self.bad else imp.loss_in_good
        lost = p_loss > 0.0 and self.rng.random() < p_loss
        flip = imp.p_bad_to_good if self.bad else imp.p_good_to_bad
        if self.rng.random() < flip:
            self.bad = not self.bad
        return lost

    def _delay_s(self):
        imp = self._impairment
        extra = self.rng.uniform(0.0, imp.jitter_ms) if imp.jitter_ms > 0.0 else 0.0
        return (imp.delay_ms + extra) * 1e-3

    def decide(self):
        """Delays in seconds for this packet's copies: ``()`` when it is lost,
        one delay normally, two when it is duplicated."""
        if self._lost():
            return ()
        first = self._delay_s()
        imp = self._impairment
        if imp.duplicate > 0.0 and self.rng.random() < imp.duplicate:
            return (first, self._delay_s())
        return (first,)


def loopback_target(target):
    """``target`` as ``("127.0.0.1"-style IPv4 loopback, port)``; ``"localhost"``
    becomes 127.0.0.1.  Raises ``ValueError`` for anything else: the relay only
    ever talks to this machine."""
    try:
        host, port = target
    except (TypeError, ValueError):
        raise ValueError(f"target must be a (host, port) pair, got {target!r}") from None
    if host == "localhost":
        host = LOOPBACK
    try:
        loopback = ipaddress.ip_address(host).version == 4 and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"target host must be an IPv4 loopback address (127.0.0.1 or 'localhost'), got {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"target port must be an int in 1..65535, got {port!r}")
    return (host, port)


def _loopback_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    except OSError:
        pass
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    return sock


class UdpRelay:
    """Sits between clients and one target (the server).

    Clients send to ``address``.  Each client address that sends gets its own
    upstream socket bound to 127.0.0.1 (like a NAT), so the target sees one
    distinct address per client; whatever arrives on that socket goes back to
    that client from ``address``.  Packets client -> target get ``upstream``
    impairment, target -> client get ``downstream``.

    ``seed`` seeds the one ``random.Random`` behind every decision.  The thread
    stops at ``stop()``, ``max_seconds`` after ``start()``, or once it has
    received ``max_packets`` packets (both directions together); packets still
    waiting out their delay then are discarded.  Raises ``ValueError`` for a
    target that is not on loopback and for limits that are not positive.
    """

    def __init__(self, target, upstream=None, downstream=None, seed=0,
                 max_seconds=120.0, max_packets=2_000_000):
        self.target = loopback_target(target)
        if not isinstance(max_seconds, (int, float)) or not 0.0 < max_seconds < math.inf:
            raise ValueError(f"max_seconds must be a finite number of seconds > 0, got {max_seconds!r}")
        if not isinstance(max_packets, int) or max_packets < 1:
            raise ValueError(f"max_packets must be an int >= 1, got {max_packets!r}")
        self.max_seconds = float(max_seconds)
        self.max_packets = max_packets
        self._rng = random.Random(seed)
        self._impairers = {
            "upstream": Impairer(Impairment() if upstream is None else upstream, self._rng),
            "downstream": Impairer(Impairment() if downstream is None else downstream, self._rng)}
        self._counters = {d: dict.fromkeys(COUNTER_NAMES, 0) for d in self._impairers}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._commands = queue.SimpleQueue()
        self._thread = None
        self._error = None
        self.stop_reason = None
        self._listen = _loopback_socket()
        self.address = self._listen.getsockname()
        self._clients = {}          # client address -> its upstream socket
        self._client_ports = {}     # client address -> its upstream socket's address
        self._closed = False
        self._heap = []             # (due, seq, direction, payload, client address)
        self._seq = 0
        self._received = 0
        # select() waits with microsecond timeouts (epoll and poll round up to
        # whole milliseconds), which keeps delivery within ~0.1 ms of due; it
        # only takes descriptors below FD_SETSIZE (1024), so a process with
        # many files open falls back to poll and ~1 ms.
        if self._listen.fileno() < 512 or not hasattr(selectors, "PollSelector"):
            self._selector = selectors.SelectSelector()
        else:
            self._selector = selectors.PollSelector()
        self._selector.register(self._listen, selectors.EVENT_READ, None)

    # -- control, from any thread ---------------------------------------------

    def start(self):
        """Start the relay thread; returns ``self``.  ``RuntimeError`` if it was
        already started or stopped."""
        if self._thread is not None or self._stop_event.is_set():
            raise RuntimeError("a UdpRelay can be started only once")
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Stop the thread (waiting at most ``timeout`` seconds) and close the
        sockets; safe to call more than once.  Raises ``RuntimeError`` if the
        relay thread failed, chained to its exception."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._close()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"UdpRelay thread failed: {error!r}") from error

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except RuntimeError:
            if exc_type is None:
                raise

    @property
    def running(self):
        """True while the relay thread is forwarding packets."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout):
        """Wait at most ``timeout`` seconds for the thread to end by itself;
        returns True when it has ended."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def counters(self):
        """A snapshot ``{"upstream": {...}, "downstream": {...}}`` with, per
        direction, packets ``received``, ``dropped`` (by the loss model),
        ``duplicated``, ``sent`` (copies included) and ``send_errors``."""
        with self._lock:
            return {d: dict(c) for d, c in self._counters.items()}

    @property
    def clients(self):
        """A snapshot ``{client address: upstream socket address}``."""
        with self._lock:
            return dict(self._client_ports)

    def set_impairment(self, upstream=None, downstream=None):
        """Replace the impairment of one or both directions while running; a
        ``None`` leaves that direction as it is.  Packets already waiting keep
        their delay; the Gilbert-Elliott state restarts in the good state.
        Raises ``ValueError`` for an invalid impairment."""
        new = {}
        for direction, imp in (("upstream", upstream), ("downstream", downstream)):
            if imp is not None:
                if not isinstance(imp, Impairment):
                    raise TypeError(f"{direction} must be an Impairment, got {type(imp).__name__}")
                new[direction] = dataclasses.replace(imp).validate()
        with self._lock:
            for direction, imp in new.items():
                self._impairers[direction].impairment = imp

    def rebind(self, client_addr, timeout=5.0):
        """Move ``client_addr``'s upstream socket to a new port, as a NAT that
        rebinds does; returns the new upstream address.  Packets from the
        target to the old port are lost from then on.  Raises ``KeyError`` for
        a client the relay has not seen, ``RuntimeError`` if the relay thread
        does not answer within ``timeout`` seconds."""
        if not self.running:
            return self._rebind(client_addr)
        done = threading.Event()
        result = {}
        self._commands.put((client_addr, done, result))
        if not done.wait(timeout):
            raise RuntimeError(f"relay thread did not rebind {client_addr!r} within {timeout} s")
        if "error" in result:
            raise result["error"]
        return result["address"]

    # -- the relay thread -------------------------------------------------------

    def _rebind(self, client_addr):
        with self._lock:
            if self._closed:
                raise RuntimeError("the relay is stopped")
            if client_addr not in self._clients:
                raise KeyError(f"unknown client {client_addr!r}; known: {sorted(self._clients)}")
            old = self._clients[client_addr]
            new = _loopback_socket()
            self._selector.unregister(old)
            old.close()
            self._clients[client_addr] = new
            self._client_ports[client_addr] = new.getsockname()
            self._selector.register(new, selectors.EVENT_READ, client_addr)
            return self._client_ports[client_addr]

    def _run_commands(self):
        for _ in range(16):
            try:
                client_addr, done, result = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result["address"] = self._rebind(client_addr)
            except (KeyError, RuntimeError, OSError) as e:  # handed back to the caller of rebind
                result["error"] = e
            done.set()

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        reason = "error"
        try:
            while True:
                if self._stop_event.is_set():
                    reason = "stopped"
                    break
                now = time.monotonic()
                if now >= deadline:
                    reason = "max_seconds"
                    break
                if self._received >= self.max_packets:
                    reason = "max_packets"
                    break
                self._run_commands()
                self._send_due(now)
                timeout = min(POLL_S, deadline - now)
                if self._heap:
                    timeout = min(timeout, self._heap[0][0] - now)
                for key, _ in self._selector.select(max(timeout, 0.0)):
                    self._read(key.fileobj, key.data)
        except Exception as e:  # noqa: BLE001 -- any failure is reported by stop()
            self._error = e
        finally:
            self.stop_reason = reason
            self._close()

    def _read(self, sock, client_addr):
        """Read up to READ_BURST datagrams from ``sock``: the listening socket
        (``client_addr`` None) or a client's upstream socket."""
        for _ in range(READ_BURST):
            if self._received >= self.max_packets:
                return
            try:
                payload, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:          # e.g. an ICMP error reported on Windows
                return
            now = time.monotonic()
            self._received += 1
            with self._lock:
                if client_addr is None:
                    direction, client = "upstream", source
                    if client not in self._clients:
                        up = _loopback_socket()
                        self._clients[client] = up
                        self._client_ports[client] = up.getsockname()
                        self._selector.register(up, selectors.EVENT_READ, client)
                else:
                    direction, client = "downstream", client_addr
                counts = self._counters[direction]
                counts["received"] += 1
                delays = self._impairers[direction].decide()
                if not delays:
                    counts["dropped"] += 1
                elif len(delays) > 1:
                    counts["duplicated"] += 1
            for delay in delays:
                self._seq += 1
                heapq.heappush(self._heap, (now + delay, self._seq, direction, payload, client))
        # more may be waiting: the selector reports the socket again

    def _send_due(self, now):
        while self._heap and self._heap[0][0] <= now:
            _, _, direction, payload, client = heapq.heappop(self._heap)
            if direction == "upstream":
                sock, dest = self._clients.get(client), self.target
            else:
                sock, dest = self._listen, client
            ok = False
            if sock is not None:
                try:
                    sock.sendto(payload, dest)
                    ok = True
                except OSError:      # full buffer or an ICMP error: the packet is lost
                    pass
            with self._lock:
                self._counters[direction]["sent" if ok else "send_errors"] += 1

    def _close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            socks = [self._listen, *self._clients.values()]
        for sock in socks:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._selector.close()
