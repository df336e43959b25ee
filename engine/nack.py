"""Missing-packet tracking for retransmission requests (NACK), with no I/O.

One ``MissingPackets`` per received stream: the receiver marks the sequence
numbers a later packet skipped and those overdue while nothing arrives, and
asks ``due`` which to request now.  Each is asked for a bounded number of
times, no more often than a given interval, and the table itself is bounded,
so a hostile sequence-number jump costs a fixed amount of work and memory.
The server uses it on each host's uplink, the jitter buffer on each stream it
plays.
"""

import math

#: Sequence numbers behind the newest that a gap may mark missing.
MAX_GAP = 64
#: Entries kept at most; the oldest go first.
MAX_ENTRIES = 256


class MissingPackets:
    """Sequence numbers (extended) not received yet, each with the timestamp
    its frame should have, when it was first missed, how often and when it was
    last asked for."""

    def __init__(self, max_gap=MAX_GAP, max_entries=MAX_ENTRIES):
        self.max_gap = max_gap
        self.max_entries = max_entries
        self.entries = {}            # ext seq -> [ext ts, first missed, tries, last asked]

    def __len__(self):
        return len(self.entries)

    def __contains__(self, ext_seq):
        return ext_seq in self.entries

    def gap(self, last_seq, ext_seq, ext_ts, step, now, has_frame=None):
        """A packet ``ext_seq`` (frame at ``ext_ts``) arrived after ``last_seq``:
        mark the skipped numbers between them (at most ``max_gap`` of them)
        whose frames (``ext_ts - k * step``) are not already held."""
        for seq in range(max(last_seq + 1, ext_seq - self.max_gap), ext_seq):
            ts = ext_ts - (ext_seq - seq) * step
            if seq not in self.entries and not (has_frame is not None and has_frame(ts)):
                self._add(seq, ts, now)

    def overdue(self, last_seq, last_ts, step, count, now=-math.inf):
        """Nothing after ``last_seq`` for ``count`` frame times: mark the next
        ``count`` numbers (at most ``max_gap``) missing."""
        for i in range(1, min(count, self.max_gap) + 1):
            if last_seq + i not in self.entries:
                self._add(last_seq + i, last_ts + i * step, now)

    def arrived(self, ext_seq):
        """``ext_seq`` came (or is no longer wanted): True if it was missing."""
        return self.entries.pop(ext_seq, None) is not None

    def tries(self, ext_seq):
        """How often ``ext_seq`` was asked for (0 when not missing or never asked)."""
        entry = self.entries.get(ext_seq)
        return 0 if entry is None else entry[2]

    def forget_frames(self, timestamps):
        """Drop the entries whose frames (ext timestamps) were recovered otherwise."""
        got = set(timestamps)
        for seq in [s for s, e in self.entries.items() if e[0] in got]:
            del self.entries[seq]

    def forget_before(self, ext_ts):
        """Drop the entries whose frames lie before ``ext_ts`` (past playout)."""
        for seq in [s for s, e in self.entries.items() if e[0] < ext_ts]:
            del self.entries[seq]

    def clear(self):
        self.entries.clear()

    def due(self, now, interval, max_tries, *, settle=0.003, wanted=None):
        """The extended sequence numbers to ask for now, oldest first.

        An entry is due once ``settle`` seconds after it was first missed (a
        packet only reordered is not asked for), at most ``max_tries`` times,
        no more often than every ``interval`` seconds, and when ``wanted(seq,
        ts)`` (if given) says it is still of use.  Entries asked ``max_tries``
        times are dropped.  Marks the returned entries as asked now.
        """
        out = []
        for seq, entry in list(self.entries.items()):
            ts, first, tries, last = entry
            if tries >= max_tries:
                del self.entries[seq]
                continue
            if now - first < settle or now - last < interval:
                continue
            if wanted is not None and not wanted(seq, ts):
                continue
            entry[2] += 1
            entry[3] = now
            out.append(seq)
        return out

    def _add(self, seq, ts, now):
        if len(self.entries) >= self.max_entries:
            del self.entries[min(self.entries)]
        self.entries[seq] = [ts, now, 0, -math.inf]
