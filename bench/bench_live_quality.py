"""Speech quality and delay of the live channel under loss, jitter and bursts.

Runs the sessions of ``tests/test_engine_quality.py`` (a host and a listener
on 127.0.0.1, a UDP impairment relay on the host's path, the listener's path
or both) and prints, for each condition, STOI and PESQ-WB of what the
listener heard, the median end-to-end delay (push to pull), how the frames
were recovered, and the bitrate the host sent.

    .venv/bin/python bench/bench_live_quality.py [--quick]

``--quick`` runs 4 s of speech instead of 8 s.  Each condition runs alone
(real time: about 12 s each).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from live_session import Condition, run_sessions  # noqa: E402
from udp_relay import Impairment  # noqa: E402

from stagevox.dsp import samples  # noqa: E402


def conditions():
    loss = lambda p: Impairment(loss=p)  # noqa: E731
    bursty = Impairment.gilbert_elliott(0.2, 5, jitter_ms=30.0, duplicate=0.01)
    out = [Condition("no loss")]
    for p in (0.3, 0.5, 0.7):
        out.append(Condition(f"listener path {p:.0%}", listener_path=loss(p)))
    for p in (0.3, 0.5, 0.7):
        out.append(Condition(f"host path {p:.0%}", host_path=loss(p)))
    out.append(Condition("both paths 30%", host_path=loss(0.3), listener_path=loss(0.3)))
    out.append(Condition("bursty 20%/5, jitter 30 ms, 1% dup", listener_path=bursty))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s of speech instead of 8 s")
    args = parser.parse_args()
    speech = samples.speech(48000)[2 * 48000:(6 if args.quick else 10) * 48000]
    print(f"{'condition':38s} {'STOI':>6s} {'PESQ':>5s} {'delay':>7s} {'RED':>5s} {'FEC':>4s} "
          f"{'rtx':>4s} {'conc':>5s} {'sent kb/s':>10s}")
    for cond in conditions():
        (r,) = run_sessions([cond], speech)
        ls, hs = r.listener_stats, r.host_stats
        print(f"{cond.name:38s} {r.stoi:6.3f} {r.pesq:5.2f} {r.delay_ms:5.0f}ms "
              f"{ls['recovered_red']:5d} {ls['recovered_fec']:4d} "
              f"{ls['recovered_retransmission']:4d} {ls['concealed']:5d} "
              f"{hs['send_bitrate'] / 1000:10.1f}", flush=True)
    print("delay: median push-to-pull; RED/FEC/rtx: frames recovered that way; conc: concealed;"
          "\nsent: host's RTP payload+header bitrate (codec target 32 kb/s; redundancy only "
          "when loss is reported)")


if __name__ == "__main__":
    main()
