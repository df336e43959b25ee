"""The floor under the server's cost of a join: its cryptography and its system calls, alone.

``bench_handshake.py`` measures what a join costs the running server.  This
measures, in a process pinned to the server's CPU, what no Python server of
this protocol can go below, in three loops:

- crypto: the cryptographic calls the server makes for one join, in order,
  on the same sizes and through the same functions (``hmac_sha256``,
  ``KeyedHmac``, ``hashlib.sha256``, X25519 and ChaCha20-Poly1305 of the
  ``cryptography`` package), as straight-line code with nothing between them:
  for the first initiation mac1 and the cookie; for the second mac1, the
  cookie and mac2, the Noise NK responder (one X25519 key made, two
  exchanges, the HKDFs, one AEAD open and one seal, the hashes), the token's
  HMAC, the two transport ciphers; one transport open each for the Ping and
  the Leave and one seal for the Pong.
- syscalls: the datagrams of a join on a UDP socket over 127.0.0.1, one
  ``recvfrom`` for each of the 4 datagrams in and one ``sendto`` for each of
  the 3 out, sizes as in a real join, with a feeder on the other CPU keeping
  64 joins in flight (as the benchmark's driver does).
- both, interleaved as a server would: the 4 reads, the crypto, the 3 sends.

CPU time of the pinned process per join (``os.times``: user + system),
medians of a few rounds.  What the server spends above "both" is its own
Python: parsing, checks, admission, member tables, replies, the event loop.
"""

import hashlib
import multiprocessing
import os
import select
import socket
import statistics
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from stagevox.engine import make_token, session
from stagevox.engine.control import Join, Leave, Ping
from stagevox.engine.hmac_sha256 import KeyedHmac, hmac_sha256
from stagevox.engine.server import Server

from bench_engine import (SECRET, SERVER_CPU, SERVER_PRIVATE_KEY, _Collect, Joining, end_process,
                          pin, wait_reply)

FLOOR_JOINS = 2000
FLOOR_ROUNDS = 3
IN_FLIGHT = 64
MAX_READ = 65536                     # as the server's endpoint reads
_sha256 = hashlib.sha256


def join_datagrams():
    """The datagrams of one real join: ``(in, out)``, the 4 the server reads
    (two initiations, the sealed Ping and Leave) and the 3 it sends (cookie
    reply, response, sealed Pong), from a Server that is not started."""
    server = Server("127.0.0.1", 0, SECRET, private_key=SERVER_PRIVATE_KEY)
    out = server._endpoint = _Collect()
    addr = ("127.0.0.1", 40000)
    join = Join(1, "floor", 7, "audience", make_token(SECRET, "floor", 7, "audience"), 0)
    joining = Joining(server.public_key, join)
    got = [joining.next()]
    server.datagram_received(got[-1], addr)
    got.append(joining.take(out.sent[-1]))
    server.datagram_received(got[-1], addr)
    got.append(joining.take(out.sent[-1]))
    server.datagram_received(got[-1], addr)
    joining.take(out.sent[-1])
    got.append(joining.session.seal(Leave().encode()))
    return got, list(out.sent), join


class FloorCrypto:
    """The server's cryptographic calls for one join (``run``), on inputs
    prepared so that every open authenticates."""

    def __init__(self):
        inputs, outputs, join = join_datagrams()
        self.initiation = inputs[1]
        # The token's signed payload: 14 bytes of fields, then the channel name.
        self.token_payload = bytes(14 + len(join.channel.encode()))
        self.secret = SECRET.encode() if isinstance(SECRET, str) else SECRET
        self.static = X25519PrivateKey.from_private_bytes(SERVER_PRIVATE_KEY)
        self.static_public = self.static.public_key().public_bytes_raw()
        self.mac1 = KeyedHmac(_sha256(b"mac1" + self.static_public).digest())
        self.cookie = KeyedHmac(os.urandom(32))
        self.address = socket.inet_pton(socket.AF_INET, "127.0.0.1") + (40000).to_bytes(2, "big")
        # The client's e and message 1, made so that the server's open of it authenticates.
        client = X25519PrivateKey.generate()
        self.client_e = client.public_key().public_bytes_raw()
        self.prologue = session.PROLOGUE + self.initiation[:session.HANDSHAKE_HEADER]
        h, key = self._message1_key()
        plaintext = bytes(session.INIT_SIZE - 8 - 32 - 16 - 32)
        self.message1 = ChaCha20Poly1305(key).encrypt(session._FIRST_NONCE, plaintext, h)
        self.joined = outputs[1][8 + 32 + 4:-16]               # the Joined reply's size
        transport = os.urandom(32)
        self.transport = ChaCha20Poly1305(transport)
        sender = session.Session(transport, transport, 1, 1)
        self.ping = sender.seal(Ping(1.0).encode())
        self.leave = sender.seal(Leave().encode())
        self.pong = bytes(len(outputs[2]) - session.TRANSPORT_OVERHEAD)    # the Pong's size

    def _message1_key(self):
        h = _sha256(_sha256(_sha256(session._INITIAL_H + self.prologue).digest()
                            + self.static_public).digest() + self.client_e).digest()
        temp = session._initial_ck_hmac(
            self.static.exchange(X25519PublicKey.from_public_bytes(self.client_e)))
        ck = hmac_sha256(temp, b"\x01")
        return h, hmac_sha256(temp, ck + b"\x02")

    def run(self):
        """One join's cryptography, as the server does it."""
        init, mac1, cookie, address = self.initiation, self.mac1, self.cookie, self.address
        nonce = session._FIRST_NONCE
        # The first initiation: mac1 and the cookie of the reply.
        mac1(init[:-32])
        cookie(address)
        # The second: mac1, the cookie, mac2, then Noise NK's responder.
        mac1(init[:-32])
        hmac_sha256(cookie(address)[:16], init[:-16])
        e_key = X25519PublicKey.from_public_bytes(self.client_e)
        h = _sha256(_sha256(_sha256(session._INITIAL_H + self.prologue).digest()
                            + self.static_public).digest() + self.client_e).digest()
        temp = session._initial_ck_hmac(self.static.exchange(e_key))
        ck = hmac_sha256(temp, b"\x01")
        key = hmac_sha256(temp, ck + b"\x02")
        ChaCha20Poly1305(key).decrypt(nonce, self.message1, h)
        h = _sha256(h + self.message1).digest()
        hmac_sha256(self.secret, self.token_payload)                           # the token
        e = X25519PrivateKey.generate()
        e_public = e.public_key().public_bytes_raw()
        h = _sha256(h + e_public).digest()
        temp = hmac_sha256(ck, e.exchange(e_key))
        ck = hmac_sha256(temp, b"\x01")
        key = hmac_sha256(temp, ck + b"\x02")
        message2 = ChaCha20Poly1305(key).encrypt(nonce, self.joined, h)
        _sha256(h + message2).digest()
        temp = hmac_sha256(ck, b"")
        k1 = hmac_sha256(temp, b"\x01")
        k2 = hmac_sha256(temp, k1 + b"\x02")
        ChaCha20Poly1305(k1)
        ChaCha20Poly1305(k2)
        # The Ping, the Pong, the Leave.
        transport, ping, leave = self.transport, self.ping, self.leave
        pack = session._NONCE.pack
        transport.decrypt(pack(0), ping[13:], ping[:13])
        transport.encrypt(pack(0), self.pong, ping[:13])
        transport.decrypt(pack(1), leave[13:], leave[:13])


