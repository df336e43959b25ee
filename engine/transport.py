"""One UDP datagram endpoint on an asyncio loop, used by the server and the client.

It hands each datagram to a handler and never lets one datagram's exception
end the endpoint (counted, logged at most once a while per kind); it sends
with the socket's own ``sendto`` (asyncio's transport adds checks per packet
that fan-out pays once per listener) and falls back to the transport's queue
when the kernel buffer is full.  ``run_periodic`` runs a housekeeping step on
a fixed interval and survives the exceptions of any one step the same way.
"""

import asyncio
import logging
import socket
import time

log = logging.getLogger("stagevox.engine")

#: Kernel send and receive buffers, bytes: room for short stalls of the loop.
SOCKET_BUFFER = 1 << 20
#: Seconds between two log lines about the same kind of failure.
LOG_EVERY_S = 10.0


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


class DatagramEndpoint(asyncio.DatagramProtocol):
    """A UDP socket whose datagrams go to ``handler(data, addr)``.

    ``counters``: a ``collections.Counter`` for ``internal_errors``,
    ``socket_errors`` and ``send_errors``.
    """

    def __init__(self, handler, counters, name):
        self.handler = handler
        self.counters = counters
        self.name = name
        self.transport = None
        self.sock = None
        self.log = LimitedLog()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            self.handler(data, addr[:2])
        except Exception as exc:      # one bad datagram must never stop the endpoint
            self.counters["internal_errors"] += 1
            self.log.warning(type(exc).__name__, "%s: error handling a datagram from %s: %r",
                             self.name, addr[:2], exc)

    def error_received(self, exc):
        self.counters["socket_errors"] += 1

    def send(self, data, addr=None):
        """Send one datagram (to ``addr``, or to the connected peer)."""
        try:
            if addr is None:
                self.sock.send(data)
            else:
                self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            if self.transport is not None and not self.transport.is_closing():
                self.transport.sendto(data, addr)
        except OSError:
            self.counters["send_errors"] += 1


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
    sock = make_socket(host, port, remote=remote)
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: DatagramEndpoint(handler, counters, name), sock=sock)
    endpoint.sock = sock
    return endpoint


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
