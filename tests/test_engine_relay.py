"""Channel media relay (co-hosting, PK): a host heard in other channels, on
this server and on another one (origin to edge).

Real servers and clients on 127.0.0.1; speech is judged with STOI after the
piece-wise alignment of ``live_session.align``, which also gives the delay
of each path (printed: the relay's cost is the difference).
"""

import numpy as np
import pytest
import scipy.signal as ss
from engine_helpers import SECRET, Recorder, Session, stream, token, wait_until
from live_session import align
from pystoi import stoi
from stagevox import engine
from stagevox.dsp.errors import ParameterError
from stagevox.engine.media_relay import MAX_DESTINATIONS, RelayDestination

SPEECH = slice(2 * 48000, 6 * 48000)        # 4 s of the bundled speech
TONE_RMS = 0.3 / np.sqrt(2)


def heard(reference, got, lead):
    """(STOI, median delay in ms) of ``got`` (mono, pulled) against ``reference``
    pushed from sample ``lead`` on."""
    aligned, lags = align(reference, got, lead)
    score = stoi(ss.resample_poly(reference, 1, 3), ss.resample_poly(aligned, 1, 3), 16000)
    return score, float(np.median(lags)) / 48.0


def speech_after(speech, lead_s=1.0):
    """1 s of silence, then the speech: the relay's join settles meanwhile."""
    return np.concatenate([np.zeros(int(lead_s * 48000), np.float32), speech[SPEECH]])


def test_a_host_is_heard_in_a_second_channel_and_the_relay_reports_its_states(speech):
    """Host 1 in channel "a" relays into channel "b" as uid 1001 (PK).  A
    listener of "b" is told that 1001 joined and hears the host's speech as
    well as a listener of "a" does (STOI >= 0.95 each); the relay's events go
    connecting -> running, then idle at the stop, and 1001 leaves "b"."""
    with Session(channel="a") as s:
        rec = Recorder()
        host = s.join(1, "host", handler=rec)
        listener_a = s.join(2, "audience")
        in_b = Recorder()
        listener_b = s.join(3, "audience", channel="b", handler=in_b)
        host.start_channel_media_relay([RelayDestination("b", 1001, token("b", 1001))])
        assert rec.wait_for("on_channel_media_relay_state_changed", ("running", "b")) is not None
        assert rec.of("on_channel_media_relay_state_changed")[0] == ("connecting", "b")
        assert in_b.wait_for("on_user_joined", (1001,)) is not None
        signal = speech_after(speech)
        got = stream({host: signal}, [listener_a, listener_b], len(signal) / 48000 + 0.5)
        score_a, delay_a = heard(speech[SPEECH], got[listener_a][0], 48000)
        score_b, delay_b = heard(speech[SPEECH], got[listener_b][0], 48000)
        print(f"\nchannel a: STOI {score_a:.3f}, delay {delay_a:.0f} ms; relayed to b: "
              f"STOI {score_b:.3f}, delay {delay_b:.0f} ms (relay adds {delay_b - delay_a:.0f} ms)")
        assert score_a >= 0.95 and score_b >= 0.95
        assert listener_b.remote_users() == [1001]
        assert s.server.members("b") == {3: "audience", 1001: "host"}
        host.stop_channel_media_relay()
        assert rec.wait_for("on_channel_media_relay_state_changed", ("idle", "stopped"))
        assert in_b.wait_for("on_user_offline", (1001, "quit")) is not None


def test_an_origin_feeds_an_edge_server_whose_listeners_hear_the_channel(speech):
    """Two servers.  The host on the origin relays its channel "show" into
    "show" on the edge (another address and key); a listener of the edge
    hears the host (STOI >= 0.95).  Printed: the delay on the origin and
    through the edge."""
    edge = engine.Server(secret=SECRET)
    edge.start()
    try:
        with Session(channel="show") as s:
            rec = Recorder()
            host = s.join(1, "host", handler=rec)
            origin_listener = s.join(2, "audience")
            edge_listener = engine.Client()
            edge_listener.join_channel(edge.address, "show", 50, token("show", 50, "audience"),
                                       "audience", server_key=edge.public_key)
            try:
                host.start_channel_media_relay([RelayDestination(
                    "show", 1, token("show", 1), server_address=edge.address,
                    server_key=edge.public_key_text)])
                assert rec.wait_for("on_channel_media_relay_state_changed",
                                    ("running", "show")) is not None
                signal = speech_after(speech)
                got = stream({host: signal}, [origin_listener, edge_listener],
                             len(signal) / 48000 + 0.5)
                assert edge.members("show") == {1: "host", 50: "audience"}
            finally:
                edge_listener.leave_channel()
            score_o, delay_o = heard(speech[SPEECH], got[origin_listener][0], 48000)
            score_e, delay_e = heard(speech[SPEECH], got[edge_listener][0], 48000)
            print(f"\norigin: STOI {score_o:.3f}, delay {delay_o:.0f} ms; edge: STOI "
                  f"{score_e:.3f}, delay {delay_e:.0f} ms (the hop adds {delay_e - delay_o:.0f} ms)")
            assert score_o >= 0.95 and score_e >= 0.95
    finally:
        edge.stop()


