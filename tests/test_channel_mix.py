"""The pieces of the server's media bridges that need no network: transcoding
settings, the mix-down, URL and address checks, the SDP text, and a channel
mix fed RTP packets directly (engine.channel_mix, publish, rtp_forward)."""

import collections
import struct
import time

import numpy as np
import pytest
from engine_helpers import peak_frequency, tone
from stagevox.engine import codec
from stagevox.engine.channel_mix import (FRAME_SAMPLES, QUEUE_PACKETS, ChannelMix, Transcoding,
                                          mix_down)
from stagevox.engine.publish import check_url
from stagevox.engine.publish_cli import parse_publish
from stagevox.engine.publish_worker import RECORD
from stagevox.engine.rtp import PT_OPUS, RtpPacket
from stagevox.engine.rtp_forward import check_address, sdp_text


@pytest.mark.parametrize("config, words", [
    ({"sample_rate": 22050}, "sample_rate must be one of (32000, 44100, 48000) Hz, got 22050"),
    ({"channels": 3}, "channels must be 1 or 2, got 3"),
    ({"bitrate": 128001}, "bitrate must be an integer in 16000..128000 bit/s, got 128001"),
    ({"bitrate": 64000.0}, "bitrate must be an integer"),
    ({"volumes": {1: 101}}, "volumes[1] must be in 0..100, got 101"),
    ({"volumes": {-1: 50}}, "volumes: uid must be an integer in 0..4294967295, got -1"),
    ({"pans": {1: -1.5}}, "pans[1] must be in -1..1, got -1.5"),
    ({"pans": [1]}, "pans must be a dict {uid: value}, got list"),
    ({"gain": 1}, "unknown transcoding field(s) ['gain']; valid: ['bitrate', 'channels',"),
])
def test_transcoding_errors_name_the_field_and_range(config, words):
    with pytest.raises(ValueError) as e:
        Transcoding.of(config)
    assert words in str(e.value)


def test_mix_down_matches_a_plain_sum(rng):
    """Per-user volume and pan (a balance: the far side fades to nothing at
    +-1) against the same arithmetic written out with NumPy."""
    frames = {uid: rng.uniform(-0.3, 0.3, FRAME_SAMPLES).astype(np.float32) for uid in (1, 2, 3)}
    t = Transcoding(channels=2, volumes={1: 50, 3: 0}, pans={1: -1.0, 2: 0.5})
    expected_left = 0.5 * frames[1] + 0.5 * frames[2]
    expected_right = 1.0 * frames[2]
    out = mix_down(frames, t)
    assert out.shape == (2, FRAME_SAMPLES) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected_left, atol=1e-7)
    np.testing.assert_allclose(out[1], expected_right, atol=1e-7)
    mono = mix_down(frames, Transcoding(volumes={2: 25}))
    np.testing.assert_allclose(mono[0], frames[1] + 0.25 * frames[2] + frames[3], atol=1e-7)
    only = mix_down(frames, t, only_uid=3)         # one user alone, whatever its volume
    np.testing.assert_array_equal(only[0], frames[3])
    loud = mix_down({1: np.full(FRAME_SAMPLES, 0.8, np.float32),
                     2: np.full(FRAME_SAMPLES, 0.8, np.float32)}, Transcoding())
    assert loud.max() == 1.0                        # clipped, never beyond full scale


@pytest.mark.parametrize("url, words", [
    ("http://cdn/live/a", "scheme 'http'; valid: rtmp, rtmps"),
    ("rtmp:///live/a", "names no host"),
    ("rtmp://cdn/live/a b", "spaces or control characters"),
    ("rtmp://cdn/" + "a" * 1024, "longer than 1024 bytes"),
    (b"rtmp://cdn/a", "must be a string, got bytes"),
])
def test_bad_urls_are_named(url, words):
    with pytest.raises(ValueError, match=words):
        check_url(url)
    assert check_url("rtmps://cdn.example:443/live/key") == "rtmps://cdn.example:443/live/key"


@pytest.mark.parametrize("host, port, words", [
    ("localhost", 5004, "must be an IP address"),
    ("239.1.1.1", 5004, "one unicast address"),
    ("0.0.0.0", 5004, "one unicast address"),
    ("255.255.255.255", 5004, "one unicast address"),
    ("127.0.0.1", 70000, "port must be an integer in 1..65535, got 70000"),
])
def test_rtp_forward_goes_only_where_asked(host, port, words):
    with pytest.raises(ValueError, match=words):
        check_address(host, port)
    assert check_address("::1", 5004) == ("::1", 5004)


def test_sdp_names_the_address_and_opus():
    text = sdp_text("127.0.0.1", 5004, 1, "stagevox mix of 'room'")
    lines = text.split("\r\n")
    assert "c=IN IP4 127.0.0.1" in lines and "m=audio 5004 RTP/AVP 111" in lines
    assert "a=rtpmap:111 opus/48000/2" in lines       # RFC 7587: always /2
    assert "a=fmtp:111 stereo=0; sprop-stereo=0" in lines
    assert "c=IN IP6 ::1" in sdp_text("::1", 5004, 1, "x")


