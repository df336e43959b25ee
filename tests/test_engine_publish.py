"""CDN push and RTP forward, read back by an independent client (PyAV/FFmpeg).

A real nginx with its RTMP module (``rtmp_server``) records every stream it
gets as FLV and writes HLS.  Two hosts stream, one speech panned left and one
440 Hz tone panned right; the channel's mix is pushed to nginx; the FLV
recording and the HLS playlist are decoded with PyAV and judged: codec, rate,
channels, duration against the time pushed (within 0.5 s), STOI of the left
channel against the speech sent (>= 0.9) and the right channel's frequency
(within 2 Hz of 440).  A second URL added and removed meanwhile leaves no gap
in the first (every 20 ms of the tone present).
"""

import signal
import socket
import threading
import time

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import require
from engine_helpers import (Session, delay_samples, peak_frequency, rms, stream, tone,
                            wait_until)
from live_session import align
from live_session import score as judge_speech
from rtmp_server import RtmpServer, find_nginx, free_port
from stagevox.dsp.errors import RefusedError
from stagevox import engine
from stagevox.engine import control, publish
from test_engine_cli import SECRET as CLI_SECRET
from test_engine_cli import START_S, cli_env, procs, run, start_server  # noqa: F401

RATE = 48000
PUSH_S = 6.0
TONE_HZ = 440.0
TRANSCODING = {"sample_rate": 44100, "channels": 2, "bitrate": 128000,
               "pans": {1: -1.0, 2: 1.0}}
#: Frames of the stream when the second URL is added and removed.
SECOND_ADD, SECOND_REMOVE = 150, 400
#: STOI of the speech read back against what the host sent, at least.
MIN_STOI = 0.9


class States:
    """Records ``on_rtmp_streaming_state_changed`` as ``(time, url, state, reason)``."""

    def __init__(self):
        self.events = []

    def on_rtmp_streaming_state_changed(self, url, state, reason):
        self.events.append((time.monotonic(), url, state, reason))

    def first(self, url, state):
        times = [t for t, u, s, _ in self.events if u == url and s == state]
        return times[0] if times else None

    def wait(self, url, state, timeout=10.0):
        assert wait_until(lambda: self.first(url, state) is not None, timeout), \
            f"{url} never {state}: {self.events}"
        return self.first(url, state)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    require(find_nginx() is not None, "nginx with libnginx-mod-rtmp is not installed")
    server = RtmpServer(tmp_path_factory.mktemp("nginx-rtmp")).start()
    yield server
    server.stop()


def planar(frame):
    """A decoded PyAV frame as float32 ``(channels, n)``."""
    x = frame.to_ndarray()
    channels = frame.layout.nb_channels
    return (x if frame.format.is_planar else x.reshape(-1, channels).T).astype(np.float32)


def decode(path, **open_kw):
    """``(codec name, rate, channels, float32 (channels, n))`` of the audio at ``path``."""
    with av.open(str(path), **open_kw) as container:
        st = container.streams.audio[0]
        frames = [planar(f) for f in container.decode(st)]
        return st.codec_context.name, st.rate, st.codec_context.channels, \
            np.concatenate(frames, axis=1)


def read_hls(path):
    # nginx-rtmp leaves the playlist live (no ENDLIST): read from its first
    # segment and stop when no new one comes within a second.
    return decode(path, format="hls", options={"live_start_index": "0"}, timeout=1.0)


@pytest.fixture(scope="module")
def pushed(nginx, speech):
    """Push the two hosts' channel to nginx ("main"), adding and removing
    "second" meanwhile; returns what is needed to judge the results."""
    states = States()
    main, second = nginx.url("main"), nginx.url("second")
    sent = speech[:int(PUSH_S * RATE)]
    with Session() as s:
        talker, singer = s.join(1, "host"), s.join(2, "host")
        s.server.register_event_handler(states)
        s.server.add_publish_stream_url("room", main, TRANSCODING)
        start = states.wait(main, "running")
        removed = []

        def on_frame(i):
            # From another thread, as an application would: a removal waits
            # for the stream's end, and this thread paces the hosts.
            if i == SECOND_ADD:
                s.server.add_publish_stream_url("room", second)
            elif i == SECOND_REMOVE:
                removed.append(time.monotonic())
                threading.Thread(target=s.server.remove_publish_stream_url,
                                 args=("room", second)).start()
        stream({talker: sent, singer: tone(TONE_HZ, PUSH_S)}, [], PUSH_S, on_frame)
        time.sleep(0.5)
        end = time.monotonic()
        s.server.remove_publish_stream_url("room", main)
        states.wait(main, "stopped")
        counters = dict(s.server.counters)
    return {"nginx": nginx, "states": states, "sent": sent, "pushed_s": end - start,
            "counters": counters, "second_removed": removed[0]}


