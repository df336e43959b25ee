"""The UDP impairment relay used by the engine's network tests (tests/udp_relay.py).

The statistics of the loss, jitter and duplication decisions are checked on
the decision function alone (``Impairer``) over 2*10^4 to 10^5 packets against
their closed forms: a binomial bound for independent loss and duplication, the
stationary distribution and asymptotic variance of the two-state Markov chain
for Gilbert-Elliott loss, a Kolmogorov-Smirnov test for uniform jitter.  Bounds
are 4 standard errors; the seeds are fixed, so a run is deterministic.

The socket tests use plain UDP sockets on 127.0.0.1 as clients and target and
check the wiring: what the relay delivers is exactly what an ``Impairer`` with
the same seed decides, replies reach the right client, counters add up, and
the thread stops by itself.  Every wait has a deadline.
"""

import itertools
import math
import random
import socket
import statistics
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from udp_relay import Impairer, Impairment, UdpRelay

#: Bound of every statistical check, in standard errors.
SIGMAS = 4.0
#: Longest any socket test waits for packets, in seconds.
WAIT_S = 10.0
#: Packet header: sequence number and send time (time.monotonic, seconds).
HEADER = struct.Struct(">Id")


# -- helpers ------------------------------------------------------------------

def udp_socket():
    """A UDP socket bound to 127.0.0.1 on an ephemeral port, with a big receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def target():
    sock = udp_socket()
    yield sock
    sock.close()


@pytest.fixture
def client():
    sock = udp_socket()
    yield sock
    sock.close()


def packet(seq, size=40):
    head = HEADER.pack(seq, time.monotonic())
    return head + bytes(max(0, size - len(head)))


def recv_n(sock, n, deadline):
    """Up to ``n`` datagrams as (payload, source, arrival time); stops at ``deadline``."""
    got = []
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            payload, source = sock.recvfrom(65535)
        except TimeoutError:
            break
        got.append((payload, source, time.monotonic()))
    return got


def recv_quiet(sock, quiet_s=0.1):
    """Datagrams until none arrives for ``quiet_s`` seconds (at most 1000)."""
    got = []
    for _ in range(1000):
        sock.settimeout(quiet_s)
        try:
            payload, source = sock.recvfrom(65535)
        except TimeoutError:
            break
        got.append((payload, source, time.monotonic()))
    return got


def wait_for(condition, deadline):
    """Poll ``condition`` every millisecond until it holds or ``deadline`` passes."""
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.001)
    return condition()


def expected_sent(relay, direction="upstream"):
    c = relay.counters[direction]
    return c["received"] - c["dropped"] + c["duplicated"]


def sent_or_failed(relay, direction="upstream"):
    c = relay.counters[direction]
    return c["sent"] + c["send_errors"]


def pump(relay, client, target, count, burst=50):
    """Send ``count`` numbered packets from ``client`` through ``relay`` in bursts
    (so no socket buffer overflows) and return what ``target`` receives."""
    deadline = time.monotonic() + WAIT_S
    got = []
    for start in range(0, count, burst):
        stop = min(count, start + burst)
        for seq in range(start, stop):
            client.sendto(packet(seq), relay.address)
        assert wait_for(lambda n=stop: relay.counters["upstream"]["received"] >= n, deadline)
        got += recv_n(target, expected_sent(relay) - len(got), deadline)
    # The relay counts a packet just after sending it: let the counter catch up.
    assert wait_for(lambda: sent_or_failed(relay) == expected_sent(relay), deadline)
    return got


def seqs(received):
    return [HEADER.unpack_from(p)[0] for p, _, _ in received]


def predicted(impairment, seed, count):
    """What an Impairer with this seed decides for ``count`` packets."""
    imp = Impairer(impairment, random.Random(seed))
    return [imp.decide() for _ in range(count)]


def runs(lost):
    """Lengths of the runs of True in a boolean sequence."""
    out, n = [], 0
    for x in lost:
        if x:
            n += 1
        elif n:
            out.append(n)
            n = 0
    if n:
        out.append(n)
    return out


# -- Impairment -----------------------------------------------------------------

@pytest.mark.parametrize("field", ["loss", "duplicate", "p_good_to_bad", "p_bad_to_good",
                                   "loss_in_bad", "loss_in_good"])
@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan, "0.5"])
def test_validate_rejects_bad_probabilities(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a probability between 0 and 1"):
        Impairment(**{field: value}).validate()


@pytest.mark.parametrize("field", ["delay_ms", "jitter_ms"])
@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan])
def test_validate_rejects_bad_delays(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a finite number of milliseconds >= 0"):
        Impairment(**{field: value}).validate()


def test_validate_accepts_edges():
    Impairment().validate()
    Impairment(loss=1, duplicate=1, delay_ms=0, jitter_ms=500, p_good_to_bad=1,
               p_bad_to_good=0, loss_in_bad=0, loss_in_good=1).validate()


def test_relay_and_impairer_refuse_invalid_impairment():
    with pytest.raises(ValueError, match="loss must be"):
        UdpRelay(("127.0.0.1", 9), upstream=Impairment(loss=2.0))
    with pytest.raises(TypeError, match="must be an Impairment"):
        Impairer({"loss": 0.1}, random.Random(0))


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 0.9), st.floats(1.0, 50.0))
def test_gilbert_elliott_parameters_give_requested_stationary_loss(average_loss, mean_burst):
    """Reference: the stationary distribution of the chain's transition matrix
    (left eigenvector for eigenvalue 1, by NumPy) and the mean stay in the bad
    state, 1 / p_bad_to_good."""
    if average_loss > mean_burst / (mean_burst + 1.0):
        with pytest.raises(ValueError, match="impossible"):
            Impairment.gilbert_elliott(average_loss, mean_burst)
        return
    imp = Impairment.gilbert_elliott(average_loss, mean_burst, delay_ms=3.0)
    assert imp.delay_ms == 3.0 and imp.loss_in_bad == 1.0 and imp.loss_in_good == 0.0
    assert 1.0 / imp.p_bad_to_good == pytest.approx(mean_burst, rel=1e-12)
    if average_loss == 0.0:
        assert not imp.bursty
        return
    g, b = imp.p_good_to_bad, imp.p_bad_to_good
    matrix = np.array([[1 - g, g], [b, 1 - b]])
    w, v = np.linalg.eig(matrix.T)
    pi = np.real(v[:, np.argmin(abs(w - 1))])
    pi /= pi.sum()
    assert pi[1] == pytest.approx(average_loss, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("args, message", [
    ((1.0, 3.0), "average_loss must be in"),
    ((-0.1, 3.0), "average_loss must be in"),
    ((0.1, 0.5), "mean_burst must be"),
    ((0.1, math.inf), "mean_burst must be"),
    ((0.6, 1.0), r"at most mean_burst / \(mean_burst \+ 1\) = 0.5"),
])
def test_gilbert_elliott_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        Impairment.gilbert_elliott(*args)


def test_gilbert_elliott_refuses_loss_fields_in_kw():
    with pytest.raises(ValueError, match="do not pass loss"):
        Impairment.gilbert_elliott(0.1, 2.0, loss=0.3)


# -- decision statistics, no sockets ----------------------------------------------

@pytest.mark.parametrize("loss", [0.01, 0.1, 0.5])
def test_random_loss_rate_within_binomial_bound(loss):
    n = 20000
    imp = Impairer(Impairment(loss=loss), random.Random(11))
    lost = sum(1 for _ in range(n) if not imp.decide())
    assert abs(lost - n * loss) <= SIGMAS * math.sqrt(n * loss * (1 - loss))


def test_random_loss_is_independent():
    """P(loss | previous lost) equals the loss rate (no bursts), within 4 sigma."""
    n, loss = 100000, 0.2
    imp = Impairer(Impairment(loss=loss), random.Random(12))
    lost = [not imp.decide() for _ in range(n)]
    after = [b for a, b in itertools.pairwise(lost) if a]
    assert abs(np.mean(after) - loss) <= SIGMAS * math.sqrt(loss * (1 - loss) / len(after))


@pytest.mark.parametrize("average_loss, mean_burst", [(0.05, 3.0), (0.2, 1.5), (0.1, 8.0)])
def test_gilbert_elliott_average_loss_and_burst_length(average_loss, mean_burst):
    """Over 10^5 packets: the loss rate against the asymptotic variance of a
    two-state chain's occupation, pi (1 - pi) (1 + lam) / (1 - lam) / n with
    lam = 1 - p_gb - p_bg; the mean burst against a geometric law's standard
    error; P(loss | previous lost) = 1 - p_bg."""
    n = 100000
    imp = Impairment.gilbert_elliott(average_loss, mean_burst)
    decide = Impairer(imp, random.Random(21)).decide
    lost = [not decide() for _ in range(n)]
    lam = 1.0 - imp.p_good_to_bad - imp.p_bad_to_good
    se_loss = math.sqrt(average_loss * (1 - average_loss) * (1 + lam) / (1 - lam) / n)
    assert abs(np.mean(lost) - average_loss) <= SIGMAS * se_loss

    bursts = runs(lost)
    q = imp.p_bad_to_good
    se_burst = math.sqrt((1 - q) / q**2 / len(bursts))
    assert abs(np.mean(bursts) - mean_burst) <= SIGMAS * se_burst + 1e-12

    after = [b for a, b in itertools.pairwise(lost) if a]
    assert abs(np.mean(after) - (1 - q)) <= SIGMAS * math.sqrt(q * (1 - q) / len(after)) + 1e-12


def test_gilbert_elliott_general_loss_probabilities():
    """Partial loss in both states: the rate is pi_b * l_b + pi_g * l_g.  Its
    standard error adds the chain's occupation variance, scaled by
    (l_b - l_g)^2, and the per-packet Bernoulli variance."""
    n = 100000
    g, b, lb, lg = 0.05, 0.2, 0.5, 0.02
    imp = Impairer(Impairment(p_good_to_bad=g, p_bad_to_good=b, loss_in_bad=lb, loss_in_good=lg,
                              loss=0.9), random.Random(22))   # `loss` is ignored by this model
    rate = np.mean([not imp.decide() for _ in range(n)])
    pi_b = g / (g + b)
    expected = pi_b * lb + (1 - pi_b) * lg
    lam = 1 - g - b
    var = pi_b * (1 - pi_b) * (1 + lam) / (1 - lam) * (lb - lg) ** 2 \
        + pi_b * lb * (1 - lb) + (1 - pi_b) * lg * (1 - lg)
    assert abs(rate - expected) <= SIGMAS * math.sqrt(var / n)


def test_delay_and_jitter_are_uniform():
    """Delays lie in [delay, delay + jitter] and pass a Kolmogorov-Smirnov test
    against the uniform law (p > 1e-3)."""
    n = 20000
    imp = Impairer(Impairment(delay_ms=20.0, jitter_ms=10.0), random.Random(31))
    delays_ms = np.array([imp.decide()[0] for _ in range(n)]) * 1e3
    assert delays_ms.min() >= 20.0 - 1e-9 and delays_ms.max() <= 30.0 + 1e-9
    assert stats.kstest(delays_ms, stats.uniform(loc=20.0, scale=10.0).cdf).pvalue > 1e-3


def test_constant_delay_without_jitter():
    imp = Impairer(Impairment(delay_ms=7.5), random.Random(0))
    assert all(imp.decide() == (0.0075,) for _ in range(100))


def test_duplicate_rate_and_independent_copy_jitter():
    n, p = 20000, 0.25
    imp = Impairer(Impairment(duplicate=p, jitter_ms=10.0), random.Random(41))
    out = [imp.decide() for _ in range(n)]
    assert all(len(d) in (1, 2) for d in out)
    pairs = np.array([d for d in out if len(d) == 2])
    assert abs(len(pairs) - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))
    # Independent jitter: the two delays are uncorrelated (|r| within 4 / sqrt(m)).
    r = np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]
    assert abs(r) <= SIGMAS / math.sqrt(len(pairs))


def test_same_seed_same_decisions():
    imp = Impairment.gilbert_elliott(0.1, 3.0, jitter_ms=5.0, duplicate=0.1)
    assert predicted(imp, 5, 2000) == predicted(imp, 5, 2000)
    assert predicted(imp, 5, 2000) != predicted(imp, 6, 2000)


# -- the relay, over sockets ----------------------------------------------------------

@pytest.mark.parametrize("target_addr, message", [
    (("10.0.0.1", 9000), "loopback"),
    (("0.0.0.0", 9000), "loopback"),
    (("192.168.1.10", 9000), "loopback"),
    (("example.com", 9000), "loopback"),
    (("::1", 9000), "loopback"),
    (("127.0.0.1", 0), "port"),
    (("127.0.0.1", 70000), "port"),
    ("127.0.0.1:9000", "pair"),
])
def test_non_loopback_target_refused(target_addr, message):
    with pytest.raises(ValueError, match=message):
        UdpRelay(target_addr)


@pytest.mark.parametrize("kw, message", [({"max_seconds": 0}, "max_seconds"),
                                         ({"max_seconds": math.inf}, "max_seconds"),
                                         ({"max_packets": 0}, "max_packets")])
def test_bad_limits_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        UdpRelay(("127.0.0.1", 9), **kw)


def test_localhost_target_and_loopback_address(target):
    relay = UdpRelay(("localhost", target.getsockname()[1]))
    try:
        assert relay.target == ("127.0.0.1", target.getsockname()[1])
        assert relay.address[0] == "127.0.0.1" and relay.address[1] > 0
    finally:
        relay.stop()


def test_no_impairment_passes_every_packet_in_order(client, target):
    n = 1000
    with UdpRelay(target.getsockname()) as relay:
        got = pump(relay, client, target, n)
        counts = relay.counters
    assert seqs(got) == list(range(n))
    assert all(len(p) == 40 for p, _, _ in got)
    assert counts["upstream"] == {"received": n, "dropped": 0, "duplicated": 0, "sent": n,
                                  "send_errors": 0}


@pytest.mark.parametrize("impairment", [Impairment(loss=0.2),
                                        Impairment.gilbert_elliott(0.15, 4.0)],
                         ids=["random", "gilbert_elliott"])
def test_loss_through_sockets_matches_the_decisions(client, target, impairment):
    """The relay delivers exactly the packets an Impairer with the same seed keeps."""
    n, seed = 2000, 77
    with UdpRelay(target.getsockname(), upstream=impairment, seed=seed) as relay:
        got = pump(relay, client, target, n)
        counts = relay.counters["upstream"]
    keep = [i for i, d in enumerate(predicted(impairment, seed, n)) if d]
    assert seqs(got) == keep
    assert counts["received"] == n
    assert counts["dropped"] == n - len(keep)
    assert counts["sent"] == len(keep)


def test_delay_is_measured_at_the_target(client, target):
    """One-way delay of 40 packets sent 5 ms apart by another thread while this
    one waits on the target.  The relay may never send early (hard lower
    bound, same clock at both ends); the median may exceed the delay by
    scheduling latency, allowed 5 ms on a busy machine."""
    delay_ms, n = 25.0, 40

    def send():
        for seq in range(n):
            client.sendto(packet(seq), relay.address)
            time.sleep(0.005)

    with UdpRelay(target.getsockname(), upstream=Impairment(delay_ms=delay_ms)) as relay:
        deadline = time.monotonic() + WAIT_S
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        got = recv_n(target, n, deadline)
        sender.join(WAIT_S)
    assert seqs(got) == list(range(n))
    measured_ms = [(t - HEADER.unpack_from(p)[1]) * 1e3 for p, _, t in got]
    assert min(measured_ms) >= delay_ms - 1e-6
    assert statistics.median(measured_ms) <= delay_ms + 5.0
    print(f"one-way delay {delay_ms} ms: measured min {min(measured_ms):.3f}, "
          f"median {statistics.median(measured_ms):.3f}, max {max(measured_ms):.3f} ms")


def test_jitter_reorders_back_to_back_packets(client, target):
    n = 200
    imp = Impairment(jitter_ms=20.0)
    with UdpRelay(target.getsockname(), upstream=imp, seed=3) as relay:
        deadline = time.monotonic() + WAIT_S
        for seq in range(n):
            client.sendto(packet(seq), relay.address)
        got = recv_n(target, n, deadline)
    order = seqs(got)
    assert sorted(order) == list(range(n))
    inversions = sum(1 for a, b in itertools.pairwise(order) if a > b)
    assert inversions > n // 10


def test_duplicates_are_counted_and_delivered(client, target):
    n, seed = 600, 9
    imp = Impairment(duplicate=0.3, jitter_ms=2.0)
    with UdpRelay(target.getsockname(), upstream=imp, seed=seed) as relay:
        got = pump(relay, client, target, n)
        counts = relay.counters["upstream"]
    copies = np.bincount(seqs(got), minlength=n)
    doubled = [i for i, d in enumerate(predicted(imp, seed, n)) if len(d) == 2]
    assert copies.min() >= 1 and copies.max() <= 2
    assert list(np.flatnonzero(copies == 2)) == doubled
    assert counts["duplicated"] == len(doubled)
    assert counts["sent"] == n + len(doubled) == len(got)
    assert abs(len(doubled) - 0.3 * n) <= SIGMAS * math.sqrt(n * 0.3 * 0.7)


def test_clients_get_distinct_upstream_ports_and_their_own_replies(target):
    clients = [udp_socket() for _ in range(3)]
    try:
        with UdpRelay(target.getsockname()) as relay:
            deadline = time.monotonic() + WAIT_S
            for rounds in range(3):
                for i, c in enumerate(clients):
                    c.sendto(b"client-%d" % i, relay.address)
            got = recv_n(target, 9, deadline)
            sources = {}
            for payload, source, _ in got:
                sources.setdefault(payload, set()).add(source)
                target.sendto(b"reply:" + payload, source)
            replies = [recv_n(c, 3, deadline) for c in clients]
            extra = [recv_quiet(c, 0.05) for c in clients]
            mapping = relay.clients
        # One stable upstream address per client, all distinct, on loopback, not the relay's own.
        assert len(got) == 9 and all(len(s) == 1 for s in sources.values())
        ports = [next(iter(sources[b"client-%d" % i])) for i in range(3)]
        assert len(set(ports)) == 3 and all(h == "127.0.0.1" for h, _ in ports)
        assert relay.address not in ports
        assert mapping == {c.getsockname(): ports[i] for i, c in enumerate(clients)}
        for i in range(3):
            assert [p for p, _, _ in replies[i]] == [b"reply:client-%d" % i] * 3
            assert all(src == relay.address for _, src, _ in replies[i])
            assert extra[i] == []
    finally:
        for c in clients:
            c.close()


def test_downstream_impairment_and_set_impairment_while_running(client, target):
    with UdpRelay(target.getsockname(), downstream=Impairment(loss=1.0)) as relay:
        deadline = time.monotonic() + WAIT_S
        client.sendto(b"ping", relay.address)
        (_, upstream_addr, _), = recv_n(target, 1, deadline)
        for _ in range(20):
            target.sendto(b"pong", upstream_addr)
        assert wait_for(lambda: relay.counters["downstream"]["received"] == 20, deadline)
        assert recv_quiet(client, 0.05) == []
        assert relay.counters["downstream"]["dropped"] == 20

        relay.set_impairment(downstream=Impairment(), upstream=Impairment(loss=1.0))
        for _ in range(20):
            target.sendto(b"pong", upstream_addr)
        assert len(recv_n(client, 20, deadline)) == 20
        for _ in range(20):
            client.sendto(b"ping", relay.address)
        assert wait_for(lambda: relay.counters["upstream"]["received"] == 21, deadline)
        assert recv_quiet(target, 0.05) == []
        assert wait_for(lambda: sent_or_failed(relay, "downstream") == 20, deadline)
        counts = relay.counters
    assert counts["downstream"]["sent"] == 20 and counts["upstream"]["dropped"] == 20
    with pytest.raises(ValueError, match="loss must be"):
        relay.set_impairment(upstream=Impairment(loss=-1))


def test_rebind_moves_the_client_to_a_new_port(client, target):
    with UdpRelay(target.getsockname()) as relay:
        deadline = time.monotonic() + WAIT_S
        client.sendto(b"a", relay.address)
        (_, old, _), = recv_n(target, 1, deadline)
        new = relay.rebind(client.getsockname())
        assert new != old and new[0] == "127.0.0.1"
        client.sendto(b"b", relay.address)
        (payload, source, _), = recv_n(target, 1, deadline)
        assert (payload, source) == (b"b", new)
        target.sendto(b"to-old", old)       # the old port is closed: nothing arrives
        target.sendto(b"to-new", new)
        assert [p for p, _, _ in recv_quiet(client, 0.1)] == [b"to-new"]
        with pytest.raises(KeyError, match="unknown client"):
            relay.rebind(("127.0.0.1", 1))


def test_max_seconds_stops_the_thread(client, target):
    relay = UdpRelay(target.getsockname(), max_seconds=0.2).start()
    try:
        assert relay.wait(5.0)
        assert not relay.running and relay.stop_reason == "max_seconds"
        client.sendto(b"late", relay.address)      # the relay's socket is closed
        assert recv_quiet(target, 0.05) == []
    finally:
        relay.stop()


def test_max_packets_stops_the_thread(client, target):
    relay = UdpRelay(target.getsockname(), max_packets=10).start()
    try:
        for seq in range(50):
            client.sendto(packet(seq), relay.address)
        assert relay.wait(5.0)
        assert relay.stop_reason == "max_packets"
        assert relay.counters["upstream"]["received"] == 10
        assert set(seqs(recv_quiet(target, 0.05))) <= set(range(10))
    finally:
        relay.stop()


def test_context_manager_stops_and_relay_is_single_use(target):
    with UdpRelay(target.getsockname()) as relay:
        assert relay.running
        with pytest.raises(RuntimeError, match="only once"):
            relay.start()
    assert not relay.running and relay.stop_reason == "stopped"
    relay.stop()                                  # idempotent
    with pytest.raises(RuntimeError, match="only once"):
        relay.start()


def test_a_failing_relay_thread_is_reported_by_stop(client, target):
    relay = UdpRelay(target.getsockname()).start()

    def broken():
        raise ZeroDivisionError("boom")

    relay._impairers["upstream"].decide = broken
    client.sendto(b"x", relay.address)
    assert relay.wait(5.0) and relay.stop_reason == "error"
    with pytest.raises(RuntimeError, match="thread failed") as info:
        relay.stop()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
