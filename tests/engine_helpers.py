"""Helpers for the live-channel tests: a server with clients, paced streaming,
event recording, raw control-protocol sockets and level/pitch measurements.

Everything stays on 127.0.0.1 and every wait has a deadline.  Streaming
pushes 10 ms to every host and pulls 10 ms from every listener on one
real-time clock (see ``live_session._pace``), so what a listener pulled at
frame ``i`` is what was pushed about ``delay`` frames earlier.
"""

import math
import socket
import threading
import time

import numpy as np
from stagevox import engine
from stagevox.engine import control, session

SECRET = "engine-channel-test-secret"
RATE = 48000
FRAME_S = 0.01


def wait_until(cond, timeout=3.0, interval=0.01):
    """Poll ``cond()`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def token(channel, uid, role="host", **kw):
    """A token signed with the tests' secret."""
    return engine.make_token(SECRET, channel, uid, role, **kw)


class Session:
    """A running server and the clients joined to it; everything is closed on exit.

    ``with Session(member_timeout_s=1.5) as s: host = s.join(1, "host")``.
    """

    def __init__(self, channel="room", **server_kw):
        self.channel = channel
        self.server = engine.Server(secret=SECRET, **server_kw)
        self.clients = []
        self.sockets = []

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        for c in self.clients:
            try:
                c.leave_channel()
            except (RuntimeError, OSError) as err:      # a client the test already broke
                print(f"leave_channel of uid {c.uid}: {err!r}")
        for s in self.sockets:
            s.close()
        self.server.stop()

    def client(self, **client_kw):
        """A new, not yet joined client that is closed with the session."""
        c = engine.Client(**client_kw)
        self.clients.append(c)
        return c

    def join(self, uid, role="audience", *, token_role=None, channel=None, address=None,
             handler=None, **client_kw):
        """A client joined as ``uid`` in ``role`` with a token for ``token_role``
        (default: the role); ``handler`` is registered before joining."""
        channel = channel or self.channel
        c = self.client(**client_kw)
        if handler is not None:
            c.register_event_handler(handler)
        c.join_channel(address or self.server.address, channel, uid,
                       token(channel, uid, token_role or role), role, timeout=3.0,
                       server_key=self.server.public_key)
        return c

    def raw_socket(self):
        """A ``RawMember`` on 127.0.0.1 (closed with the session): a plain
        socket until ``raw_join``, a hand-driven member after it."""
        s = RawMember(self.server.public_key)
        self.sockets.append(s)
        return s

    def raw_join(self, sock, uid, role, ssrc, *, token_role=None, channel=None, timeout=3.0):
        """Join on the ``RawMember`` ``sock`` with the handshake alone; returns
        the server's reply (``control.Joined`` or ``control.Refused``)."""
        channel = channel or self.channel
        msg = control.Join(1, channel, uid, role, token(channel, uid, token_role or role), ssrc)
        return sock.join(self.server.address, msg, timeout)