def aligned_score(reference, received):
    """``(STOI, PESQ-WB, lags)`` of ``received`` against ``reference`` (both
    48 kHz): found roughly by one second of it, then aligned piece by piece
    as the jitter buffers' delay moves (``live_session.align``)."""
    lag, _ = delay_samples(reference[RATE // 2:3 * RATE // 2], received,
                           len(received) - RATE)
    start = max(0, lag - RATE // 2 - RATE // 5)
    aligned, lags = align(reference, received, start)
    return (*judge_speech(reference, aligned), lags + start)


def judge(codec, rate, channels, audio, pushed, what):
    """The checks every read-back passes; returns the speech's first lag, samples."""
    assert (codec, rate, channels) == ("aac", 44100, 2), what
    duration = audio.shape[1] / rate
    print(f"\n{what}: {duration:.2f} s read back, {pushed['pushed_s']:.2f} s pushed")
    assert abs(duration - pushed["pushed_s"]) <= 0.5, what
    # The jitter buffers' delay moves a little while they adapt: aligned
    # piece by piece (``live_session.align``), judged at 48 kHz.
    score, pesq, lags = aligned_score(pushed["sent"], soxr.resample(audio[0], rate, RATE))
    lag = int(lags[0] * rate / RATE)
    f = peak_frequency(audio[1, lag + rate:lag + 5 * rate], rate)
    print(f"{what}: speech STOI {score:.3f} PESQ-WB {pesq:.2f} (delay {lags.min() / RATE:.3f}"
          f"..{lags.max() / RATE:.3f} s), tone {f:.2f} Hz")
    assert score >= MIN_STOI, what
    assert abs(f - TONE_HZ) <= 2.0, what
    return lag


def test_recording_holds_the_mix_without_gap(pushed):
    codec, rate, channels, audio = decode(pushed["nginx"].recording("main"))
    lag = judge(codec, rate, channels, audio, pushed, "FLV recording")
    # The tone, 20 ms at a time, while the second URL came and went: no gap.
    tone_part = audio[1, lag + rate // 2:lag + int((PUSH_S - 0.5) * rate)]
    step = rate // 50
    levels = np.array([rms(tone_part[i:i + step])
                       for i in range(0, len(tone_part) - step, step)])
    worst = int(np.argmin(levels))
    assert levels[worst] >= 0.5 * np.median(levels), \
        f"a gap in the main stream: 20 ms at {levels[worst]:.4f} rms " \
        f"({0.5 + worst * 0.02:.2f} s into the tone), median {np.median(levels):.4f}"


def test_hls_playlist_holds_the_mix(pushed):
    judge(*read_hls(pushed["nginx"].playlist("main")), pushed, "HLS playlist")


def test_second_url_pushed_while_added(pushed):
    states = pushed["states"]
    url = pushed["nginx"].url("second")
    running, stopped = states.first(url, "running"), states.first(url, "stopped")
    assert running is not None and stopped is not None, states.events
    codec, rate, channels, audio = decode(pushed["nginx"].recording("second"))
    assert (codec, rate, channels) == ("aac", 44100, 2)
    pushed_s = pushed["second_removed"] - running
    print(f"\nsecond URL: {audio.shape[1] / rate:.2f} s read back, {pushed_s:.2f} s pushed")
    assert abs(audio.shape[1] / rate - pushed_s) <= 0.5
    assert pushed["counters"].get("mix_dropped", 0) == 0


def test_dropped_connection_is_retried_and_reported(tmp_path, speech):
    require(find_nginx() is not None, "nginx with libnginx-mod-rtmp is not installed")
    cdn = RtmpServer(tmp_path / "cdn").start()
    states = States()
    url = cdn.url("retry")
    try:
        with Session() as s:
            host = s.join(1, "host")
            s.server.register_event_handler(states)
            s.server.add_publish_stream_url("room", url)
            states.wait(url, "running")
            cdn.stop()
            stream({host: tone(TONE_HZ, 1.0)}, [], 1.0)
            lost = [e for e in states.events if e[2] == "recovering"]
            assert lost and lost[0][3] == "connection_lost", states.events
            cdn.start(port=cdn.port)
            assert wait_until(lambda: [e[2] for e in states.events][-1] == "running", 10.0), \
                states.events
            s.server.remove_publish_stream_url("room", url)
    finally:
        cdn.stop()
    assert [e[2] for e in states.events][-1] == "stopped"


def test_stalled_cdn_does_not_stall_the_channel(monkeypatch):
    """A CDN that takes the TCP connection and never answers: reported, tried
    again, and the channel's members hear each other all the while (the
    RTMP handshake runs in a worker process: in the server's process PyAV
    would hold the GIL through it)."""
    monkeypatch.setattr(publish, "IO_TIMEOUT_S", 1.0)
    states = States()
    with socket.socket() as stall:
        stall.bind(("127.0.0.1", 0))
        stall.listen(8)
        url = f"rtmp://127.0.0.1:{stall.getsockname()[1]}/live/stalled"
        with Session() as s:
            host, listener = s.join(1, "host"), s.join(2, "audience")
            s.server.register_event_handler(states)
            s.server.add_publish_stream_url("room", url)
            got = stream({host: tone(TONE_HZ, 3.0)}, [listener], 3.0)[listener][0]
            # Given up after IO_TIMEOUT_S and a second (later on a busy machine).
            assert wait_until(lambda: ("recovering", "connection_failed") in
                              [e[2:] for e in states.events], 5.0), states.events
            s.server.remove_publish_stream_url("room", url)
    assert states.events[-1][2:] == ("stopped", "removed")
    step = RATE // 50
    levels = np.array([rms(got[i:i + step]) for i in range(RATE, len(got) - step, step)])
    assert levels.min() >= 0.5 * np.median(levels), "the listener heard a gap"


def test_rtp_forward_is_read_by_ffmpeg(speech, tmp_path):
    sent = speech[:int(4.0 * RATE)]
    port = free_port()
    got = []

    with Session() as s:
        host = s.join(1, "host")
        s.join(2, "host")                # not forwarded: the forward asks for uid 1 only
        sdp = s.server.start_rtp_forward("room", "127.0.0.1", port, uid=1,
                                         sdp_path=tmp_path / "room.sdp")
        text = open(sdp).read()
        assert f"m=audio {port} RTP/AVP 111" in text and "opus/48000/2" in text

        def read():
            with av.open(sdp, format="sdp", timeout=(5.0, 1.0),
                         options={"protocol_whitelist": "file,udp,rtp"}) as c:
                st = c.streams.audio[0]
                got.append(st.codec_context.name)
                try:
                    for f in c.decode(st):
                        got.append(planar(f)[0])
                except av.error.ExitError:      # nothing more within the read timeout
                    pass
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        stream({host: sent}, [], 4.5)
        s.server.stop_rtp_forward("room", "127.0.0.1", port)
        reader.join(10.0)
        assert not reader.is_alive()
    assert got and got[0] == "opus"
    audio = np.concatenate(got[1:])
    assert audio.size >= 3.5 * RATE
    score, pesq, lags = aligned_score(sent, audio)
    print(f"\nRTP forward: STOI {score:.3f} PESQ-WB {pesq:.2f}, "
          f"delay {lags.min() / RATE:.3f}..{lags.max() / RATE:.3f} s")
    assert score >= MIN_STOI


# ------------------------------------------------------------------ bad input

def test_a_host_may_have_the_channel_pushed_only_where_the_operator_allows():
    """A host cannot make the server connect and send wherever it likes: only
    URLs under the server's ``publish_allow`` prefixes (none by default) are
    pushed for a host; a prefix must end its path with '/'."""
    with Session() as s:
        host = s.join(1, "host")
        with pytest.raises(RefusedError, match="--allow-publish") as refused:
            host.add_publish_stream_url("rtmp://127.0.0.1:1/live/x")
        assert refused.value.code == "publish_not_allowed"
    with Session(publish_allow=("rtmp://127.0.0.1:1/live/",)) as s:
        host = s.join(1, "host")
        for url in ("rtmp://10.0.0.1:1935/live/x", "rtmp://127.0.0.1:1/livex/y",
                    "rtmp://127.0.0.1:10/live/x"):
            with pytest.raises(RefusedError) as refused:
                host.add_publish_stream_url(url)
            assert refused.value.code == "publish_not_allowed", url
        assert s.server.publish_urls("room") == {}
        host.add_publish_stream_url("rtmp://127.0.0.1:1/live/x")
        assert list(s.server.publish_urls("room")) == ["rtmp://127.0.0.1:1/live/x"]
    for prefix in ("rtmp://cdn.example", "http://cdn.example/live/", "rtmp://u@cdn.example/l/"):
        with pytest.raises(ValueError, match="path ending in '/'"):
            engine.Server(secret="s", publish_allow=(prefix,))


def test_bad_requests_are_refused_clearly(speech):
    with Session(publish_allow=("rtmp://127.0.0.1:1/live/",)) as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        url = "rtmp://127.0.0.1:1/live/x"
        with pytest.raises(ValueError, match="unknown channel 'nowhere'"):
            s.server.add_publish_stream_url("nowhere", url)
        with pytest.raises(ValueError, match="scheme 'http'; valid: rtmp, rtmps"):
            s.server.add_publish_stream_url("room", "http://127.0.0.1/x")
        with pytest.raises(ValueError, match=r"bitrate must be an integer in 16000\.\.128000"):
            s.server.add_publish_stream_url("room", url, {"bitrate": 256000})
        with pytest.raises(ValueError, match=r"sample_rate must be one of \(32000, 44100"):
            s.server.update_transcoding("room", {"sample_rate": 22050})
        with pytest.raises(ValueError, match="unknown transcoding field"):
            s.server.update_transcoding("room", {"gain": 3})
        with pytest.raises(ValueError, match="must be an IP address"):
            s.server.start_rtp_forward("room", "example.com", 5004)
        with pytest.raises(ValueError, match="one unicast address"):
            s.server.start_rtp_forward("room", "224.0.0.1", 5004)
        with pytest.raises(ValueError, match="port must be an integer in 1..65535"):
            s.server.start_rtp_forward("room", "127.0.0.1", 0)
        # A listener may not have the channel pushed.
        with pytest.raises(RefusedError) as refused:
            listener.add_publish_stream_url(url)
        assert refused.value.code == "no_publish_privilege"
        # What the client checks, the server checks again (a forged request).
        with pytest.raises(RefusedError, match="scheme 'file'") as refused:
            host._request(90, control.PublishStream(90, "add", "file:///etc/passwd"), 3.0)
        assert refused.value.code == "bad_request"
        with pytest.raises(RefusedError, match="not pushed to") as refused:
            host._request(91, control.PublishStream(91, "remove", url), 3.0)
        # A host may not stop the pushes the server's owner set up.
        s.server.add_publish_stream_url("room", url)
        with pytest.raises(RefusedError, match="set up by the server, not by a host"):
            host.remove_publish_stream_url(url)
        s.server.remove_publish_stream_url("room", url)
        time.sleep(4.0)              # the host's request budget (4, one a second) fills again
        # Requests beyond the host's rate are refused.
        codes = []
        for k in range(5):
            try:
                host.add_publish_stream_url(f"rtmp://127.0.0.1:1/live/{k}")
                codes.append("ok")
            except RefusedError as exc:
                codes.append(exc.code)
        assert codes == ["ok"] * 4 + ["rate_limited"], codes
        # Nothing crashed, and the channel goes on: the listener hears the host.
        got = stream({host: tone(TONE_HZ, 1.5)}, [listener], 1.5)[listener]
        assert abs(peak_frequency(got[0, RATE // 2:]) - TONE_HZ) <= 2.0
        assert s.server.counters.get("periodic_errors", 0) == 0
        for k in range(4):
            s.server.remove_publish_stream_url("room", f"rtmp://127.0.0.1:1/live/{k}")


def test_end_to_end_encrypted_channel_is_not_mixed():
    states = States()
    url = "rtmp://127.0.0.1:1/live/x"
    with Session() as s:
        host = s.join(1, "host")
        s.server.register_event_handler(states)
        s.server.add_publish_stream_url("room", url)       # nothing listens there: retried
        stream({host: tone(TONE_HZ, 0.3)}, [], 0.3)
        # The host turns encryption on: the push it had stops with that reason.
        host.enable_encryption(b"k" * 32)
        stream({host: tone(TONE_HZ, 0.3)}, [], 0.3)
        assert wait_until(lambda: s.server._channel_sealed("room"))
        states.wait(url, "failure")
        assert states.events[-1][2:] == ("failure", "end_to_end_encrypted")
        with pytest.raises(ValueError, match="encrypted end to end") as refused:
            s.server.add_publish_stream_url("room", "rtmp://127.0.0.1:1/live/y")
        assert refused.value.code == "end_to_end_encrypted"
        with pytest.raises(ValueError, match="encrypted end to end"):
            s.server.start_rtp_forward("room", "127.0.0.1", 5004)


# ------------------------------------------------------------------ command line

def test_cli_server_and_host_push_to_the_cdn(nginx, procs, speech, tmp_path):
    """``stagevox server --publish room=URL`` pushes once the room has members;
    ``stagevox host --publish-url URL`` has the server push while it streams."""
    wav = tmp_path / "speech.wav"
    sf.write(str(wav), speech[:6 * RATE], RATE, subtype="PCM_16")
    sent = sf.read(str(wav), dtype="float32")[0]
    server, port = start_server(procs, "--publish", f"room={nginx.url('cli-server')}",
                                "--allow-publish", nginx.url(""))
    host = procs("host", "--server", f"127.0.0.1:{port}", "--server-key", server.key,
                 "--channel", "room", "--uid", 1,
                 "--token", engine.make_token(CLI_SECRET, "room", 1, "host"),
                 "--input", wav, "--publish-url", nginx.url("cli-host"), env=cli_env())
    status, _, err = host.finish(START_S + 10)
    assert status == 0, err
    assert f"the server pushes the channel to {nginx.url('cli-host')}" in err
    server.wait_for("stderr", f"publish {nginx.url('cli-server')}: running (ok)", 10)
    server.popen.send_signal(signal.SIGINT)
    assert server.finish(30)[0] == 0
    # Each push takes a moment to connect: the speech's last 3 s are judged.
    tail = sent[3 * RATE:]
    for name in ("cli-server", "cli-host"):
        codec, rate, channels, audio = decode(nginx.recording(name))
        assert (codec, rate, channels) == ("aac", 48000, 1), name
        score, _, _ = aligned_score(tail, audio[0])
        print(f"\n{name}: {audio.shape[1] / rate:.2f} s, speech STOI {score:.3f}")
        assert score >= MIN_STOI, name


@pytest.mark.parametrize("argv, words", [
    (["server", "--port", 0, "--publish", "room"], "--publish takes CHANNEL=URL"),
    (["server", "--port", 0, "--publish", "room=http://cdn/live"],
     "scheme 'http'; valid: rtmp, rtmps"),
    (["host", "--server", "127.0.0.1:9", "--channel", "room", "--uid", 1, "--token", "t",
      "--input", "x.wav", "--publish-url", "udp://cdn"], "--publish-url: the publish URL"),
])
def test_cli_bad_publish_options_exit_2(argv, words):
    status, _, err = run(*argv, env=cli_env(STAGEVOX_SECRET=CLI_SECRET))
    assert status == 2, err
    assert words in err
