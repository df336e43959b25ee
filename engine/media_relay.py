"""Channel media relay: a host's published audio, also published in other channels.

This is how hosts of two channels co-host (PK): each relays its voice into
the other's channel, where it is heard as a member with its own uid.  A
destination may be on another server, which is also how an origin server
feeds an edge server whose own listeners hear the channel.

Each destination is a ``Client`` of its own (its own handshake, session,
token, uid and encoder) joined as a host; the source client hands it every
frame it publishes, after its volume and effects.  Joins run on a worker
thread, so ``start`` never waits on the network; how they went arrives as
``on_channel_media_relay_state_changed(state, reason)`` events on the
source client's handlers (states ``RELAY_STATES``): ``connecting`` while
destinations join, ``running`` once every destination is in, ``failure``
when one could not join or dropped out (the others go on; ``reason`` names
the channel and the cause), ``idle`` after ``stop``.
"""

import dataclasses
import threading

from stagevox.dsp.errors import ParameterError

#: At most this many destination channels (as the well-known SDK).
MAX_DESTINATIONS = 6
RELAY_STATES = ("idle", "connecting", "running", "failure")


@dataclasses.dataclass(frozen=True)
class RelayDestination:
    """One channel to relay into.

    ``channel``, ``uid`` (1 to 2**32-1, the relayed host's uid there) and
    ``token`` (a host token for that channel and uid); ``server_address``
    ``(host, port)`` and ``server_key`` for a channel on another server
    (``None``: the source client's server and key).
    """

    channel: str
    uid: int
    token: str
    server_address: tuple | None = None
    server_key: bytes | str | None = None

    def __post_init__(self):
        if not isinstance(self.channel, str) or not self.channel:
            raise ParameterError(f"RelayDestination.channel must be a channel name, "
                                 f"got {self.channel!r}")
        if isinstance(self.uid, bool) or not isinstance(self.uid, int) \
                or not 0 < self.uid < 2**32:
            raise ParameterError(f"RelayDestination.uid must be an integer in "
                                 f"1..{2**32 - 1}, got {self.uid!r}")
        if not isinstance(self.token, str) or not self.token:
            raise ParameterError("RelayDestination.token must be the destination's host token")
        if (self.server_address is None) != (self.server_key is None):
            raise ParameterError("RelayDestination needs both server_address and server_key "
                                 "for another server, or neither for the source's own")

    @property
    def key(self):
        """What identifies the destination: its server and channel."""
        return (self.server_address, self.channel)