def x25519_only(crypto):
    """The X25519 calls of ``FloorCrypto.run`` alone: the client's key read,
    the exchange with the static key, a key made, the exchange with it."""
    e_key = X25519PublicKey.from_public_bytes(crypto.client_e)
    crypto.static.exchange(e_key)
    e = X25519PrivateKey.generate()
    e.public_key().public_bytes_raw()
    e.exchange(e_key)


def floor_main(conn, joins, rounds):
    """Child process on SERVER_CPU: the three loops and the X25519 calls
    alone, ``rounds`` times each, timed by this process's CPU clock; sends
    back ``{"x25519"|"crypto"|"syscalls"|"both": [us per join, ...]}``."""
    try:
        pin(SERVER_CPU)
        crypto = FloorCrypto()
        inputs, outputs, _ = join_datagrams()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        conn.send(("address", sock.getsockname(), [len(d) for d in inputs]))
        peer = wait_reply(conn, 30.0, "feeder")[1]
        recvfrom, sendto, run = sock.recvfrom, sock.sendto, crypto.run
        result = {"x25519": [], "crypto": [], "syscalls": [], "both": []}
        for _ in range(rounds):
            t = time.process_time()
            for _ in range(joins):
                x25519_only(crypto)
            result["x25519"].append((time.process_time() - t) / joins * 1e6)
            t = time.process_time()
            for _ in range(joins):
                run()
            result["crypto"].append((time.process_time() - t) / joins * 1e6)
            for loop in ("syscalls", "both"):
                conn.send(("feed", joins))
                t = time.process_time()
                for _ in range(joins):
                    recvfrom(MAX_READ)
                    recvfrom(MAX_READ)
                    recvfrom(MAX_READ)
                    recvfrom(MAX_READ)
                    if loop == "both":
                        run()
                    for data in outputs:
                        sendto(data, peer)
                result[loop].append((time.process_time() - t) / joins * 1e6)
                wait_reply(conn, 60.0, "feeder")
        conn.send(("floor", result))
    except Exception as exc:            # reported to the parent, which raises it
        conn.send(("error", repr(exc)))


def feed(conn, sock, server, sizes, joins):
    """Keep IN_FLIGHT joins' datagrams in flight to ``server`` until it has
    read ``joins`` joins' worth: 4 datagrams sent for every 3 that come back."""
    datagrams = [os.urandom(n) for n in sizes]
    sent = back = 0

    def send_join():
        nonlocal sent
        for d in datagrams:
            sock.sendto(d, server)
        sent += 1
    for _ in range(min(IN_FLIGHT, joins)):
        send_join()
    while back < 3 * joins:
        ready, _, _ = select.select([sock], [], [], 5.0)
        if not ready:
            raise RuntimeError(f"the floor process stopped reading ({back // 3} of {joins} joins)")
        while True:
            try:
                sock.recv(2048)
            except BlockingIOError:
                break
            back += 1
            if back % 3 == 0 and sent < joins:
                send_join()
    conn.send(("fed",))


def measure_floor(ctx, joins=FLOOR_JOINS, rounds=FLOOR_ROUNDS):
    """Run the floor's loops in a process on SERVER_CPU, fed from this one;
    returns ``{loop: median us per join}``."""
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=floor_main, args=(child, joins, rounds), daemon=True)
    proc.start()
    child.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        _, server, sizes = wait_reply(conn, 60.0, "floor process")
        conn.send(("peer", sock.getsockname()))
        while True:
            msg = wait_reply(conn, 120.0, "floor process")
            if msg[0] == "floor":
                return {loop: statistics.median(v) for loop, v in msg[1].items()}
            feed(conn, sock, server, sizes, msg[1])
    finally:
        sock.close()
        end_process(proc)


if __name__ == "__main__":
    pin(1 - SERVER_CPU)
    print(measure_floor(multiprocessing.get_context("spawn")))
