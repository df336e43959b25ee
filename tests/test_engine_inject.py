"""Injecting an online stream into a channel: a file or URL everyone hears
as a host (``engine.inject``, ``stagevox inject``).

Real parts on 127.0.0.1: a server, a listener, and the stream served from a
file or by a local HTTP server (the standard library's) started in the test.
"""

import functools
import http.server
import socket
import threading

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
from engine_helpers import Recorder, Session, stream, token, wait_until
from live_session import align
from pystoi import stoi
from stagevox.dsp.errors import ParameterError
from stagevox.engine.inject import StreamInjector

SPEECH = slice(2 * 48000, 5 * 48000)        # 3 s of the bundled speech


class States:
    """Records ``on_state`` calls."""

    def __init__(self):
        self.seen = []

    def __call__(self, state, reason):
        self.seen.append((state, reason))

    def states(self):
        return [s for s, _ in self.seen]


def stereo_speech_file(path, speech):
    x = speech[SPEECH]
    sf.write(str(path), np.stack([x, x], axis=1), 48000, subtype="PCM_16")
    return x


class FileServer:
    """A local HTTP server for ``folder``, on a port fixed at creation (so a
    URL can be handed out before the server listens)."""

    def __init__(self, folder):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.httpd = None

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self):
        handler = functools.partial(_QuietHandler, directory=str(self.folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def injector(s, url, states, **kw):
    return StreamInjector(s.server.address, s.server.public_key, s.channel, 666,
                          token(s.channel, 666), url, on_state=states, **kw)


def test_a_file_is_heard_by_the_channel_and_the_injector_stops_at_its_end(tmp_path, speech):
    """A stereo WAV injected as uid 666: the listener is told 666 joined and
    hears the speech (STOI >= 0.95 against the file); the states go
    connecting -> playing -> stopped (finished), and 666 leaves."""
    path = tmp_path / "show.wav"
    x = stereo_speech_file(path, speech)
    with Session() as s:
        rec = Recorder()
        listener = s.join(2, "audience", handler=rec)
        states = States()
        inj = injector(s, str(path), states).start()
        assert rec.wait_for("on_user_joined", (666,), timeout=10) is not None
        got = stream({}, [listener], 3.8)[listener][0]
        assert inj.wait(5)
        assert rec.wait_for("on_user_offline", (666, "quit")) is not None
    aligned, lags = align(x, got, 0)
    score = stoi(ss.resample_poly(x, 1, 3), ss.resample_poly(aligned, 1, 3), 16000)
    print(f"\ninjected file: STOI {score:.3f}, delay from the listener's first pull "
          f"{np.median(lags) / 48:.0f} ms")
    assert score >= 0.95
    assert states.states() == ["connecting", "connecting", "playing", "stopped"]
    assert states.seen[-1] == ("stopped", "finished")
    assert 2.9 <= inj.played_s <= 3.2


def test_an_unreachable_url_is_retried_with_back_off_and_played_once_it_answers(tmp_path,
                                                                              speech):
    """The URL's HTTP server is not up: the try fails (network_error) and is
    retried after 0.2 s, then 0.4 s; once the server is up the stream plays.
    Meanwhile a host in the channel is heard without a break."""
    stereo_speech_file(tmp_path / "late.wav", speech)
    files = FileServer(tmp_path)
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        states = States()
        inj = injector(s, files.url("late.wav"), states, retry_first_s=0.2).start()
        t = np.arange(48000 * 2) / 48000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        try:
            got = stream({host: tone}, [listener], 2.0)[listener][0]
            retries = [r for st, r in states.seen if st == "retrying"]
            files.start()
            assert wait_until(lambda: "playing" in states.states(), timeout=10)
        finally:
            inj.stop()
            files.stop()
    assert retries[:2] == ["network_error; next try in 0.2 s",
                           "network_error; next try in 0.4 s"], states.seen
    assert states.seen[-1] == ("stopped", "removed")
    # The host was heard throughout: no 10 ms frame of the last 1.5 s silent.
    level = np.sqrt(np.mean(got[-72000:].reshape(-1, 480) ** 2, axis=1))
    assert level.min() > 0.1 * 0.3 / np.sqrt(2), level.min()


def test_a_missing_file_gives_up_after_the_retries_and_the_channel_goes_on(tmp_path):
    """A file that is not there: two tries, one retry, then the injector
    stops and leaves; the server drops uid 666 once its leave arrives (the
    leave is a datagram, so the check waits for it, a few seconds at most)."""
    with Session() as s:
        states = States()
        inj = injector(s, str(tmp_path / "nothing.mp3"), states, max_retries=2,
                       retry_first_s=0.05).start()
        assert inj.wait(10)
        assert wait_until(lambda: s.server.members("room") == {}, timeout=3), \
            s.server.members("room")
    assert states.seen[-1][0] == "stopped"
    assert states.seen[-1][1].startswith("gave_up after 2 failed tries (not_found)")
    assert [st for st, _ in states.seen].count("retrying") == 1


def test_a_refused_join_stops_at_once(tmp_path):
    with Session() as s:
        states = States()
        inj = StreamInjector(s.server.address, s.server.public_key, "room", 666,
                             token("room", 666, "audience"), str(tmp_path / "x.wav"),
                             on_state=states).start()
        assert inj.wait(10)
    assert states.seen[-1][0] == "stopped" and "no_publish_privilege" in states.seen[-1][1]


@pytest.mark.parametrize("kw, words", [({"url": ""}, "url"), ({"volume": 101}, "volume")])
def test_bad_arguments_name_themselves(kw, words):
    args = {"url": "x.wav", "volume": 100} | kw
    with pytest.raises(ParameterError, match=words):
        StreamInjector(("127.0.0.1", 9), b"k" * 32, "room", 666, "t", args["url"],
                       volume=args["volume"])


def test_the_server_injects_a_url_reports_its_states_and_removes_it(tmp_path, speech):
    """``Server.add_inject_stream_url`` (the server makes the token): the
    listener is told 666 joined and hears it; the same URL twice into the
    channel is refused; removing it makes 666 leave, with the states
    connecting -> playing -> stopped (removed) reported to the server's
    handler; removing it again names the problem."""
    path = tmp_path / "show.wav"
    stereo_speech_file(path, speech)
    seen = []

    class Handler:
        def on_inject_stream_state_changed(self, channel, url, state, reason):
            seen.append((channel, url, state, reason))

    with Session() as s:
        s.server.register_event_handler(Handler())
        rec = Recorder()
        listener = s.join(2, "audience", handler=rec)
        s.server.add_inject_stream_url("room", str(path))
        assert rec.wait_for("on_user_joined", (666,), timeout=10) is not None
        with pytest.raises(ValueError, match="injected into channel 'room' already"):
            s.server.add_inject_stream_url("room", str(path))
        got = stream({}, [listener], 1.5)[listener][0]
        assert s.server.inject_stream_urls("room") == {str(path): "playing"}
        s.server.remove_inject_stream_url("room", str(path))
        assert rec.wait_for("on_user_offline", (666, "quit")) is not None
        with pytest.raises(ValueError, match="not injected"):
            s.server.remove_inject_stream_url("room", str(path))
    assert np.sqrt(np.mean(got[-48000:] ** 2)) > 0.01
    assert [(c, u) for c, u, _, _ in seen] == [("room", str(path))] * len(seen)
    assert [st for _, _, st, _ in seen] == ["connecting", "connecting", "playing", "stopped"]
    assert seen[-1][3] == "removed"


def test_a_token_made_by_a_function_is_renewed_before_it_expires(tmp_path, speech):
    """The injector's first token expires in 33 s; the server warns at 30 s
    left, and the injector gives it a fresh token made by the function
    (valid an hour), so its member stays with the new expiry."""
    path = tmp_path / "long.wav"
    x = np.resize(speech[SPEECH], 6 * 48000)
    sf.write(str(path), np.stack([x, x], axis=1), 48000, subtype="PCM_16")
    made = []

    def make():
        made.append(token("room", 666, expire_s=33 if not made else 3600))
        return made[-1]

    with Session() as s:
        states = States()
        inj = StreamInjector(s.server.address, s.server.public_key, "room", 666, make, str(path),
                             on_state=states).start()
        try:
            assert wait_until(lambda: inj.renewals == 1, timeout=8), states.seen
            assert s.server.members("room") == {666: "host"}
        finally:
            inj.stop()
    assert len(made) == 2
