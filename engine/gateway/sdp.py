"""What the gateway changes in a browser's SDP offer before answering it.

Browsers hide their local addresses behind random mDNS names
(``<uuid>.local``, draft-ietf-mmusic-mdns-ice-candidates); Firefox does so
for every page that has not been granted the microphone.  Such a name
resolves only on the browser's own link, and not at all where multicast
does not reach, so the gateway cannot reach those candidates.  It does not
need to: the browser sends its connectivity checks to the gateway's
candidates, and the gateway learns the browser's address from them (a
peer-reflexive candidate, RFC 8445 section 7.3.1.3), as a server on the
internet always must.

But if the offer ends with ``a=end-of-candidates`` and every candidate in
it was an unresolvable name, the gateway's ICE agent has nothing to check
and gives up at once, before the browser's first check arrives.  So mDNS
candidates are dropped, and with them the end-of-candidates mark: the
gateway waits for the browser's checks instead (bounded by the person's
connect deadline).
"""

import re

_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ")


def drop_unresolvable_candidates(sdp):
    """``sdp`` without its mDNS (``*.local``) ICE candidates; if any was
    dropped, also without its ``a=end-of-candidates`` lines.  Line endings
    are kept as they were (``\\r\\n`` in well-formed SDP)."""
    lines = sdp.splitlines(keepends=True)
    kept = []
    dropped = False
    for line in lines:
        m = _CANDIDATE.match(line)
        if m and m.group(1).lower().endswith(".local"):
            dropped = True
            continue
        kept.append(line)
    if dropped:
        kept = [line for line in kept if line.rstrip("\r\n") != "a=end-of-candidates"]
    return "".join(kept)
