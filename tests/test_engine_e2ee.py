"""End-to-end media encryption through a real server on 127.0.0.1.

With ``enable_encryption(key)`` a host seals every Opus frame with the
channel key before it leaves; the server forwards and caches frames it
cannot open; listeners with the key hear the host, listeners without it (or
with another) hear silence and get ``on_encryption_error``, never noise.
"""

import numpy as np
import pytest
from engine_helpers import (CLEAN_TONE, Recorder, Session, band_amplitude, db, purity, rms,
                            stream, tone, window)
from stagevox.engine import make_decoder
from stagevox.engine.e2ee import FrameCryptoError, FrameDecryptor
from stagevox.engine.rtp import PT_SEALED_OPUS

KEY = "the channel passphrase"


def test_a_sealed_stream_is_heard_and_the_server_holds_only_sealed_frames():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        host.enable_encryption(KEY)
        listener.enable_encryption(KEY)
        got = stream({host: tone(440, 1.2, amplitude=0.2)}, [listener], 1.2)[listener][0]
        cached = s.server._channels["room"].streams[host.ssrc]
        frames = list(cached.frames.values())
        pt = cached.payload_type
    tail = window(got, 0.6, 1.2)
    assert abs(db(band_amplitude(tail, 440) / 0.2)) < 1.0
    assert purity(tail, 440) >= CLEAN_TONE
    # What the server holds is sealed: another key cannot open it; the channel
    # key, bound to the host's stream, opens it into Opus frames of 20 ms.
    assert pt == PT_SEALED_OPUS and len(frames) > 10
    with pytest.raises(FrameCryptoError):
        FrameDecryptor("another passphrase").decrypt(frames[-1],
                                                     metadata=host.ssrc.to_bytes(4, "big"))
    with pytest.raises(FrameCryptoError):               # bound to the stream's SSRC
        FrameDecryptor(KEY).decrypt(frames[-1], metadata=(host.ssrc ^ 1).to_bytes(4, "big"))
    opus = FrameDecryptor(KEY).decrypt(frames[-1], metadata=host.ssrc.to_bytes(4, "big"))
    assert make_decoder("opus").decode(opus).shape == (1, 960)


@pytest.mark.parametrize("listener_key,reason", [
    (None, "no_key"), ("a wrong passphrase", "decryption_failed")], ids=["no_key", "wrong_key"])
def test_without_the_key_a_listener_hears_silence_and_is_told(listener_key, reason):
    with Session() as s:
        host = s.join(1, "host")
        rec = Recorder()
        listener = s.join(2, "audience", handler=rec)
        host.enable_encryption(KEY)
        if listener_key is not None:
            listener.enable_encryption(listener_key)
        got = stream({host: tone(440, 1.0, amplitude=0.2)}, [listener], 1.0)[listener][0]
        errors = rec.of("on_encryption_error")
        received = listener.stats()["users"][1]["received"]
    assert received > 30                        # the packets came ...
    assert np.all(np.isfinite(got)) and rms(got) < 1e-4      # ... and nothing was played
    assert errors == [(1, reason)]              # told once, not per frame


def test_an_unsealed_stream_is_not_played_when_encryption_is_on():
    """With encryption on, plain frames could have been made by the server: not played."""
    with Session() as s:
        host = s.join(1, "host")
        rec = Recorder()
        listener = s.join(2, "audience", handler=rec)
        listener.enable_encryption(KEY)
        got = stream({host: tone(440, 1.0, amplitude=0.2)}, [listener], 1.0)[listener][0]
        errors = rec.of("on_encryption_error")
    assert rms(got) < 1e-4
    assert errors == [(1, "not_encrypted")]


def test_encryption_needs_the_opus_codec_and_a_real_key():
    with Session() as s:
        pcm = s.client(codec="pcm")
        with pytest.raises(ValueError, match="opus"):
            pcm.enable_encryption(KEY)
        c = s.client()
        with pytest.raises(ValueError, match="8"):
            c.enable_encryption("short")
