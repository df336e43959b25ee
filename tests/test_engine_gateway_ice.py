"""The gateway's ICE with browsers that hide their addresses, and with offers
that never connect (aiortc peers in this process, a real server and gateway).

A browser that has not been granted the microphone (Firefox, for a
listener) offers only mDNS names (``<uuid>.local``) as its candidates.  The
gateway cannot resolve them, and must still connect: it learns the
browser's address from the browser's own checks.  A peer that is answered
but never connects must not hold a channel member for ever.
"""

import asyncio
import re
import uuid

import pytest

from conftest import require
from engine_helpers import wait_until
from stagevox import engine

SECRET = "gateway-ice-test-secret"
CHANNEL = "ice"


def _imports():
    try:
        import aiohttp  # noqa: F401
        import aiortc  # noqa: F401
        return True
    except ImportError:
        return False


def token(uid):
    return engine.make_token(SECRET, CHANNEL, uid, "audience")


def hide_addresses(sdp):
    """``sdp`` with each candidate's address replaced by an mDNS name, as a
    browser does before it is granted the microphone."""
    return re.sub(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)",
                  lambda m: m.group(1) + f"{uuid.uuid4()}.local", sdp, flags=re.M)


async def hidden_offer():
    """A receive-only aiortc peer and its offer, addresses hidden."""
    from aiortc import RTCPeerConnection
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = hide_addresses(pc.localDescription.sdp)
    assert ".local" in offer and "a=end-of-candidates" in offer
    return pc, offer


async def whep(gw, uid, offer_sdp):
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gw.url}whep/{CHANNEL}", data=offer_sdp,
                                headers={"Content-Type": "application/sdp",
                                         "Authorization": f"Bearer {token(uid)}"}) as res:
            assert res.status == 201, await res.text()
            return await res.text()


@pytest.fixture(params=["own member", "shared member"])
def room(request):
    """A server and a gateway whose listeners are each a member of their own,
    or (given the secret) share one."""
    require(_imports(), "aiortc and aiohttp (pip install 'stagevox[test]')")
    secret = SECRET if request.param == "shared member" else None
    with engine.Server(secret=SECRET) as server, \
            engine.Gateway(server.address, server.public_key, http_port=0, secret=secret) as gw:
        yield server, gw


def test_a_peer_offering_only_mdns_names_connects(room):
    from aiortc import RTCSessionDescription
    server, gw = room

    async def listen():
        pc, offer = await hidden_offer()
        answer = await whep(gw, 61, offer)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        for _ in range(200):                       # 10 s at most
            if pc.connectionState in ("connected", "failed"):
                break
            await asyncio.sleep(0.05)
        state = pc.connectionState
        await pc.close()
        return state

    assert asyncio.run(listen()) == "connected"


def test_an_answered_peer_that_never_connects_is_closed(room, monkeypatch):
    """The offer is answered (the person joins the channel), then nothing:
    after the connect deadline the person is closed and leaves."""
    from stagevox.engine.gateway import person
    monkeypatch.setattr(person, "CONNECT_TIMEOUT_S", 1.0)
    server, gw = room

    async def offer_and_vanish():
        pc, offer = await hidden_offer()
        await pc.close()                           # it will never answer a check
        await whep(gw, 62, offer)

    asyncio.run(offer_and_vanish())
    expected = {62} if gw.secret is None else {feed.uid for feed in gw.feeds.values()}
    assert server.members(CHANNEL) == dict.fromkeys(expected, "audience")
    assert wait_until(lambda: not gw.people, 5.0), gw.people
    assert wait_until(lambda: not server.members(CHANNEL), 5.0), server.members(CHANNEL)
