"""The receiving half of a client, one ``Receiver`` per remote host: its
jitter buffer, the decoder its packets call for, end-to-end decryption, and
resampling to the client's rate.  No I/O.
"""

import math
import threading

import numpy as np

from .codec import make_decoder
from .jitter import JitterBuffer
from .rtp import CLOCK_RATE, PT_L16, PT_OPUS, PT_RED, PT_SEALED_OPUS

_CODEC_OF = {PT_OPUS: "opus", PT_L16: "pcm", PT_SEALED_OPUS: "opus"}


class _SealedDecoder:
    """A decoder for frames sealed end to end: unseals each with ``decryptor``
    (``e2ee.FrameDecryptor``; None when this client has no key), bound to the
    stream's ``ssrc``, and decodes it.  A frame that cannot be unsealed raises, so the jitter buffer
    conceals it (silence from a decoder that never played): never noise.
    ``on_failure(reason)`` hears of it ("no_key" or "decryption_failed")."""

    def __init__(self, decoder, decryptor, on_failure, ssrc=0):
        self.inner = decoder
        self.decryptor = decryptor
        self.metadata = ssrc.to_bytes(4, "big")
        self.on_failure = on_failure
        self.channels = decoder.channels
        self.has_fec = getattr(decoder, "has_fec", False)

    def _open(self, payload):
        if self.decryptor is None:
            self.on_failure("no_key")
            raise ValueError("a sealed frame and no key to open it")
        try:
            return self.decryptor.decrypt(payload, metadata=self.metadata)
        except ValueError:
            self.on_failure("decryption_failed")
            raise

    def decode(self, payload):
        return self.inner.decode(self._open(payload))

    def decode_fec(self, next_payload, frame_samples):
        return self.inner.decode_fec(self._open(next_payload), frame_samples)

    def conceal(self, frame_samples):
        return self.inner.conceal(frame_samples)

    def reset(self):
        self.inner.reset()


class _RefusingDecoder(_SealedDecoder):
    """With end-to-end encryption on, frames that come unsealed are not played
    (the server could have made them)."""

    def _open(self, payload):
        self.on_failure("not_encrypted")
        raise ValueError("an unsealed frame while end-to-end encryption is on")


class _StreamLayout:
    """An Opus decoder with as many channels as the stream has, giving the
    listener's ``channels``.

    The stream's channel count is the stereo flag of each packet's TOC byte
    (RFC 6716 section 3.1), so it follows a host that changes its audio
    profile, with no control message.  Decoding a mono stream in a stereo
    libopus decoder would be right for packets but not for concealment,
    which then differs between the channels (a mono voice heard in stereo
    would wander between the ears through each loss); so the decoder is made
    for the stream, and its output is copied to both channels or mixed down.
    """

    has_fec = True

    def __init__(self, channels):
        self.channels = channels
        self.stream_channels = channels
        self.inner = make_decoder("opus", channels)

    def _follow(self, payload):
        stream_channels = 2 if payload and payload[0] & 0x04 else 1
        if stream_channels != self.stream_channels:
            self.inner = make_decoder("opus", stream_channels)
            self.stream_channels = stream_channels

    def _layout(self, x):
        if x.shape[0] == self.channels:
            return x
        if self.channels == 2:
            return np.repeat(x, 2, axis=0)
        return x.mean(axis=0, keepdims=True, dtype=np.float32)

    def decode(self, payload):
        self._follow(payload)
        return self._layout(self.inner.decode(payload))

    def decode_fec(self, next_payload, frame_samples):
        self._follow(next_payload)
        return self._layout(self.inner.decode_fec(next_payload, frame_samples))

    def conceal(self, frame_samples):
        return self._layout(self.inner.conceal(frame_samples))

    def reset(self):
        self.inner.reset()


def _decoder(codec, channels):
    """The decoder of a remote stream for a listener with ``channels``."""
    return _StreamLayout(channels) if codec == "opus" else make_decoder(codec, channels)


class _Resampled:
    """Exactly-n reads at the client's rate from a source at 48 kHz."""

    def __init__(self, channels, rate):
        import soxr
        self.rate = rate
        self.stream = soxr.ResampleStream(CLOCK_RATE, rate, channels, dtype="float32",
                                          quality="HQ")
        self.fifo = np.zeros((channels, 0), np.float32)

    def read(self, n, source):
        while self.fifo.shape[1] < n:
            need = max(480, math.ceil((n - self.fifo.shape[1]) * CLOCK_RATE / self.rate) + 64)
            block = source(need)
            y = self.stream.resample_chunk(np.ascontiguousarray(block.T)).T
            self.fifo = np.concatenate([self.fifo, y.astype(np.float32)], axis=1)
        out, self.fifo = self.fifo[:, :n], self.fifo[:, n:]
        return out


class Receiver:
    """A remote host as heard here.

    ``channels``/``sample_rate``: what ``pull`` returns.  ``codec``: the
    decoder to start with; the first packet's payload type picks the real
    one.  ``decryptor``: an ``e2ee.FrameDecryptor`` when end-to-end
    encryption is on.  ``on_crypto_failure(reason)`` is called when a frame
    cannot be opened.  ``put`` runs on the network thread, ``pull`` on the
    playback thread; a lock keeps them apart.
    """

    def __init__(self, uid, ssrc, channels, sample_rate, min_delay_ms, max_delay_ms, codec,
                 decryptor=None, on_crypto_failure=None):
        self.uid = uid
        self.ssrc = ssrc
        self.channels = channels
        self.sample_rate = sample_rate
        self.jb = JitterBuffer(_decoder(codec, channels), min_delay_ms=min_delay_ms,
                               max_delay_ms=max_delay_ms)
        self.codec = codec
        self.decryptor = decryptor
        self.on_crypto_failure = on_crypto_failure or (lambda reason: None)
        self._pt = None                      # the payload type the decoder was chosen for
        self.lock = threading.Lock()
        self.muted = False
        self.volume = 1.0
        self.pan = 0.0
        self.gain = 1.0
        self._resampler = None

    def put(self, packet, now):
        """Take one RTP packet of this host's."""
        pt = packet.payload_type
        if pt == PT_RED and packet.payload:
            pt = packet.payload[0] & 0x7F          # the first block's payload type
        with self.lock:
            if pt != self._pt:
                self._match_codec(pt)
            self.jb.put(packet, now)

    def _match_codec(self, pt):
        """Decode the stream with the codec its packets name (hosts and
        listeners need not have chosen the same one; a host may turn
        end-to-end encryption on or off while it streams)."""
        codec = _CODEC_OF.get(pt)
        if codec is None:
            return
        decoder = _decoder(codec, self.channels)
        if pt == PT_SEALED_OPUS:
            decoder = _SealedDecoder(decoder, self.decryptor, self.on_crypto_failure, self.ssrc)
        elif self.decryptor is not None:
            decoder = _RefusingDecoder(decoder, None, self.on_crypto_failure)
        self.jb.decoder = decoder
        self.codec = codec
        self._pt = pt

    def pull(self, n, now):
        """The next ``n`` samples at the client's rate, ``(channels, n)``."""
        def source(k):
            with self.lock:
                return self.jb.pull(k, now)
        if self.sample_rate == CLOCK_RATE:
            return source(n)
        if self._resampler is None:
            self._resampler = _Resampled(self.channels, self.sample_rate)
        return self._resampler.read(n, source)

    def nacks(self, now, rtt_s):
        with self.lock:
            return self.jb.nacks(now, rtt_s)

    def report(self):
        with self.lock:
            return self.jb.report()

    def summary(self, now):
        with self.lock:
            return self.jb.summary(now)
