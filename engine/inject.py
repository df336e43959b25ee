"""Inject an online stream into a channel: a URL everyone hears, as a host.

``StreamInjector`` joins a channel as a host with its own uid and token,
opens the URL with ``media_source.MediaSource`` (anything PyAV opens: an
HTTP file, an HLS playlist, an RTMP stream, a local file), and publishes it
in real time, in stereo with the ``music_standard_stereo`` profile.  It
runs on a thread of its own and reports through ``on_state(state, reason)``
(called on that thread; states ``INJECT_STATES``):

- ``connecting``: joining the channel or opening the URL;
- ``playing``: the stream is heard in the channel;
- ``retrying``: the URL could not be opened, or broke; ``reason`` says why
  (``not_found``, ``unsupported``, ``network_error``, ``decode_error``, or the
  server's refusal) and when the next try is;
- ``stopped``: for good; ``reason`` is ``finished`` (the stream or file
  ended), ``removed`` (``stop``), ``gave_up`` (``max_retries`` tries in a
  row failed) or ``refused: ...`` (the channel refused the join, which no
  retry mends).

Tries are spaced by a back-off that doubles from ``RETRY_FIRST_S`` up to
``RETRY_MAX_S``; a try that played for a while starts the back-off afresh.
The channel and its other members are never affected by a failing stream.
"""

import threading

import numpy as np

from stagevox.dsp.errors import ParameterError, RefusedError

from .media_source import CHANNELS, MediaSource
from .pacing import FRAME_S, Pacer
from .rtp import CLOCK_RATE

INJECT_STATES = ("connecting", "playing", "retrying", "stopped")
#: First wait before trying a failed URL again, and the longest, seconds.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
#: Failed tries in a row after which the injector gives up.
MAX_RETRIES = 8
#: A try that played this long resets the back-off.
STEADY_S = 10.0
#: Time a newly opened URL has to give its first audio, seconds.
OPEN_TIMEOUT_S = 10.0
#: The audio profile of the injected stream.
PROFILE = "music_standard_stereo"


class StreamInjector:
    """Publishes ``url`` into ``channel`` as host ``uid`` (see the module docstring).

    ``server_address`` ``(host, port)`` and ``server_key``: the server;
    ``token``: a host token for ``channel`` and ``uid``, or a function that
    makes a fresh one (then the token is renewed whenever the server warns
    that it will expire, so a stream may run for any length of time);
    ``volume``: 0-100,
    the stream's level; ``on_state(state, reason)``: state events.
    ``max_retries``, ``retry_first_s``, ``retry_max_s``: the back-off.
    ``start`` begins; ``stop`` ends it and leaves the channel.  Raises
    ``ParameterError`` for an empty URL or a volume out of range.
    """

    def __init__(self, server_address, server_key, channel, uid, token, url, *,
                 volume=100, on_state=None, max_retries=MAX_RETRIES,
                 retry_first_s=RETRY_FIRST_S, retry_max_s=RETRY_MAX_S):
        if not isinstance(url, str) or not url.strip():
            raise ParameterError(f"url must be a file path or a URL, got {url!r}")
        if isinstance(volume, bool) or not isinstance(volume, (int, float)) \
                or not 0 <= volume <= 100:
            raise ParameterError(f"volume must be a number in 0..100, got {volume!r}")
        self.server_address = server_address
        self.server_key = server_key
        self.channel = channel
        self.uid = uid
        self.url = url
        self.gain = np.float32(volume / 100.0)
        self.on_state = on_state or (lambda state, reason: None)
        self.max_retries = max_retries
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self._token = token
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = None
        self.state = None
        self.reason = None
        self.tries = 0
        self.played_s = 0.0

    def start(self):
        """Start the injector's thread; returns ``self``.  Raises
        ``RuntimeError`` when it was started already (an injector runs once)."""
        if self._thread is not None:
            raise RuntimeError("this injector was started already")
        self._thread = threading.Thread(target=self._run, name="stagevox-inject", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Stop publishing and leave the channel (idempotent), waiting at most
        ``timeout`` seconds for the thread to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait(self, timeout=None):
        """Wait at most ``timeout`` seconds (None: without limit) until the
        injector has stopped; True if it has."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ thread

    def _set(self, state, reason):
        self.state, self.reason = state, reason
        self.on_state(state, reason)

    def _run(self):
        from .client import Client
        client = Client(CLOCK_RATE, CHANNELS)
        client.set_audio_profile(PROFILE)
        self._set("connecting", "joining")
        if callable(self._token):
            client.register_event_handler(_TokenRenewal(self, client))
        try:
            client.join_channel(self.server_address, self.channel, self.uid, self._fresh_token(),
                                "host", server_key=self.server_key)
        except RefusedError as exc:
            self._set("stopped", f"refused: {exc}")
            return
        except (TimeoutError, OSError, ValueError) as exc:
            self._set("stopped", f"cannot join: {exc}")
            return
        try:
            self._play_with_retries(client)
        finally:
            client.leave_channel()

    def _fresh_token(self):
        return self._token() if callable(self._token) else self._token

    def _renew(self, client):
        """Give the server a fresh token (on a thread of its own: the request
        waits for the server's answer)."""
        try:
            client.renew_token(self._fresh_token())
            self.renewals += 1
        except Exception as exc:    # refused or timed out: the server removes us at expiry
            self.on_state(self.state, f"token renewal failed: {exc}")

    def _play_with_retries(self, client):
        wait = self.retry_first_s
        failures = 0
        while not self._stop.is_set():
            self.tries += 1
            self._set("connecting", "opening the stream")
            outcome, played = self._play_once(client)
            if outcome in ("finished", "removed"):
                self._set("stopped", outcome)
                return
            if played >= STEADY_S:
                wait, failures = self.retry_first_s, 0
            failures += 1
            if failures >= self.max_retries:
                self._set("stopped", f"gave_up after {failures} failed tries ({outcome})")
                return
            self._set("retrying", f"{outcome}; next try in {wait:g} s")
            if self._stop.wait(wait):
                break
            wait = min(2 * wait, self.retry_max_s)
        self._set("stopped", "removed")

    def _play_once(self, client):
        """Open the URL and publish it until it ends, fails or ``stop``;
        returns ``(outcome, seconds played)``."""
        source = MediaSource(self.url, cycle=1)
        try:
            if not source.wait_ready(OPEN_TIMEOUT_S) and not self._stop.is_set():
                return (source.failed or "network_error: no audio within "
                        f"{OPEN_TIMEOUT_S:g} s"), 0.0
            self._set("playing", "started")
            step = round(CLOCK_RATE * FRAME_S)
            pacer = Pacer(FRAME_S)
            frames = 0
            pacer.start()
            while not self._stop.is_set():
                block = source.read(step)
                if source.failed is not None and block.shape[1] == 0:
                    return source.failed, frames * FRAME_S
                if source.finished and block.shape[1] == 0:
                    return "finished", frames * FRAME_S
                if block.shape[1] < step:         # an underrun: keep time with silence
                    block = np.concatenate(
                        [block, np.zeros((CHANNELS, step - block.shape[1]), np.float32)], axis=1)
                client.push_audio(block * self.gain)
                frames += 1
                self.played_s += FRAME_S
                pacer.wait()
            return "removed", frames * FRAME_S
        finally:
            source.close()


class _TokenRenewal:
    """Renews the injector's token when the server warns that it will expire."""

    def __init__(self, injector, client):
        self._injector = injector
        self._client = client

    def on_token_privilege_will_expire(self, expires_at):
        threading.Thread(target=self._injector._renew, args=(self._client,),
                         name="stagevox-inject-renew", daemon=True).start()
