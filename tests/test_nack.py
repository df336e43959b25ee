"""MissingPackets: which sequence numbers to ask for, when, how often, and bounded."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from stagevox.engine.nack import MissingPackets


def test_a_gap_marks_the_skipped_numbers_with_their_frame_times():
    m = MissingPackets()
    m.gap(100, 104, 4000, 960, now=1.0)
    assert sorted(m.entries) == [101, 102, 103]
    assert [m.entries[s][0] for s in (101, 102, 103)] == [4000 - 3 * 960, 4000 - 2 * 960,
                                                          4000 - 960]


def test_a_gap_skips_frames_already_held_and_is_at_most_max_gap_long():
    m = MissingPackets(max_gap=5)
    m.gap(0, 1000, 96000, 960, now=0.0, has_frame=lambda ts: ts == 96000 - 2 * 960)
    assert sorted(m.entries) == [995, 996, 997, 999]


def test_due_waits_to_settle_then_asks_once_per_interval_up_to_max_tries():
    m = MissingPackets()
    m.gap(10, 12, 0, 960, now=0.0)
    assert m.due(0.002, 0.05, 3) == []              # maybe only reordered
    assert m.due(0.004, 0.05, 3) == [11]
    assert m.due(0.030, 0.05, 3) == []              # asked 26 ms ago
    assert m.due(0.055, 0.05, 3) == [11]
    assert m.due(0.110, 0.05, 3) == [11]
    assert m.tries(11) == 3
    assert m.due(0.200, 0.05, 3) == [] and 11 not in m     # given up


def test_wanted_filters_and_arrival_clears():
    m = MissingPackets()
    m.gap(0, 5, 5 * 960, 960, now=0.0)
    assert m.due(1.0, 0.0, 5, wanted=lambda seq, ts: seq % 2 == 0) == [2, 4]
    assert m.arrived(2) and not m.arrived(2)
    m.forget_frames([3 * 960])
    assert sorted(m.entries) == [1, 4]
    m.forget_before(4 * 960)
    assert sorted(m.entries) == [4]


def test_overdue_marks_the_next_numbers_due_at_once():
    m = MissingPackets()
    m.overdue(50, 48000, 960, 3)
    assert sorted(m.entries) == [51, 52, 53]
    assert m.entries[53][0] == 48000 + 3 * 960 and m.entries[51][1] == -math.inf
    assert m.due(0.0, 0.01, 2) == [51, 52, 53]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 10**6)), max_size=50))
def test_the_table_stays_bounded_whatever_the_gaps(jumps):
    """Hostile sequence-number jumps cost bounded memory: never more than
    max_entries, and the oldest go first."""
    m = MissingPackets(max_gap=64, max_entries=100)
    for base, size in jumps:
        m.gap(base, base + size, 0, 960, now=0.0)
        assert len(m) <= 100
        m.overdue(base + size, 0, 960, 10**6)
        assert len(m) <= 100