def test_pause_update_and_a_failing_destination():
    """The relay into "b" runs; ``update`` adds "c" (the listener of "b" keeps
    hearing the tone throughout, never silent for a 10 ms frame) and a "d"
    whose token is bad: "d" is reported as a failure naming the channel and
    the server's reason, while "b" and "c" go on.  ``pause_all`` stops the
    packets into both; ``resume_all`` brings them back."""
    with Session(channel="a") as s:
        rec = Recorder()
        host = s.join(1, "host", handler=rec)
        lb = s.join(3, "audience", channel="b")
        lc = s.join(4, "audience", channel="c")
        host.start_channel_media_relay([RelayDestination("b", 1001, token("b", 1001))])
        assert rec.wait_for("on_channel_media_relay_state_changed", ("running", "b"))
        t = np.arange(48000 * 6) / 48000
        signal = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        marks = {}

        def on_frame(i):
            if i == 50:
                host.update_channel_media_relay([
                    RelayDestination("b", 1001, token("b", 1001)),
                    RelayDestination("c", 1002, token("c", 1002)),
                    RelayDestination("d", 1003, token("d", 1003, "audience"))])
            if i == 250:
                marks["before_pause"] = (lb.stats()["received"], lc.stats()["received"])
                host.pause_all_channel_media_relay()
            if i == 300:
                marks["paused"] = (lb.stats()["received"], lc.stats()["received"])
            if i == 400:
                marks["stopped"] = (lb.stats()["received"], lc.stats()["received"])
                host.resume_all_channel_media_relay()
            return False

        got = stream({host: signal}, [lb, lc], 5.5, on_frame=on_frame)
        events = rec.of("on_channel_media_relay_state_changed")
        failures = [reason for state, reason in events if state == "failure"]
        assert failures and failures[-1].startswith("d: ") and "host" in failures[-1]
        assert sorted(ch for _, ch in host._relay.destinations()) == ["b", "c"]
        # Paused: nothing new arrives (what was under way at the pause aside).
        assert marks["stopped"][0] - marks["paused"][0] == 0
        assert marks["stopped"][1] - marks["paused"][1] == 0
        assert marks["paused"][1] > 0
        # Resumed: both hear the tone again at the end.
        end_b, end_c = got[lb][0, -48000:], got[lc][0, -48000:]
        assert min(np.sqrt(np.mean(end_b ** 2)), np.sqrt(np.mean(end_c ** 2))) > 0.7 * TONE_RMS
        # No gap (silence) in "b" while "c" and "d" were added (frames 50-250);
        # a busy machine may make the jitter buffer conceal a little.
        level = np.sqrt(np.mean(got[lb][0, 60 * 480:240 * 480].reshape(-1, 480) ** 2, axis=1))
        assert level.min() > 0.1 * TONE_RMS, level.min()


def test_refusals():
    """Only a host in a channel may relay; at most six destinations, none
    twice, not the source's own channel, each a RelayDestination; bad fields
    name themselves."""
    with Session(channel="a") as s:
        listener = s.join(2, "audience")
        dest = RelayDestination("b", 1001, token("b", 1001))
        with pytest.raises(RuntimeError, match="only a host"):
            listener.start_channel_media_relay([dest])
        with pytest.raises(RuntimeError, match="channel"):
            engine.Client().start_channel_media_relay([dest])
        host = s.join(1, "host")
        too_many = [RelayDestination(f"c{i}", 1001, token(f"c{i}", 1001))
                    for i in range(MAX_DESTINATIONS + 1)]
        with pytest.raises(ParameterError, match="1 to 6"):
            host.start_channel_media_relay(too_many)
        with pytest.raises(ParameterError, match="twice"):
            host.start_channel_media_relay([dest, dest])
        with pytest.raises(ParameterError, match="own channel"):
            host.start_channel_media_relay([RelayDestination("a", 1001, token("a", 1001))])
        with pytest.raises(ParameterError, match="RelayDestination"):
            host.start_channel_media_relay([("b", 1001, "t")])
        with pytest.raises(ParameterError, match="uid"):
            RelayDestination("b", 0, "t")
        with pytest.raises(ParameterError, match="server_key"):
            RelayDestination("b", 5, "t", server_address=("127.0.0.1", 9))
        with pytest.raises(RuntimeError, match="no channel media relay"):
            host.pause_all_channel_media_relay()
        assert host._relay is None and s.server.members("b") == {}