class RawMember:
    """A member driven by hand over a plain UDP socket, for tests that send
    what no honest client would.

    Before ``join`` it is a plain socket (``sendto`` sends the bytes as they
    are).  ``join`` runs the handshake; after it, ``sendto`` seals the bytes
    (an RTP packet or a control message) into the session, ``recv`` returns
    the opened inner datagrams (anything else is skipped), and the first
    sealed datagram confirms the session.  ``raw`` is the socket itself.
    """

    def __init__(self, server_key):
        self.server_key = server_key
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.raw.bind(("127.0.0.1", 0))
        self.raw.settimeout(0.2)
        self.session = None
        self.event_seq = 0

    def getsockname(self):
        return self.raw.getsockname()

    def settimeout(self, t):
        self.raw.settimeout(t)

    def close(self):
        self.raw.close()

    def join(self, address, msg, timeout=3.0):
        """The handshake carrying ``msg`` (a ``control.Join``); returns the reply,
        and on ``Joined`` confirms the session with a Ping."""
        initiator = session.Initiator(self.server_key, msg.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.initiation = initiator.initiation()
            self.raw.sendto(self.initiation, address)
            resend = time.monotonic() + 0.1
            while time.monotonic() < min(resend, deadline):
                try:
                    data = self.raw.recv(2048)
                except TimeoutError:
                    continue
                kind = session.datagram_kind(data)
                if kind == session.KIND_COOKIE and initiator.read_cookie(data):
                    break
                if kind != session.KIND_RESPONSE:
                    continue
                payload, sess = initiator.read_response(data)
                reply = control.decode(payload)
                if isinstance(reply, control.Joined):
                    self.session = sess
                    self._confirm(address, deadline)
                return reply
        raise TimeoutError(f"no handshake answer within {timeout} s")

    def _confirm(self, address, deadline):
        """Ping until the server answers on the new session: it has admitted us."""
        while time.monotonic() < deadline:
            self.sendto(control.Ping(0.0).encode(), address)
            try:
                self.recv()
                return
            except TimeoutError:
                continue
        raise TimeoutError("the server did not confirm the session")

    def sendto(self, data, address):
        if self.session is not None:
            data = self.session.seal(data)
        return self.raw.sendto(data, address)

    def drain(self, seconds):
        """Everything that arrives within ``seconds``: ``(datagrams, bytes)`` as
        they came on the wire, and the opened inner datagrams."""
        raw, inner = [], []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.raw.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.raw.recv(65536)
            except (TimeoutError, BlockingIOError):
                break
            raw.append(data)
            if self.session is not None:
                try:
                    inner.append(self.session.open(data))
                except session.SessionError:
                    pass
        self.raw.settimeout(0.2)
        return raw, inner

    def recv(self, size=2048):
        """The next opened inner datagram (raises TimeoutError like a socket)."""
        while True:
            data = self.raw.recv(size)
            if self.session is None:
                return data
            try:
                return self.session.open(data)
            except session.SessionError:
                continue


def request(sock, address, msg, timeout=3.0):
    """Send ``msg`` from ``sock`` until a reply with its request id comes back."""
    deadline = time.monotonic() + timeout
    data = msg.encode()
    while time.monotonic() < deadline:
        sock.sendto(data, address)
        resend = time.monotonic() + 0.2
        while time.monotonic() < min(resend, deadline):
            try:
                reply = control.decode(sock.recv(2048))
            except (TimeoutError, control.ControlError):   # nothing yet, or media
                continue
            if getattr(reply, "request_id", None) == msg.request_id:
                return reply
    raise TimeoutError(f"no reply to {type(msg).__name__} within {timeout} s")


class Recorder:
    """Event handler that records every ``on_...`` call as ``(name, args)``."""

    NAMES = ("on_user_joined", "on_user_offline", "on_client_role_changed",
             "on_connection_state_changed", "on_token_privilege_will_expire",
             "on_encryption_error", "on_channel_media_relay_state_changed")

    def __init__(self):
        self.events = []
        self.times = []
        self._lock = threading.Lock()
        for name in self.NAMES:
            setattr(self, name, self._recorder(name))

    def _recorder(self, name):
        def record(*args):
            with self._lock:
                self.events.append((name, args))
                self.times.append(time.monotonic())
        return record

    def of(self, name):
        """The argument tuples of the recorded ``name`` calls, in order."""
        with self._lock:
            return [args for n, args in self.events if n == name]

    def wait_for(self, name, args=None, timeout=3.0):
        """Wait for a ``name`` call (with exactly ``args`` when given); returns
        the monotonic time it was recorded, or None after ``timeout``."""
        def find():
            with self._lock:
                for (n, a), t in zip(self.events, self.times):
                    if n == name and (args is None or a == tuple(args)):
                        return t
            return None
        return wait_until(find, timeout)


def pace(t0, i):
    """Sleep until frame ``i`` of a clock that started at ``t0``."""
    delay = t0 + i * FRAME_S - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def stream(pushes, pulls, seconds, on_frame=None):
    """Push and pull 10 ms frames in real time for ``seconds``.

    ``pushes``: ``{client: signal}`` (1-D mono or ``(channels, n)`` at the
    client's rate; shorter signals are followed by silence).  ``pulls``: the
    clients to pull from.  ``on_frame(i)`` runs before frame ``i`` (to change a
    setting mid-stream); when it returns True the stream ends there.
    Returns ``{client: (channels, n) pulled audio}``.
    """
    n_frames = round(seconds / FRAME_S)
    got = {c: [] for c in pulls}
    t0 = time.monotonic()
    for i in range(n_frames):
        pace(t0, i)
        if on_frame is not None and on_frame(i):
            break
        for c, signal in pushes.items():
            step = c.sample_rate // 100
            sig = np.atleast_2d(signal)
            chunk = sig[:, i * step:(i + 1) * step]
            if chunk.shape[1] < step:
                chunk = np.concatenate(
                    [chunk, np.zeros((sig.shape[0], step - chunk.shape[1]), np.float32)], axis=1)
            c.push_audio(np.ascontiguousarray(chunk, dtype=np.float32))
        for c in pulls:
            got[c].append(c.pull_audio(c.sample_rate // 100))
    return {c: np.concatenate(frames, axis=1) for c, frames in got.items()}


def window(y, start_s, end_s, fs=RATE):
    """Samples ``start_s``..``end_s`` seconds of ``y`` (along its last axis)."""
    return y[..., int(start_s * fs):int(end_s * fs)]


def tone(freq, seconds, fs=RATE, amplitude=0.25, phase=0.0):
    """A float32 sine."""
    t = np.arange(round(seconds * fs)) / fs
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def amplitude(y, freq, fs=RATE):
    """Amplitude of the ``freq`` Hz component of ``y`` by least squares."""
    return tone_fit(y, freq, fs)[0]


def tone_fit(y, freq, fs=RATE):
    """``(amplitude, residual rms)`` of a least-squares sine fit at ``freq`` Hz:
    how strong the tone is, and how much of ``y`` is something else."""
    y = np.asarray(y, np.float64)
    n = np.arange(len(y))
    basis = np.column_stack([np.sin(2 * np.pi * freq * n / fs), np.cos(2 * np.pi * freq * n / fs)])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return math.hypot(*coef), rms(y - basis @ coef)


#: ``purity`` of a tone heard through the channel, at least: the jitter buffer
#: may stretch or conceal a frame under load, which moves a little energy off
#: the tone (measured 0.9998+ on an idle machine); noise, garbage or another
#: tone at a fifth of its amplitude (4 % of the energy) would not pass.
CLEAN_TONE = 0.97


def purity(y, freq, fs=RATE, band_hz=50.0):
    """Share of the energy of ``y`` within ``band_hz`` of ``freq`` (Hann window):
    near 1 for a clean tone, lower for noise, clicks or other tones."""
    y = np.asarray(y, np.float64)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    f = np.fft.rfftfreq(len(y), 1.0 / fs)
    total = float(spec.sum())
    return float(spec[np.abs(f - freq) <= band_hz].sum()) / total if total > 0 else 0.0


def band_amplitude(y, freq, fs=RATE):
    """The amplitude of what ``y`` holds within 50 Hz of ``freq`` (its
    in-band energy as a sine's).  Unlike ``amplitude`` (a least-squares fit)
    it does not drop when the tone's phase jumps, as it does when a receiver
    conceals a late frame."""
    return math.sqrt(2.0 * purity(y, freq, fs)) * rms(y)


def rms(y):
    y = np.asarray(y, np.float64)
    return math.sqrt(float(np.mean(y * y))) if y.size else 0.0


def db(ratio):
    return 20.0 * math.log10(max(ratio, 1e-12))


def peak_frequency(y, fs=RATE):
    """Frequency of the strongest spectral peak (Hann window, 8x zero padding,
    parabolic interpolation on the log magnitude), Hz."""
    y = np.asarray(y, np.float64)
    n = len(y)
    spec = np.abs(np.fft.rfft(y * np.hanning(n), 8 * n))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-30)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c != 0 else 0.0
    return (k + shift) * fs / (8 * n)


def delay_samples(reference, received, max_lag):
    """Lag (samples, 0..max_lag) at which ``received`` best matches ``reference``
    (normalised cross-correlation), and that correlation."""
    import scipy.signal as ss
    ref = np.asarray(reference, np.float64)
    seg = np.asarray(received, np.float64)[:len(ref) + max_lag]
    c = ss.correlate(seg, ref, mode="valid")
    power = np.concatenate([[0.0], np.cumsum(seg ** 2)])
    energy = power[len(ref):] - power[:-len(ref)]
    score = c / np.sqrt(energy * float(ref @ ref) + 1e-12)
    k = int(np.argmax(score))
    return k, float(score[k])
