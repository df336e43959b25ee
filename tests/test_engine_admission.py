"""Admission to a live channel, on a real server over UDP on 127.0.0.1.

Who may join (tokens: none, forged, expired, another channel, another uid,
host without the publish privilege), the limit of 17 hosts a channel, that
nothing an audience member publishes is ever heard (an honest client sends
nothing; a lying client and a raw socket are dropped by the server), that
an audience member moved on stage with a host token is heard, and the
server's lifecycle.  Every wait has a deadline (``engine_helpers``).
"""

import socket
import time

import numpy as np
import pytest
from engine_helpers import (
    CLEAN_TONE,
    SECRET,
    Recorder,
    Session,
    amplitude,
    db,
    purity,
    stream,
    token,
    tone,
    wait_until,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stagevox import engine
from stagevox.engine import control
from stagevox.engine.rtp import PT_OPUS, RtpPacket

TOKEN_CODES = ("no_token", "malformed_token", "bad_signature", "expired_token", "wrong_channel",
               "wrong_uid")


# -- joining -------------------------------------------------------------------

def test_join_with_host_and_audience_tokens():
    with Session() as s:
        host = s.join(1, "host")
        listener = s.join(2, "audience")
        assert s.server.members("room") == {1: "host", 2: "audience"}
        assert (host.state, host.role, host.uid, host.channel) == ("connected", "host", 1, "room")
        assert (listener.state, listener.role) == ("connected", "audience")
        # The listener learned of the host present at its join.
        assert listener.remote_users() == [1]
        assert wait_until(lambda: s.server.counters["joined"] == 2)


def _bad_tokens():
    good = token("room", 5, "host")
    head, mac = good.rsplit(".", 1)
    # A changed character in the middle of the signature keeps it valid base64url.
    i = len(mac) // 2
    forged_mac = head + "." + mac[:i] + ("A" if mac[i] != "A" else "B") + mac[i + 1:]
    other_secret = engine.make_token("not-the-server-secret", "room", 5, "host")
    past = time.time() - 7200
    return [
        ("no_token", "", "host", ("no_token",)),
        ("forged_signature", forged_mac, "host", ("bad_signature", "malformed_token")),
        ("other_secret", other_secret, "host", ("bad_signature",)),
        ("garbage", "sv1.not-a-token", "host", ("malformed_token",)),
        ("expired", token("room", 5, "host", expire_s=3600, now=past), "host", ("expired_token",)),
        ("other_channel", token("other-room", 5, "host"), "host", ("wrong_channel",)),
        ("other_uid", token("room", 6, "host"), "host", ("wrong_uid",)),
        ("host_with_audience_token", token("room", 5, "audience"), "host",
         ("no_publish_privilege",)),
    ]


@pytest.mark.parametrize("name,tok,role,codes", _bad_tokens(), ids=[c[0] for c in _bad_tokens()])
def test_join_refused(name, tok, role, codes):
    with Session() as s:
        # Someone already in the channel must hear nothing of the refused user.
        watcher = Recorder()
        s.join(1, "audience", handler=watcher)
        rec = Recorder()
        c = s.client()
        c.register_event_handler(rec)
        with pytest.raises(engine.RefusedError) as info:
            c.join_channel(s.server.address, "room", 5, tok, role, timeout=3.0,
                           server_key=s.server.public_key)
        assert info.value.code in codes, f"{name}: refused with {info.value.code!r}"
        assert info.value.code in str(info.value)
        assert wait_until(lambda: s.server.counters[f"refused_{info.value.code}"] >= 1)
        assert s.server.members("room") == {1: "audience"}
        assert c.channel is None and c.state == "failed"
        assert [a[0] for a in rec.of("on_connection_state_changed")] == ["connecting", "failed"]
        assert watcher.of("on_user_joined") == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_changed_token_character_is_refused(data):
    """Property: changing any one character of a valid token gets the join refused
    with one of the token codes (never accepted, never a timeout)."""
    good = token("room", 5, "host")
    i = data.draw(st.integers(0, len(good) - 1), label="position")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"
    ch = data.draw(st.sampled_from([a for a in alphabet if a != good[i]]), label="character")
    forged = good[:i] + ch + good[i + 1:]
    with Session() as s:
        c = s.client()
        with pytest.raises(engine.RefusedError) as info:
            c.join_channel(s.server.address, "room", 5, forged, "host", timeout=3.0,
                           server_key=s.server.public_key)
        assert info.value.code in TOKEN_CODES
        assert s.server.members("room") == {}


def test_eighteenth_host_is_refused_and_audience_still_join():
    with Session() as s:
        hosts = [s.join(uid, "host") for uid in range(1, 18)]
        assert len(s.server.members("room")) == 17
        with pytest.raises(engine.RefusedError) as info:
            s.join(18, "host")
        assert info.value.code == "too_many_hosts"
        assert "17" in str(info.value)
        # Audience are not counted against the limit.
        listener = s.join(19, "audience")
        assert listener.remote_users() == list(range(1, 18))
        # An audience member cannot be moved on stage past the limit either.
        with pytest.raises(engine.RefusedError) as info:
            listener.set_client_role("host", token("room", 19, "host"))
        assert info.value.code == "too_many_hosts"
        members = s.server.members("room")
        assert sorted(u for u, r in members.items() if r == "host") == list(range(1, 18))
        assert members[19] == "audience"
        # Once a host leaves there is room again.
        hosts[0].leave_channel()
        assert wait_until(lambda: 1 not in s.server.members("room"))
        s.join(18, "host")
        assert sum(r == "host" for r in s.server.members("room").values()) == 17


def test_join_claiming_another_members_ssrc_is_refused():
    with Session() as s:
        host = s.join(1, "host")
        raw = s.raw_socket()
        reply = s.raw_join(raw, 2, "host", ssrc=host.ssrc)
        assert isinstance(reply, control.Refused) and reply.code == "bad_request"
        assert str(host.ssrc) in reply.reason
        assert s.server.members("room") == {1: "host"}


def test_max_hosts_is_configurable():
    with Session(max_hosts=2) as s:
        s.join(1, "host")
        s.join(2, "host")
        with pytest.raises(engine.RefusedError) as info:
            s.join(3, "host")
        assert info.value.code == "too_many_hosts"


# -- audience publishing is never heard ------------------------------------------

def test_honest_audience_client_sends_nothing():
    with Session() as s:
        speaker = s.join(3, "audience")
        listener = s.join(2, "audience")
        got = stream({speaker: tone(440, 0.5)}, [listener], 0.5)[listener]
        assert speaker.stats()["packets_sent"] == 0
        assert np.all(got == 0.0)
        assert s.server.counters["forwarded"] == 0


def test_audience_packets_are_dropped_by_the_server():
    """A client that lies about its role, and a raw socket joined as audience
    that forges RTP with the real host's SSRC: the server drops both, and the
    listener receives no packet and hears silence."""
    with Session() as s:
        host = s.join(1, "host")            # present, but silent
        listener = s.join(2, "audience")
        liar = s.join(3, "audience")
        liar.role = "host"                  # the client now sends, the server knows better
        raw = s.raw_socket()
        reply = s.raw_join(raw, 4, "audience", ssrc=4444)
        assert isinstance(reply, control.Joined)
        forged = [RtpPacket(payload_type=PT_OPUS, sequence_number=i, timestamp=960 * i,
                            ssrc=host.ssrc, payload=bytes([0xF8, 0xFF, 0xFE])).serialize()
                  for i in range(30)]
        sent = 0

        def forge(i):
            nonlocal sent
            if i % 2 == 0 and sent < len(forged):
                raw.sendto(forged[sent], s.server.address)
                sent += 1

        got = stream({liar: tone(440, 0.6)}, [listener], 0.6, on_frame=forge)[listener]
        liar_packets = liar.stats()["packets_sent"]
        assert liar_packets >= 25
        assert wait_until(lambda: s.server.counters["dropped_audience"] >= liar_packets + sent)
        assert s.server.counters["forwarded"] == 0
        assert listener.stats()["users"][1]["received"] == 0
        assert listener.remote_users() == [1]
        assert np.all(got == 0.0)


def test_audience_moved_on_stage_is_heard():
    with Session() as s:
        watcher = Recorder()
        listener = s.join(2, "audience", handler=watcher)
        rec = Recorder()
        guest = s.join(3, "audience", handler=rec)
        # Without a token that allows publishing, the move is refused.
        for tok in (None, token("room", 3, "audience")):
            with pytest.raises(engine.RefusedError) as info:
                guest.set_client_role("host", tok)
            assert info.value.code == "no_publish_privilege"
            assert guest.role == "audience"
            assert s.server.members("room")[3] == "audience"
        # A host token for another uid is refused too.
        with pytest.raises(engine.RefusedError) as info:
            guest.set_client_role("host", token("room", 4, "host"))
        assert info.value.code == "wrong_uid"
        assert rec.of("on_client_role_changed") == []
        guest.set_client_role("host", token("room", 3, "host"))
        assert guest.role == "host"
        assert s.server.members("room")[3] == "host"
        assert rec.of("on_client_role_changed") == [("audience", "host")]
        assert watcher.wait_for("on_user_joined", (3,)) is not None
        x = tone(523.25, 0.8, amplitude=0.2)
        got = stream({guest: x}, [listener], 0.8)[listener][0]
        # Steady state: the last 0.4 s (the start is the join and the jitter buffer).
        heard = got[-int(0.4 * 48000):]
        assert abs(db(amplitude(heard, 523.25) / 0.2)) < 1.0
        assert purity(heard, 523.25) >= CLEAN_TONE     # the tone, not noise at its level
        # And back to the audience: no longer heard.
        guest.set_client_role("audience")
        assert rec.of("on_client_role_changed")[-1] == ("host", "audience")
        assert watcher.wait_for("on_user_offline", (3, "became_audience")) is not None
        before = s.server.counters["forwarded"]
        got = stream({guest: x}, [listener], 0.3)[listener]
        assert s.server.counters["forwarded"] == before
        assert np.all(got == 0.0)


# -- server lifecycle ----------------------------------------------------------------

def test_server_context_manager_binds_a_real_port_and_releases_it():
    with engine.Server(secret=SECRET, port=0) as server:
        host, port = server.address
        assert host == "127.0.0.1" and 0 < port < 65536
        c = engine.Client()
        try:
            c.join_channel(server.address, "room", 1, token("room", 1), "host", timeout=3.0,
                           server_key=server.public_key)
            assert server.members("room") == {1: "host"}
        finally:
            c.leave_channel()
    # The socket is closed: the port can be bound again.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", port))
    finally:
        probe.close()


def test_two_servers_on_different_ports_serve_separately():
    with engine.Server(secret=SECRET) as a, engine.Server(secret="another-secret") as b:
        assert a.address[1] != b.address[1]
        ca, cb = engine.Client(), engine.Client()
        try:
            ca.join_channel(a.address, "room", 1, token("room", 1), "host", timeout=3.0,
                            server_key=a.public_key)
            # Each server checks its own secret.
            with pytest.raises(engine.RefusedError) as info:
                cb.join_channel(b.address, "room", 1, token("room", 1), "host", timeout=3.0,
                                server_key=b.public_key)
            assert info.value.code == "bad_signature"
            cb.join_channel(b.address, "room", 1,
                            engine.make_token("another-secret", "room", 1, "host"), "host",
                            timeout=3.0, server_key=b.public_key)
            assert a.members("room") == {1: "host"} and b.members("room") == {1: "host"}
        finally:
            ca.leave_channel()
            cb.leave_channel()


def test_stop_is_idempotent():
    server = engine.Server(secret=SECRET).start()
    server.stop()
    server.stop()
    with engine.Server(secret=SECRET) as s2:
        s2.stop()
    # Stopping a server that was never started does nothing.
    engine.Server(secret=SECRET).stop()


def test_stopped_server_no_longer_answers():
    server = engine.Server(secret=SECRET).start()
    address = server.address
    server.stop()
    c = engine.Client()
    with pytest.raises(TimeoutError):
        c.join_channel(address, "room", 1, token("room", 1), "host", timeout=0.5,
                       server_key=server.public_key)
    assert c.state == "failed"


@pytest.mark.parametrize("kw,words", [
    ({"secret": ""}, "secret"),
    ({"secret": b""}, "secret"),
    ({"secret": None}, "secret"),
    ({"secret": "s", "max_hosts": 0}, "max_hosts"),
    ({"secret": "s", "port": 70000}, "port"),
])
def test_server_rejects_bad_arguments(kw, words):
    with pytest.raises(ValueError, match=words):
        engine.Server(**kw)


def test_join_channel_rejects_bad_arguments():
    with Session() as s:
        c = s.client()
        with pytest.raises(ValueError, match="role must be one of"):
            c.join_channel(s.server.address, "room", 1, token("room", 1), "speaker",
                           server_key=s.server.public_key)
        with pytest.raises(ValueError, match="uid"):
            c.join_channel(s.server.address, "room", 0, token("room", 0), "host",
                           server_key=s.server.public_key)
        assert c.state == "disconnected"
