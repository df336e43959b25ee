"""Loss measurement and the redundancy it calls for (engine.feedback)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.engine.feedback import (
    MAX_DEPTH,
    TARGET_RESIDUAL,
    LossMeter,
    ReceiverRedundancy,
    RedundancyControl,
    redundancy_depth,
)

# ----------------------------------------------------------------------------- depth

def reference_depth(p, burst, max_depth=MAX_DEPTH):
    """The definition, by counting: the smallest d with p ** (d + 1) <=
    TARGET_RESIDUAL, at least burst + 1 when there are loss runs (burst >= 1),
    at most ``max_depth``; no loss, no redundancy."""
    if p == 0.0:
        return 0
    d = 0
    while p ** (d + 1) > TARGET_RESIDUAL and d < max_depth:
        d += 1
    if burst >= 1.0:
        d = max(d, math.ceil(burst) + 1)
    return min(d, max_depth)


def on_a_boundary(p, d):
    """True when p ** (d + 1) is within rounding of TARGET_RESIDUAL (where the
    logarithms of the implementation and the powers here may round apart)."""
    return abs((d + 1) * math.log(p) - math.log(TARGET_RESIDUAL)) < 1e-9


def test_depth_examples_by_hand():
    """Worked out for any residual target between 0.0016 and 0.005."""
    assert 0.0016 <= TARGET_RESIDUAL <= 0.005
    # 1 %: 0.01 > target, 0.01 ** 2 = 0.0001 -> 1
    assert redundancy_depth(0.01) == 1
    # 10 %: 0.1 ** 2 = 0.01 > target, 0.1 ** 3 = 0.001 -> 2
    assert redundancy_depth(0.1) == 2
    # 20 %: 0.2 ** 3 = 0.008 > target, 0.2 ** 4 = 0.0016 -> 3
    assert redundancy_depth(0.2) == 3
    # 5 % in runs of 3 calls for 4 (one more than the run); 2.2 rounds up to 3
    assert redundancy_depth(0.05, burst=3) == 4
    assert redundancy_depth(0.05, burst=2.2) == 4
    assert redundancy_depth(0.0) == 0 and redundancy_depth(0.0, burst=5) == 0
    assert redundancy_depth(1.0) == MAX_DEPTH
    assert redundancy_depth(0.9) == MAX_DEPTH            # 0.9 ** 17 = 0.17
    assert redundancy_depth(0.1, burst=40) == MAX_DEPTH
    assert redundancy_depth(0.2, max_depth=2) == 2


@settings(max_examples=500)
@given(p=st.floats(TARGET_RESIDUAL, 1.0, exclude_min=True),
       burst=st.one_of(st.just(0.0), st.floats(1.0, 30.0)),
       max_depth=st.integers(1, MAX_DEPTH))
def test_depth_against_its_definition(p, burst, max_depth):
    got = redundancy_depth(p, burst, max_depth=max_depth)
    want = reference_depth(p, burst, max_depth)
    if got != want:
        assert abs(got - want) == 1 and on_a_boundary(p, min(got, want)), (got, want)


def test_no_redundancy_for_loss_below_the_target():
    """Loss already at or below the residual target with no loss runs to
    cover: the smallest d with p ** (d + 1) <= TARGET_RESIDUAL is 0."""
    for p in (1e-6, 0.2 * TARGET_RESIDUAL, 0.8 * TARGET_RESIDUAL, TARGET_RESIDUAL):
        assert reference_depth(p, 0.0) == 0
        assert redundancy_depth(p) == 0, p


@pytest.mark.parametrize("p", [-0.01, 1.01, float("nan")])
def test_depth_rejects_a_fraction_outside_0_1(p):
    with pytest.raises(ValueError, match=r"fraction_lost must be in \[0, 1\]"):
        redundancy_depth(p)


# ----------------------------------------------------------------------------- LossMeter

def reference_loss_reports(timeline):
    """Slow reference for the receiver's loss reports.

    ``timeline``: ("packet", extended sequence number) and ("report",) in
    order.  Each report covers the sequence numbers after the previous
    report's highest (or from the first packet) up to the highest seen; a
    number counts as received when it arrived in this interval.  The
    fraction lost is the share of numbers not received; a loss run is a
    maximal stretch of numbers not received, between two that arrived (the
    one before may be the previous report's highest); the burst is the 95th
    percentile of the run lengths (0 with no run); the third item is the
    number lost.  A report with no packet in its interval (none ever, or none
    newer than the previous report's highest) is None, and its interval is
    the next report's.
    """
    reports = []
    first = highest = None
    got = set()
    for item in timeline:
        if item[0] == "packet":
            s = item[1]
            if first is None:
                first = s
            if s >= first:
                got.add(s)
            highest = s if highest is None else max(highest, s)
            continue
        if highest is None or highest < first:
            reports.append(None)
            continue
        span = range(first, highest + 1)
        runs, length = [], 0
        for s in span:
            if s in got:
                if length:
                    runs.append(length)
                length = 0
            else:
                length += 1
        lost = sum(1 for s in span if s not in got)
        fraction = lost / len(span) if len(span) else 0.0
        burst = float(np.percentile(runs, 95)) if runs else 0.0
        reports.append((fraction, burst, lost))
        first, got = highest + 1, set()
    return reports


def run_meter(timeline):
    meter = LossMeter()
    out = []
    for item in timeline:
        if item[0] == "packet":
            meter.add(item[1])
        else:
            out.append(meter.report())
    return out, meter


def assert_reports_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g is None) == (w is None), (g, w)
        if g is not None:
            assert g[0] == pytest.approx(w[0], abs=1e-12), (g, w)
            assert g[1] == pytest.approx(w[1], abs=1e-12), (g, w)


def test_loss_meter_by_hand():
    """0-9 arrive; then 12-15 (10 and 11 lost, between 9 and 12); then 16,
    17, 20, 21 (18 and 19 lost)."""
    timeline = ([("packet", s) for s in range(10)] + [("report",)]
                + [("packet", s) for s in (12, 13, 14, 15)] + [("report",)]
                + [("packet", s) for s in (16, 17, 20, 21)] + [("report",)] + [("report",)])
    got, meter = run_meter(timeline)
    assert got[0] == (0.0, 0.0)
    assert got[2] == pytest.approx((2 / 6, 2.0))
    assert got[3] is None                             # nothing new since the last report
    assert meter.highest == 21 and meter.cumulative_lost == 4
    assert got[1] == pytest.approx((2 / 6, 2.0))       # the run 10-11 lies between 9 and 12
    assert_reports_equal(got, reference_loss_reports(timeline))


def test_loss_meter_reports_none_before_any_packet():
    assert LossMeter().report() is None


@st.composite
def arrival_patterns(draw):
    """Packets from a random start, each lost with a random chance (in runs),
    reordered by up to a few places, sometimes duplicated, with reports in
    between."""
    n = draw(st.integers(1, 120))
    start = draw(st.integers(0, 10**6))
    p_enter = draw(st.floats(0.0, 0.5))
    p_stay = draw(st.floats(0.0, 0.9))
    losing = False
    seqs = []
    for i in range(n):
        losing = draw(st.floats(0, 1)) < (p_stay if losing else p_enter)
        if not losing:
            seqs.append(start + i)
    keys = [i + draw(st.floats(0, 4)) for i in range(len(seqs))]
    seqs = [s for _, s in sorted(zip(keys, seqs))]
    timeline = []
    for s in seqs:
        timeline.append(("packet", s))
        if draw(st.floats(0, 1)) < 0.05:
            timeline.append(("packet", s))
        if draw(st.floats(0, 1)) < 0.1:
            timeline.append(("report",))
    timeline.append(("report",))
    return timeline


@settings(max_examples=400, deadline=None)
@given(timeline=arrival_patterns())
def test_loss_meter_against_a_slow_reference(timeline):
    got, _ = run_meter(timeline)
    assert_reports_equal(got, reference_loss_reports(timeline))


@settings(max_examples=200, deadline=None)
@given(timeline=arrival_patterns())
def test_loss_meter_cumulative_lost_is_the_sum_of_the_intervals(timeline):
    """The running total of lost packets, after each report, is the sum of
    the packets the slow reference finds lost in the intervals so far: what
    the sender measures its loss from when reports go missing."""
    meter = LossMeter()
    want = iter(reference_loss_reports(timeline))
    total = 0
    for item in timeline:
        if item[0] == "packet":
            meter.add(item[1])
            continue
        meter.report()
        w = next(want)
        total += 0 if w is None else w[2]
        assert meter.cumulative_lost == total


@settings(max_examples=200, deadline=None)
@given(timeline=arrival_patterns())
def test_loss_meter_fraction_against_a_slow_reference(timeline):
    """The fraction lost alone (which does not depend on where runs start)."""
    got, _ = run_meter(timeline)
    want = reference_loss_reports(timeline)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            assert g[0] == pytest.approx(w[0], abs=1e-12)


# ----------------------------------------------------------------------------- RedundancyControl

def clean_then_bad(rc, bad_at=2.0, every=0.25, per_report=12):
    """Feed ``rc`` clean reports (12 packets each) until ``bad_at``, then one
    with 4 of 12 lost in runs of 2; returns the depth just before and after
    it, the highest sequence number and the packets lost so far."""
    highest, lost = 1000, 0
    t, before = 0.0, None
    while t < bad_at - 1e-9:
        highest += per_report
        before = rc.add(t, 0.0, 0.0, highest, lost)
        t += every
    highest += per_report
    lost += 4
    return before, rc.add(bad_at, 4 / 12, 2.0, highest, lost), highest, lost


def test_redundancy_control_rises_at_once_and_falls_after_its_window():
    """Reports every 0.25 s of 12 packets: clean, then one bad report (4 of
    12 lost, runs of 2), then clean again.  The depth rises with the bad
    report itself (to at least 3, one more than its runs), stays there as
    long as that report is in the window (2 s, the default), and is 0 again
    with the first report after it."""
    rc = RedundancyControl()
    before, after, highest, lost = clean_then_bad(rc)
    assert before == 0 and rc.window_s == 2.0
    assert after >= 3 and rc.depth == after
    t = 2.0
    while True:
        t += 0.25
        highest += 12
        depth = rc.add(t, 0.0, 0.0, highest, lost)
        if t <= 2.0 + rc.window_s + 1e-9:
            assert depth >= 3, t
        else:
            assert depth == 0 and rc.fraction_lost == 0.0, t
            break


def test_redundancy_control_measures_across_lost_reports():
    """About 70 % loss: intervals of 5 packets lose 3 and 4 in turn, a
    report is sent after each and only every fourth gets
    through (every 0.125 s); the last interval lost nothing.  The last
    report heard (at 4.875 s, its own fraction 0) still shows the loss
    since the window's baseline (the report at 2.375 s, the newest before
    2.875 s) from the running totals: 66 of 100 packets, and the depth
    stays deep (its own fraction would call for the burst's depth only)."""
    rc = RedundancyControl()
    highest, lost = 0, 0
    for k in range(40):
        highest += 5
        lost += 0 if k == 39 else 3 + k % 2
        if k % 4 == 3:
            rc.add(0.125 * k, 0.0 if k == 39 else (3 + k % 2) / 5, 4.0, highest, lost)
    assert rc.fraction_lost == pytest.approx(66 / 100, rel=1e-12)
    assert rc.depth == redundancy_depth(0.66, 4.0) > redundancy_depth(0.0, 4.0)


def test_redundancy_control_uses_the_report_itself_without_totals():
    """A first report, or one without running totals: its own fraction."""
    rc = RedundancyControl(window_s=5.0)
    assert rc.add(0.0, 0.3, 0.0, 100, 0) == redundancy_depth(0.3)
    rc = RedundancyControl(window_s=5.0)
    rc.add(0.0, 0.1)
    assert rc.add(1.0, 0.5) == redundancy_depth(0.5) and rc.fraction_lost == 0.5


def reference_control(reports, window):
    """Slow reference for RedundancyControl: after report ``i`` (time ``t``),
    the baseline is the newest report older than ``t - window`` (or the
    first).  The fraction lost is the growth of the running lost total over
    the growth of the highest sequence number from the baseline to report
    ``i`` (clamped to 0..1), or report ``i``'s own fraction (clamped) when
    the baseline is report ``i`` itself or the highest did not grow by 1 to
    2**15 - 1; the burst is the largest of the reports from the baseline on
    that are not older than ``t - window``."""
    out = []
    for i, (t, p, burst, highest, lost) in enumerate(reports):
        older = [j for j in range(i) if reports[j][0] < t - window]
        b = older[-1] if older else 0
        span = highest - reports[b][3]
        if b != i and 0 < span < 2**15:
            mean = min(1.0, max(0.0, (lost - reports[b][4]) / span))
        else:
            mean = min(1.0, max(0.0, p))
        worst = max(r[2] for r in reports[b:i + 1] if r[0] >= t - window)
        out.append((redundancy_depth(mean, worst), mean))
    return out


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(0.01, 1.0), st.floats(-0.1, 1.1),
                                st.one_of(st.just(0.0), st.floats(1.0, 10.0)),
                                st.integers(0, 60), st.integers(0, 60)),
                      min_size=1, max_size=40),
       window=st.floats(0.5, 10.0))
