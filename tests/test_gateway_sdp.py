"""The gateway's changes to a browser's SDP offer (``engine.gateway.sdp``)."""

from stagevox.engine.gateway.sdp import drop_unresolvable_candidates

HEAD = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 109\r\nc=IN IP4 0.0.0.0\r\n")
MDNS = ("a=candidate:0 1 UDP 2122187007 5a9e18fe-7740-4734-bf33-9ebc8780dc12.local 45287 "
        "typ host\r\n"
        "a=candidate:2 1 TCP 2105458943 5A9E18FE-7740-4734-BF33-9EBC8780DC12.LOCAL 9 "
        "typ host tcptype active\r\n")
IP = "a=candidate:1 1 UDP 2122252543 192.0.2.7 38969 typ host\r\n"
END = "a=end-of-candidates\r\n"
TAIL = "a=rtpmap:109 opus/48000/2\r\n"


def test_mdns_candidates_and_the_end_mark_are_dropped():
    """Firefox's offer before the microphone is granted: every candidate an
    mDNS name; none is left, nor the end mark, and nothing else changes."""
    assert drop_unresolvable_candidates(HEAD + MDNS + END + TAIL) == HEAD + TAIL


def test_address_candidates_are_kept_beside_dropped_names():
    assert drop_unresolvable_candidates(HEAD + MDNS + IP + END + TAIL) == HEAD + IP + TAIL


def test_an_offer_without_mdns_names_is_unchanged():
    offer = HEAD + IP + END + TAIL
    assert drop_unresolvable_candidates(offer) == offer
    bare = offer.replace("\r\n", "\n")        # lenient line ends are kept as given
    assert drop_unresolvable_candidates(bare) == bare
