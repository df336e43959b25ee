"""Run real live sessions on 127.0.0.1 and judge what the listeners hear.

``run_sessions`` starts one server, and for each condition one host and one
listener in their own channel, each behind a ``UdpRelay`` with the
condition's impairments (on the host's path, the listener's path, or both).
One thread pushes 10 ms frames to every host on a shared real-time clock and
another pulls 10 ms from every listener on the same clock, so the sample
offset between what was pushed and what was pulled is the end-to-end delay.

Judging: the received signal is aligned to the reference piece by piece
(0.25 s pieces, on the path of lags that best follows the jitter buffer's
moving delay, see ``align``), then scored with STOI and PESQ-WB at 16 kHz.
"""

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.signal as ss

from stagevox import engine
from udp_relay import Impairment, UdpRelay

SECRET = "live-session-secret"
RATE = 48000
FRAME = 480                      # 10 ms


@dataclass
class Condition:
    name: str
    host_path: Impairment | None = None
    listener_path: Impairment | None = None
    client_kw: dict = field(default_factory=dict)
    e2ee_key: str | None = None      # end-to-end encryption on both, with this key


@dataclass
class Result:
    name: str
    received: np.ndarray
    aligned: np.ndarray
    lags: np.ndarray             # samples, one per piece
    stoi: float = float("nan")
    pesq: float = float("nan")
    host_stats: dict = None
    listener_stats: dict = None
    server_counters: dict = None

    @property
    def delay_ms(self):
        """Median end-to-end delay (push to pull), ms."""
        return float(np.median(self.lags)) * 1e3 / RATE


def _pace(t0, i):
    delay = t0 + i * FRAME / RATE - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_sessions(conditions, speech, lead_in_s=3.0, tail_s=0.6, judge=True):
    """Stream ``speech`` (48 kHz mono) through every condition at once; one Result each.

    ``lead_in_s`` of other speech go first so the adaptive parts settle; only
    ``speech`` is judged.
    """
    lead = np.resize(speech[::-1], int(lead_in_s * RATE)).astype(np.float32)
    signal = np.concatenate([lead, speech, np.zeros(int(tail_s * RATE), np.float32)])
    n_frames = len(signal) // FRAME
    results = []
    with engine.Server(secret=SECRET) as server:
        relays, pairs = [], []
        try:
            for k, cond in enumerate(conditions):
                channel = f"c{k}"
                addr = {}
                for who, imp in (("host", cond.host_path), ("listener", cond.listener_path)):
                    if imp is None:
                        addr[who] = server.address
                    else:
                        # Impaired once everyone has joined: the sessions are judged,
                        # not how long a join takes through the loss.
                        relay = UdpRelay(server.address, seed=17 + 2 * k + (who == "host"),
                                         max_seconds=lead_in_s + len(speech) / RATE + 60)
                        relays.append((relay.start(), imp))
                        addr[who] = relay.address
                host = engine.Client(**cond.client_kw)
                listener = engine.Client(**cond.client_kw)
                host.join_channel(addr["host"], channel, 1,
                                  engine.make_token(SECRET, channel, 1, "host"), "host",
                                  server_key=server.public_key)
                listener.join_channel(addr["listener"], channel, 2,
                                      engine.make_token(SECRET, channel, 2, "audience"),
                                      "audience", server_key=server.public_key)
                if cond.e2ee_key is not None:
                    host.enable_encryption(cond.e2ee_key)
                    listener.enable_encryption(cond.e2ee_key)
                pairs.append((host, listener))
            for relay, imp in relays:
                relay.set_impairment(upstream=imp, downstream=imp)
            received = [[] for _ in pairs]
            t0 = time.monotonic() + 0.05

            def push():
                for i in range(n_frames):
                    _pace(t0, i)
                    chunk = signal[i * FRAME:(i + 1) * FRAME]
                    for host, _ in pairs:
                        host.push_audio(chunk)

            def pull():
                for i in range(n_frames):
                    _pace(t0, i + 1)
                    for k, (_, listener) in enumerate(pairs):
                        received[k].append(listener.pull_audio(FRAME)[0])

            threads = [threading.Thread(target=push), threading.Thread(target=pull)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=len(signal) / RATE + 30)
            stats = [(host.stats(), listener.stats()) for host, listener in pairs]
            counters = dict(server.counters)
        finally:
            for host, listener in pairs:
                host.leave_channel()
                listener.leave_channel()
            for relay, _ in relays:
                relay.stop()
    # pull() ran one frame behind push(): shift back by one frame.
    for k, cond in enumerate(conditions):
        y = np.concatenate([np.zeros(FRAME, np.float32)] + received[k])
        r = Result(cond.name, y, *align(speech, y, len(lead)))
        r.host_stats, r.listener_stats = stats[k]
        r.server_counters = counters
        results.append(r)
    if judge:
        for r in results:
            r.stoi, r.pesq = score(speech, r.aligned)
    return results