def test_redundancy_control_against_a_slow_reference(steps, window):
    rc = RedundancyControl(window_s=window)
    t, highest, lost = 0.0, 5000, 0
    reports = []
    for dt, p, burst, packets, newly_lost in steps:
        t += dt
        highest += packets
        lost += min(newly_lost, packets)
        reports.append((t, p, burst, highest, lost))
    for (t, p, burst, h, n), (depth, mean) in zip(reports, reference_control(reports, window)):
        assert rc.add(t, p, burst, h, n) == depth == rc.depth
        assert rc.fraction_lost == pytest.approx(mean, rel=1e-9, abs=1e-12)


def test_receiver_redundancy_takes_the_deepest_source_and_forgets_gone_ones():
    """Two sources with their own numbering: the receiver's depth is the
    deeper one's; a source with no report for ``forget_s`` no longer counts."""
    rr = ReceiverRedundancy(forget_s=10.0)
    rr.add(0.0, 1, 0.5, 2.0, 100, 0)
    rr.add(0.1, 2, 0.0, 0.0, 70000, 0)
    rr.add(1.0, 1, 0.5, 2.0, 150, 25)          # 25 of 50 lost
    assert rr.depth == redundancy_depth(0.5, 2.0) and rr.fraction_lost == 0.5
    for k in range(1, 12):
        rr.add(1.0 + k, 2, 0.0, 0.0, 70000 + 50 * k, 0)
    assert rr.depth == 0 and rr.fraction_lost == 0.0


def test_redundancy_control_clamps_odd_fractions():
    rc = RedundancyControl()
    assert rc.add(0.0, 1.5) == MAX_DEPTH and rc.fraction_lost == 1.0
    rc = RedundancyControl()
    assert rc.add(0.0, -0.2) == 0 and rc.fraction_lost == 0.0