def test_publish_option_form():
    # The first "=" ends the channel: a URL may hold more (a stream key).
    assert parse_publish(["room=rtmp://cdn/live/a", "b=rtmp://x/live?key=k"]) == [
        ("room", "rtmp://cdn/live/a"), ("b", "rtmp://x/live?key=k")]
    with pytest.raises(ValueError, match="--publish takes CHANNEL=URL"):
        parse_publish(["=rtmp://cdn/live"])


class Collect:
    def __init__(self):
        self.frames = []

    def feed(self, frames):
        self.frames.append(dict(frames))


def test_channel_mix_decodes_each_host(speech):
    """Opus packets offered as the server's loop would: every host is decoded
    into 10 ms frames for the outputs; a full queue drops and counts."""
    counters = collections.Counter()
    mix = ChannelMix("room", counters)
    out = Collect()
    mix.add_output("test", out)
    encoder = codec.OpusEncoder(application="audio", bitrate=64000)
    x = tone(440.0, 1.0)
    step = encoder.frame_samples
    try:
        t0 = time.monotonic()
        for k in range(len(x) // step):
            delay = t0 + k * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            packet = RtpPacket(payload_type=PT_OPUS, sequence_number=k, timestamp=k * step,
                               ssrc=7, payload=encoder.encode(x[k * step:(k + 1) * step]))
            mix.offer(5, 7, packet, time.monotonic())
        time.sleep(0.2)
    finally:
        mix.close()
    heard = np.concatenate([f[5] for f in out.frames if 5 in f])
    assert len(heard) >= 0.8 * len(x)
    assert abs(peak_frequency(heard[len(heard) // 4:]) - 440.0) <= 2.0
    assert counters["mix_dropped"] == 0 and counters["mix_errors"] == 0
    # The queue is bounded: offering faster than the worker takes drops and counts.
    full = ChannelMix("full", counters)
    full.close()
    for k in range(QUEUE_PACKETS + 10):
        full.offer(5, 7, packet, 0.0)
    assert counters["mix_dropped"] == 10


class Taker:
    """A publisher as the channel encoder sees it: a state and ``send``."""

    def __init__(self, state="running"):
        self.state = state
        self.packets = []

    def send(self, settings, data, packets):
        """Split the block of records back into ``(settings, pts, packet)``."""
        head = struct.calcsize(RECORD)
        got = []
        while data:
            pts, size = struct.unpack(RECORD, data[:head])
            got.append((settings, pts, data[head:head + size]))
            data = data[head + size:]
        assert len(got) == packets
        self.packets += got

    def update(self, transcoding):
        pass


def test_channel_encoder_encodes_once_for_every_running_publisher(rng):
    """One AAC encoding, the same packets to each running publisher (none to
    one that is not running), which PyAV decodes back to the mix."""
    import av
    from stagevox.engine.publish import ChannelEncoder
    t = Transcoding(sample_rate=48000, channels=2, bitrate=128000, pans={1: -1.0, 2: 1.0})
    encoder = ChannelEncoder(t)
    a, b, idle = Taker(), Taker(), Taker(state="connecting")
    for url, taker in (("a", a), ("b", b), ("idle", idle)):
        encoder.add(url, taker)
    n = np.arange(50 * FRAME_SAMPLES)
    left = (0.3 * np.sin(2 * np.pi * 440 * n / 48000)).astype(np.float32)
    right = (0.2 * np.sin(2 * np.pi * 1000 * n / 48000)).astype(np.float32)
    for k in range(50):                          # in batches of 5 frames, as the mix does
        piece = slice(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)
        encoder.feed({1: left[piece], 2: right[piece]})
        if k % 5 == 4:
            encoder.flush()
    assert a.packets and a.packets == b.packets and not idle.packets
    assert {p[0] for p in a.packets} == {(48000, 2, 128000)}
    ctx = av.CodecContext.create("aac", "r")
    ctx.sample_rate, ctx.layout = 48000, "stereo"
    ctx.extradata = encoder._context.extradata
    out = []
    for _, pts, data in a.packets:
        packet = av.Packet(data)
        packet.pts = pts
        out += [f.to_ndarray() for f in ctx.decode(packet)]
    y = np.concatenate(out, axis=1)[:, 1024:]          # the encoder's priming
    middle = slice(4800, 4800 + 24000)
    for channel, x, f in ((0, left, 440), (1, right, 1000)):
        assert abs(peak_frequency(y[channel, middle]) - f) <= 2.0
        assert np.std(y[channel, middle]) == pytest.approx(np.std(x), rel=0.05)
    encoder.remove("a")
    assert set(encoder.publishers) == {"b", "idle"}