class ChannelMediaRelay:
    """Relays the audio ``source`` (a joined ``Client``) publishes into other channels.

    Created by ``Client.start_channel_media_relay``; see the module docstring.
    """

    def __init__(self, source):
        self._source = source
        self._lock = threading.Lock()
        self._clients = {}          # destination key -> Client (joined)
        self._joining = {}          # destination key -> RelayDestination
        self._paused = False
        self._stopped = False
        self._failed = []           # reasons of destinations that failed
        self.state = "idle"

    # ------------------------------------------------------------------ control

    def update(self, destinations):
        """Relay into exactly ``destinations`` (``RelayDestination``s, at most
        ``MAX_DESTINATIONS``, none twice, none the source's own channel):
        new ones are joined on a worker thread, dropped ones left, the others
        go on without a gap.  Raises ``ParameterError`` for a bad list."""
        wanted = self._check(destinations)
        with self._lock:
            if self._stopped:
                raise RuntimeError("this channel media relay was stopped; start a new one")
            gone = [self._clients.pop(key) for key in list(self._clients) if key not in wanted]
            new = [d for key, d in wanted.items()
                   if key not in self._clients and key not in self._joining]
            for d in new:
                self._joining[d.key] = d
            self._failed = []
        for client in gone:
            client.leave_channel()
        if new:
            self._set_state("connecting", ", ".join(d.channel for d in new))
            threading.Thread(target=self._join_all, args=(new,), name="media-relay-join",
                             daemon=True).start()
        elif not gone or self._clients:
            self._settle()

    def stop(self):
        """Leave every destination channel; the relay ends (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.leave_channel()
        self._set_state("idle", "stopped")

    def pause_all(self):
        """Stop sending into every destination (each stays joined, muted)."""
        self._paused = True
        for client in self.clients():
            client.mute_local_audio_stream(True)

    def resume_all(self):
        """Send into every destination again after ``pause_all``."""
        self._paused = False
        for client in self.clients():
            client.mute_local_audio_stream(False)

    def clients(self):
        """The joined destination clients (a copy of the list)."""
        with self._lock:
            return list(self._clients.values())

    def destinations(self):
        """The channels relayed into now, as ``(server_address, channel)`` pairs."""
        with self._lock:
            return list(self._clients)

    # ------------------------------------------------------------------ audio

    def push(self, frames):
        """Publish ``frames`` (the source's processed audio, float32 ``(channels,
        n)`` at its rate) into every joined destination."""
        for client in self.clients():
            client.push_audio(frames)

    # ------------------------------------------------------------------ internals

    def _check(self, destinations):
        if isinstance(destinations, RelayDestination):
            destinations = [destinations]
        destinations = list(destinations)
        if not 1 <= len(destinations) <= MAX_DESTINATIONS:
            raise ParameterError(f"a channel media relay takes 1 to {MAX_DESTINATIONS} "
                                 f"destinations, got {len(destinations)}")
        wanted = {}
        for d in destinations:
            if not isinstance(d, RelayDestination):
                raise ParameterError(f"destinations must be RelayDestination objects, "
                                     f"got {type(d).__name__}")
            if d.key in wanted:
                raise ParameterError(f"channel {d.channel!r} is given twice")
            if d.server_address is None and d.channel == self._source.channel:
                raise ParameterError(f"channel {d.channel!r} is the source's own channel")
            wanted[d.key] = d
        return wanted

    def _join_all(self, destinations):
        src = self._source
        from .client import Client
        for d in destinations:
            client = Client(src.sample_rate, src.channels, codec=src.codec,
                            bitrate=src._sender.bitrate, frame_ms=src.frame_ms)
            address = d.server_address or src.server_address
            key = d.server_key if d.server_key is not None else src._server_key
            try:
                client.join_channel(address, d.channel, d.uid, d.token, "host", server_key=key)
            except Exception as exc:     # refused, timed out, unreachable: reported, not raised
                with self._lock:
                    self._joining.pop(d.key, None)
                    self._failed.append(f"{d.channel}: {exc}")
                continue
            client.register_event_handler(_DestinationWatch(self, d))
            if self._paused:
                client.mute_local_audio_stream(True)
            with self._lock:
                keep = not self._stopped and self._joining.pop(d.key, None) is not None
                if keep:
                    self._clients[d.key] = client
            if not keep:
                client.leave_channel()
        self._settle()

    def _settle(self):
        """Report how the destinations stand once no join is under way."""
        with self._lock:
            if self._joining or self._stopped:
                return
            failed = list(self._failed)
        if failed:
            self._set_state("failure", "; ".join(failed))
        else:
            self._set_state("running", ", ".join(ch for _, ch in self.destinations()))

    def _dropped(self, destination, reason):
        with self._lock:
            client = self._clients.get(destination.key)
            if client is None or self._stopped:
                return
            del self._clients[destination.key]
            self._failed = [f"{destination.channel}: {reason}"]
        threading.Thread(target=client.leave_channel, daemon=True).start()
        self._settle()

    def _set_state(self, state, reason):
        self.state = state
        self._source._emit("on_channel_media_relay_state_changed", state, reason)


class _DestinationWatch:
    """Tells the relay when a destination's connection fails for good."""

    def __init__(self, relay, destination):
        self._relay = relay
        self._destination = destination

    def on_connection_state_changed(self, state, reason):
        if state == "failed":
            self._relay._dropped(self._destination, reason)
