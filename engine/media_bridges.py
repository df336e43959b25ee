"""The server's media bridges: which channels are mixed, and for which
outputs (CDN push URLs, RTP forwards).  ``Server`` holds one
``MediaBridges`` and calls it; this module keeps the bookkeeping and the
checks of every request, whether from the server's owner or from a host.

A channel is mixed (``channel_mix.ChannelMix``) only while it has an
output; its packets reach the mix through ``offer`` (one dict look-up per
packet on the server's loop when nothing is mixed).
"""

import logging
import threading

from stagevox.dsp.errors import ParameterError

from .channel_mix import ChannelMix, Transcoding
from .publish import ChannelEncoder, RtmpPublisher, check_url
from .rtp_forward import RtpForward

log = logging.getLogger(__name__)

#: Outputs one channel may have at most, of each kind.
MAX_PUBLISH_URLS = 8
MAX_RTP_FORWARDS = 8


class BridgeError(ParameterError):
    """A bridge request that cannot be done; the message names the problem.

    ``code``: ``"unknown_channel"``, ``"end_to_end_encrypted"``,
    ``"too_many_outputs"`` or ``"bad_request"``."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class MediaBridges:
    """The mixes and outputs of a server.

    ``counters``: the server's counters.  ``channel_info(name)``: None for a
    channel the server does not serve, else True when its media is sealed
    end to end.  Handlers registered with ``add_handler`` hear
    ``on_rtmp_streaming_state_changed(url, state, reason)`` (on a
    publisher's thread).
    """

    def __init__(self, counters, channel_info):
        self._counters = counters
        self._channel_info = channel_info
        self._mixes = {}                 # channel -> ChannelMix (read on the server's loop)
        self._publishers = {}            # channel -> {url: RtmpPublisher}
        self._encoders = {}              # channel -> ChannelEncoder (all its URLs)
        self._transcoding = {}           # channel -> Transcoding
        self._forwards = {}              # channel -> {(host, port): RtpForward}
        self._asked_by_hosts = {}        # channel -> {url}: the pushes hosts asked for
        self._handlers = []
        self._lock = threading.Lock()

    def add_handler(self, handler):
        self._handlers.append(handler)

    def offer(self, channel, uid, ssrc, packet, now):
        """A host's packet, from the server's loop."""
        mix = self._mixes.get(channel)
        if mix is not None:
            mix.offer(uid, ssrc, packet, now)

    # ------------------------------------------------------------ CDN push

    def add_publish_stream_url(self, channel, url, transcoding=None, by_host=False):
        """Push ``channel`` to ``url``; ``by_host``: a host asked (hosts may
        remove only the pushes hosts asked for, not the server owner's)."""
        check_url(url)
        config = Transcoding.of(transcoding) if transcoding is not None else None
        with self._lock:
            if url in self._publishers.get(channel, {}):      # asked again: nothing new
                if config is not None:
                    self._set_transcoding(channel, config)
                return
            mix = self._mix_for(channel, self._publishers, MAX_PUBLISH_URLS, "publish URLs")
            urls = self._publishers.setdefault(channel, {})
            if config is not None:
                self._set_transcoding(channel, config)
            config = self._transcoding.setdefault(channel, Transcoding())
            publisher = RtmpPublisher(url, config, self._report, self._counters,
                                      sealed=lambda: mix.sealed)
            urls[url] = publisher
            encoder = self._encoders.get(channel)
            if encoder is None:
                encoder = self._encoders[channel] = ChannelEncoder(config)
                mix.add_output("aac", encoder)
            encoder.add(url, publisher)
            if by_host:
                self._asked_by_hosts.setdefault(channel, set()).add(url)

    def remove_publish_stream_url(self, channel, url, wait=True, by_host=False):
        """Stop pushing ``channel`` to ``url``; ``wait``: until its stream has
        ended (False on the server's loop, which must not wait); ``by_host``:
        a host asks, which may stop only a push a host asked for."""
        with self._lock:
            asked = self._asked_by_hosts.get(channel, set())
            if by_host and url in self._publishers.get(channel, {}) and url not in asked:
                raise BridgeError("bad_request", f"the push of {channel!r} to {url!r} was "
                                                 f"set up by the server, not by a host")
            asked.discard(url)
            publisher = self._publishers.get(channel, {}).pop(url, None)
            if publisher is None:
                raise BridgeError("bad_request", f"channel {channel!r} is not pushed to {url!r}")
            encoder = self._encoders[channel]
            encoder.remove(url)
            if not encoder.publishers:
                self._mixes[channel].remove_output("aac")
                del self._encoders[channel]
            self._release(channel)
        publisher.close(None if wait else 0.0)

    def update_transcoding(self, channel, config):
        config = Transcoding.of(config)
        with self._lock:
            if channel not in self._publishers and self._channel_info(channel) is None:
                raise BridgeError("unknown_channel", self._unknown(channel))
            self._set_transcoding(channel, config)

    def publish_urls(self, channel):
        """``{url: state}`` of the channel's CDN pushes."""
        return {u: p.state for u, p in self._publishers.get(channel, {}).items()}

    # ------------------------------------------------------------ RTP forward

    def start_rtp_forward(self, channel, host, port, uid=None, sdp_path=None):
        if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int)
                                or not 0 <= uid < 2 ** 32):
            raise BridgeError("bad_request", f"uid must be None or in 0..4294967295, got {uid!r}")
        with self._lock:
            mix = self._mix_for(channel, self._forwards, MAX_RTP_FORWARDS, "RTP forwards")
            forwards = self._forwards.setdefault(channel, {})
            if (host, port) in forwards:
                raise BridgeError("bad_request", f"channel {channel!r} is already forwarded "
                                                 f"to {host}:{port}")
            try:
                forward = RtpForward(channel, host, port, uid, self._counters, sdp_path)
            except ValueError as exc:
                self._release(channel)
                raise BridgeError("bad_request", str(exc)) from None
            forwards[(host, port)] = forward
            mix.add_output(("rtp", host, port), forward)
            return forward.sdp_path

    def stop_rtp_forward(self, channel, host, port):
        with self._lock:
            forward = self._forwards.get(channel, {}).pop((host, port), None)
            if forward is None:
                raise BridgeError("bad_request",
                                  f"channel {channel!r} is not forwarded to {host}:{port}")
            self._mixes[channel].remove_output(("rtp", host, port))
            self._release(channel)
        forward.close()

    # ------------------------------------------------------------ common

    def close(self):
        """Stop every output and mix."""
        with self._lock:
            publishers = [p for urls in self._publishers.values() for p in urls.values()]
            forwards = [f for fs in self._forwards.values() for f in fs.values()]
            mixes = list(self._mixes.values())
            self._publishers.clear()
            self._encoders.clear()
            self._forwards.clear()
            self._mixes.clear()
        for mix in mixes:
            mix.close()
        for output in publishers + forwards:
            output.close()

    def _mix_for(self, channel, outputs, limit, what):
        """The channel's mix (made if needed) after checking the channel may
        have one more output of ``outputs``; call with the lock held."""
        info = self._channel_info(channel)
        if info is None and channel not in self._mixes:
            raise BridgeError("unknown_channel", self._unknown(channel))
        mix = self._mixes.get(channel)
        if info or (mix is not None and mix.sealed):
            raise BridgeError("end_to_end_encrypted",
                              f"channel {channel!r} is encrypted end to end: the server "
                              f"cannot hear it, so it cannot mix it")
        if len(outputs.get(channel, {})) >= limit:
            raise BridgeError("too_many_outputs",
                              f"channel {channel!r} already has {limit} {what} (the most allowed)")
        if mix is None:
            mix = self._mixes[channel] = ChannelMix(channel, self._counters)
        return mix

    def _release(self, channel):
        """Close the channel's mix once it has no output; lock held."""
        if not self._publishers.get(channel) and not self._forwards.get(channel):
            self._publishers.pop(channel, None)
            self._forwards.pop(channel, None)
            self._asked_by_hosts.pop(channel, None)
            mix = self._mixes.pop(channel, None)
            if mix is not None:
                mix.close()

    def _set_transcoding(self, channel, config):
        self._transcoding[channel] = config
        encoder = self._encoders.get(channel)
        if encoder is not None:
            encoder.update(config)           # and its publishers

    @staticmethod
    def _unknown(channel):
        return (f"unknown channel {channel!r}: the server mixes only a channel that has "
                f"members (join it first)")

    def _report(self, url, state, reason):
        self.emit("on_rtmp_streaming_state_changed", url, state, reason)

    def emit(self, name, *args):
        """Call ``name(*args)`` on every handler that has it."""
        for handler in list(self._handlers):
            method = getattr(handler, name, None)
            if method is not None:
                method(*args)