def align(reference, received, start, piece_s=0.25, search_ms=400.0, bin_ms=1.0,
          change_cost=0.002):
    """Align ``received`` to ``reference`` (which begins at sample ``start`` of the
    pushed signal) piece by piece; returns ``(aligned, lags)``.

    The lag follows the jitter buffer's delay, which moves when it stretches,
    waits or skips.  Every ``piece_s`` piece of the reference is scored by
    its normalised cross-correlation at every lag within ``search_ms`` of the
    whole signal's best lag (in ``bin_ms`` bins, each keeping its best
    sample); then the one path of lags, a lag per piece, that maximises the
    summed scores less ``change_cost`` per millisecond of lag change from
    piece to piece is found by dynamic programming (Viterbi).  So a piece
    that matches nowhere (silence, concealed audio) keeps its neighbours'
    lag, a real change of delay is followed when the pieces after it match
    there, and a piece that matches a wrong place far off (speech is
    self-similar) does not pull the lag there and back.  Lags are in
    samples: the end-to-end delay.
    """
    piece = int(piece_s * RATE)
    search = int(search_ms * 1e-3 * RATE)
    width = int(bin_ms * 1e-3 * RATE)
    seg = received[start:start + len(reference) + 2 * search + RATE]
    corr = ss.correlate(seg, reference, mode="valid", method="fft")
    g = int(np.argmax(corr))
    n_bins = 2 * search // width + 1
    starts = range(0, len(reference), piece)
    scores = np.zeros((len(starts), n_bins))
    fine = np.zeros((len(starts), n_bins), np.int64)       # best lag in each bin
    power = np.concatenate([[0.0], np.cumsum(seg.astype(np.float64) ** 2)])
    for i, p in enumerate(starts):
        ref = reference[p:p + piece]
        first = g - search + p                              # seg index of the first lag
        lo, hi = max(0, first), min(len(seg) - len(ref), first + n_bins * width - 1)
        fine[i] = g - search + width * np.arange(n_bins)
        if float(ref @ ref) <= 1e-4 or hi < lo:
            continue
        c = ss.correlate(seg[lo:hi + len(ref)], ref, mode="valid", method="fft")
        energy = power[lo + len(ref):hi + len(ref) + 1] - power[lo:hi + 1]
        score = np.full(n_bins * width, -1.0)
        score[lo - first:hi - first + 1] = c / np.sqrt(energy * float(ref @ ref) + 1e-12)
        score = score.reshape(n_bins, width)
        k = np.argmax(score, axis=1)
        scores[i] = score[np.arange(n_bins), k]
        fine[i] += k
    path = _best_path(scores, change_cost * bin_ms)
    lags = fine[np.arange(len(starts)), path]
    aligned = np.zeros_like(reference)
    for p, lag in zip(starts, lags):
        got = seg[max(0, lag + p):max(0, lag + p + len(reference[p:p + piece]))]
        aligned[p:p + len(got)] = got
    return aligned, lags


def _best_path(scores, cost):
    """The bin per row of ``scores`` (pieces x lag bins) maximising the summed
    scores less ``cost`` per bin of change between rows (Viterbi, with the
    linear change cost as a two-pass distance transform)."""
    n, m = scores.shape
    total = scores[0].copy()
    back = np.zeros((n, m), np.int64)
    for i in range(1, n):
        best, arg = total.copy(), np.arange(m)
        for j in range(1, m):                   # from the left
            if best[j - 1] - cost > best[j]:
                best[j], arg[j] = best[j - 1] - cost, arg[j - 1]
        for j in range(m - 2, -1, -1):          # from the right
            if best[j + 1] - cost > best[j]:
                best[j], arg[j] = best[j + 1] - cost, arg[j + 1]
        back[i] = arg
        total = best + scores[i]
    path = np.zeros(n, np.int64)
    path[-1] = int(np.argmax(total))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def score(reference, aligned):
    """(STOI, PESQ-WB) of ``aligned`` against ``reference``, both 48 kHz, judged at 16 kHz."""
    from pesq import pesq
    from pystoi import stoi
    ref16 = ss.resample_poly(reference, 1, 3)
    deg16 = ss.resample_poly(aligned, 1, 3)
    return float(stoi(ref16, deg16, 16000)), float(pesq(16000, ref16, deg16, "wb"))
