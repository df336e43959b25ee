"""One UDP datagram endpoint on an asyncio loop, used by the server and the client.

It hands each datagram to a handler and never lets one datagram's exception
end the endpoint (counted, logged at most once a while per kind); it reads
and sends with the socket's own ``recvfrom`` and ``sendto`` (asyncio's
datagram transport adds work per packet that fan-out and floods pay by the
thousand) and queues what the kernel has no room for.  ``run_periodic`` runs a housekeeping step on
a fixed interval and survives the exceptions of any one step the same way.
"""

import asyncio
import collections
import logging
import socket
import time

log = logging.getLogger("stagevox.engine")

#: Kernel send and receive buffers, bytes: room for short stalls of the loop.
SOCKET_BUFFER = 1 << 20
#: Largest datagram read (any UDP datagram fits); datagrams read per wake-up at most.
MAX_READ = 65536
READ_BATCH = 64
#: Datagrams waiting for room in the kernel's send buffer, at most.
SEND_QUEUE = 4096
#: Seconds between two log lines about the same kind of failure.
LOG_EVERY_S = 10.0


def format_address(addr):
    """``host:port`` of an (host, port, ...) address, ``[host]:port`` for IPv6."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LimitedLog:
    """Logs a failure at most once per ``LOG_EVERY_S`` per key, with the count since."""

    def __init__(self, logger=log, every_s=LOG_EVERY_S):
        self.logger = logger
        self.every_s = every_s
        self._last = {}
        self._count = {}

    def warning(self, key, message, *args):
        now = time.monotonic()
        self._count[key] = self._count.get(key, 0) + 1
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return
        n = self._count.pop(key)
        self._last[key] = now
        suffix = f" ({n} times since the last report)" if n > 1 else ""
        self.logger.warning(message + suffix, *args)


class DatagramEndpoint:
    """A UDP socket on the running loop whose datagrams go to ``handler(data, addr)``.

    It reads with ``recvfrom`` of at most MAX_READ bytes, up to READ_BATCH
    datagrams each time the socket is ready (asyncio's own datagram transport
    asks for 256 KiB a datagram, which costs about 20 µs more each here).
    ``counters``: a ``collections.Counter`` for ``internal_errors``,
    ``socket_errors``, ``send_errors`` and ``send_queue_full``.
    """

    def __init__(self, sock, handler, counters, name):
        self.sock = sock
        self.handler = handler
        self.counters = counters
        self.name = name
        self.log = LimitedLog()
        self._loop = asyncio.get_running_loop()
        self._queue = collections.deque()      # (data, addr) the kernel had no room for
        self._closed = False
        self._loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self):
        recvfrom = self.sock.recvfrom
        for _ in range(READ_BATCH):
            try:
                data, addr = recvfrom(MAX_READ)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:                  # e.g. an ICMP error on a connected socket
                self.counters["socket_errors"] += 1
                continue
            try:
                self.handler(data, addr[:2])
            except Exception as exc:         # one bad datagram must never stop the endpoint
                self.counters["internal_errors"] += 1
                self.log.warning(type(exc).__name__,
                                 "%s: error handling a datagram from %s: %r",
                                 self.name, addr[:2], exc)
            if self._closed:
                return

    def send(self, data, addr=None):
        """Send one datagram (to ``addr``, or to the connected peer); when the
        kernel's buffer is full it waits in a queue of at most SEND_QUEUE."""
        if self._queue:
            self._enqueue(data, addr)
        elif not self._send_now(data, addr):
            self._enqueue(data, addr)
            self._loop.add_writer(self.sock.fileno(), self._write_ready)

    def _send_now(self, data, addr):
        """Hand one datagram to the kernel: False when its buffer is full."""
        try:
            if addr is None:
                self.sock.send(data)
            else:
                self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.counters["send_errors"] += 1
        return True

    def _enqueue(self, data, addr):
        if len(self._queue) >= SEND_QUEUE:
            self.counters["send_queue_full"] += 1
            return
        self._queue.append((data, addr))

    def _write_ready(self):
        while self._queue:
            if not self._send_now(*self._queue[0]):
                return
            self._queue.popleft()
        self._loop.remove_writer(self.sock.fileno())

    def close(self):
        """Stop reading and writing and close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        self._loop.remove_writer(self.sock.fileno())
        self._queue.clear()
        self.sock.close()


def make_socket(host, port, *, remote=None):
    """A non-blocking UDP socket bound to ``(host, port)`` (connected to
    ``remote`` when given) with SOCKET_BUFFER-sized kernel buffers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.bind((host, port))
        if remote is not None:
            sock.connect(remote)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def open_endpoint(handler, counters, name, host, port, *, remote=None):
    """Bind a socket and serve it on the running loop; returns the endpoint."""
    return DatagramEndpoint(make_socket(host, port, remote=remote), handler, counters, name)


async def run_periodic(interval_s, step, counters, name):
    """Call ``step(now)`` every ``interval_s`` seconds until cancelled; an
    exception in one call is counted (``periodic_errors``), logged at most
    once a while, and the next call goes ahead."""
    limited = LimitedLog()
    while True:
        await asyncio.sleep(interval_s)
        try:
            step(time.monotonic())
        except Exception as exc:
            counters["periodic_errors"] += 1
            limited.warning(type(exc).__name__, "%s: periodic step failed: %r", name, exc)
