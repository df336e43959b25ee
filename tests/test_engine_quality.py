"""Speech through a live channel on 127.0.0.1, judged by STOI and PESQ.

A host pushes 8 s of the bundled speech in real time; a listener in the same
channel pulls what it hears in real time; a UDP impairment relay sits on the
host's path, the listener's path, or both (see ``live_session``).  The
received speech is aligned to what was sent and scored.  Targets are those of
the live-channel issue; each condition runs alone, so the pacing threads of
one session do not starve another's on a two-core machine.

Printed for the record (``pytest -s``): STOI, PESQ-WB, median end-to-end
delay, the recovery counters and the bitrate the host sent.
"""

import pytest

from live_session import Condition, run_sessions
from stagevox.engine.session import TRANSPORT_OVERHEAD
from udp_relay import Impairment

SPEECH = slice(2 * 48000, 10 * 48000)


def loss(p):
    return Impairment(loss=p)


BURSTY = Impairment.gilbert_elliott(0.2, 5, jitter_ms=30.0, duplicate=0.01)

#: name, condition, minimum STOI, maximum median end-to-end delay (ms) or None
CASES = [
    ("no_loss", Condition("no_loss"), 0.98, 80.0),
    ("listener_30", Condition("listener_30", listener_path=loss(0.3)), 0.97, None),
    ("listener_50", Condition("listener_50", listener_path=loss(0.5)), 0.95, None),
    ("listener_70", Condition("listener_70", listener_path=loss(0.7)), 0.90, None),
    ("host_30", Condition("host_30", host_path=loss(0.3)), 0.97, None),
    ("host_50", Condition("host_50", host_path=loss(0.5)), 0.95, None),
    ("host_70", Condition("host_70", host_path=loss(0.7)), 0.90, None),
    ("both_30", Condition("both_30", host_path=loss(0.3), listener_path=loss(0.3)), 0.95, None),
    ("bursty_jitter", Condition("bursty_jitter", listener_path=BURSTY), 0.95, 200.0),
    # End-to-end encryption on: the server repairs (RED, NACK) frames it cannot open.
    ("e2ee_both_30", Condition("e2ee_both_30", host_path=loss(0.3), listener_path=loss(0.3),
                               e2ee_key="a channel passphrase"), 0.95, None),
]


@pytest.mark.parametrize("name,condition,min_stoi,max_delay_ms", CASES, ids=[c[0] for c in CASES])
def test_speech_through_the_channel(speech, name, condition, min_stoi, max_delay_ms):
    (r,) = run_sessions([condition], speech[SPEECH])
    ls, hs = r.listener_stats, r.host_stats
    print(f"\n{name}: STOI {r.stoi:.3f}  PESQ-WB {r.pesq:.2f}  delay {r.delay_ms:.0f} ms  "
          f"received {ls['received']}  RED {ls['recovered_red']}  FEC {ls['recovered_fec']}  "
          f"retransmitted {ls['recovered_retransmission']}  concealed {ls['concealed']}  "
          f"stretched +{ls['lengthened_ms'] + ls['expanded_ms']:.0f}/-{ls['shortened_ms']:.0f} ms  "
          f"host sent {hs['send_bitrate'] / 1000:.1f} kb/s (codec {hs['codec_bitrate'] / 1000:.1f})")
    assert r.stoi >= min_stoi, f"{name}: STOI {r.stoi:.3f} < {min_stoi}"
    if max_delay_ms is not None:
        assert r.delay_ms <= max_delay_ms, f"{name}: delay {r.delay_ms:.0f} ms > {max_delay_ms}"
    if name == "no_loss":
        assert r.pesq >= 3.8, f"PESQ-WB {r.pesq:.2f} < 3.8"
        # No loss reported, no redundancy: every payload is the bare Opus frame,
        # and the payload bitrate is within 10 % of the codec's 32 kb/s.
        assert hs["payload_bytes_sent"] == hs["codec_bytes_sent"]
        payload_bitrate = 8 * hs["payload_bytes_sent"] / (hs["packets_sent"] * 0.02)
        assert payload_bitrate <= 1.10 * 32000
        # Sealed, each packet costs exactly the RTP header and the session's
        # 29 bytes (13 of header, 16 of AEAD tag) more; the payload with its
        # AEAD tag stays within 15 % of the codec's 32 kb/s.
        n = hs["packets_sent"]
        assert hs["bytes_sent"] == hs["payload_bytes_sent"] + n * (12 + TRANSPORT_OVERHEAD)
        sealed_payload_bitrate = 8 * (hs["payload_bytes_sent"] + 16 * n) / (n * 0.02)
        assert sealed_payload_bitrate <= 1.15 * 32000, sealed_payload_bitrate
        assert ls["concealed"] == 0
