"""Adaptive jitter buffer: packets in, evenly paced decoded audio out.

No sockets and no clock of its own: every call takes ``now`` (seconds, any
monotonic origin), so the buffer is tested by feeding it packets with made-up
arrival times.

What it does with one remote stream (one SSRC):

- stores each frame by its RTP timestamp, from whichever copy arrives first:
  the packet itself, a RED (RFC 2198) redundant block, or a retransmission
  asked for with NACK; duplicates and frames that come after their playout
  time are counted and dropped;
- decodes in timestamp order when the listener pulls audio; a frame still
  missing is rebuilt from the next frame's Opus in-band FEC when that frame is
  here, and otherwise concealed by the decoder's packet-loss concealment;
- chooses its delay from what it measures: the delay of each frame's first
  copy relative to the fastest recent one (so network jitter, reordering,
  RED recovery and retransmission all count), takes a high quantile of it,
  and moves the playout point towards that target by shortening or
  lengthening decoded frames by one pitch period (``stretch``); a delay that
  is too long is shortened away in the pauses between words, and one far too
  long (playout more than ``_JUMP_S`` behind after waiting out a loss burst
  or a stall) is skipped, so a long burst costs the burst's audio, not the
  seconds of hurried speech it would take to catch up;
- lists the sequence numbers worth a retransmission request (those still
  missing whose playout time is more than a round trip away, or that the
  buffer is waiting for);
- drops packets far out of sequence, and follows a sender that restarted
  its numbering (RFC 3550, appendix A.1);
- keeps receiver statistics for the sender's redundancy control: the fraction
  of packets lost on the path, the length of loss bursts and the running
  total lost.

When nothing comes for a while (a muted host, a host gone, or a long gap in
the path) the buffer conceals briefly, fades to silence and waits, keeping
its place in the stream: if the frames of the gap then arrive (by RED or
retransmission), playout goes on where it stopped; otherwise the next
frames start it afresh.
"""

import bisect
import collections
import math

import numpy as np

from . import stretch
from .feedback import LossMeter
from .nack import MissingPackets
from .red import decode_red
from .rtp import (CLOCK_RATE, PT_RED, PacketError, SequenceUnwrapper, TimestampUnwrapper,
                  seq_diff)

#: Sequence jumps beyond these (RFC 3550, appendix A.1) mean a restarted or
#: misbehaving sender rather than loss or reordering.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
#: Frames older than this behind the playout point are forgotten.
_KEEP_BEHIND_S = 0.5
#: When no packet has come for this long beyond the delay target, the stream
#: is considered stopped.
_STALL_S = 0.1
#: Number of recent frames the delay target is computed from.
_HISTORY_FRAMES = 500
#: Window for the fastest recent transit (the zero point of "lateness").
_BASE_WINDOW_S = 4.0
#: Longest concealment played while waiting for a late frame (see _decode_next).
_MAX_EXPAND_S = 0.3
#: Playout drift (smoothed with this weight per frame) inside this band is
#: left alone.
_DRIFT_SMOOTHING = 0.2
_DEAD_BAND_S = 0.008
#: A frame this far below the recent speech level counts as a pause, where
#: shortening is inaudible; the level decays by ``_LEVEL_DECAY_DB_S``.
_QUIET_DB = -30.0
_LEVEL_DECAY_DB_S = 10.0
#: Below this, a frame is silence and any number in a row may be shortened;
#: above it, at most ``_MAX_SHORTEN_RUN`` frames in a row are (one pitch
#: period of a 20 ms frame can be half of it: a word sped up twofold).
_SILENT_DB = -45.0
_MAX_SHORTEN_RUN = 1
#: Outside pauses, the buffer shortens only when it is this share of the
#: target too late (besides the dead band): a too long delay costs nothing
#: until the next pause, a sped-up word costs intelligibility.
_LOUD_SHORTEN_SHARE = 0.5
#: In pauses, this share of the target (besides the dead band) is enough.
_PAUSE_SHORTEN_SHARE = 0.1
#: After a stall, a frame this many frames from where playout stopped means
#: the path had a gap and the stream goes on (see ``_resumable``).
_RESUME_FRAMES = 3
#: Playout this far behind the ideal point (after a long wait for a late
#: frame, or a stall that the path's frames then resumed) skips ahead to it
#: rather than stretching: a long loss burst then costs the burst's audio,
#: not the seconds of hurried speech it would take to catch up.
_JUMP_S = 0.1


class _MinWindow:
    """Minimum of the values added in the last ``window`` seconds."""

    def __init__(self, window):
        self.window = window
        self._items = collections.deque()     # (time, value), values increasing

    def add(self, now, value):
        while self._items and self._items[-1][1] >= value:
            self._items.pop()
        self._items.append((now, value))
        while self._items[0][0] < now - self.window:
            self._items.popleft()

    @property
    def value(self):
        return self._items[0][1] if self._items else None


class _QuantileWindow:
    """The last ``maxlen`` values added, kept sorted as well, so a quantile
    costs a look-up instead of a sort on every pull (a server mixing 17
    hosts asks 1,700 times a second).  ``quantile(q)`` equals
    ``numpy.quantile(values, q)`` (its default, linear interpolation)."""

    def __init__(self, maxlen):
        self._order = collections.deque(maxlen=maxlen)
        self._sorted = []

    def append(self, value):
        if len(self._order) == self._order.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._order[0])]
        self._order.append(value)
        bisect.insort(self._sorted, value)

    def clear(self):
        self._order.clear()
        self._sorted.clear()

    def __len__(self):
        return len(self._sorted)

    def quantile(self, q):
        h = (len(self._sorted) - 1) * q
        lo = math.floor(h)
        a = self._sorted[lo]
        b = self._sorted[min(lo + 1, len(self._sorted) - 1)]
        t = h - lo
        return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


class JitterBuffer:
    """Reorders, recovers, decodes, conceals and paces one remote stream.

    ``decoder``: an ``engine.codec`` decoder (``decode``, ``decode_fec``,
    ``conceal``, ``reset``, ``channels``); its output is at the RTP clock
    rate (48 kHz).  ``min_delay_ms``/``max_delay_ms`` bound the delay target;
    ``quantile`` is the share of frames that should arrive before their
    playout time (the rest are recovered from FEC or concealed).
    ``sample_rate``: the decoder's output rate.  Raises ``ValueError`` for
    bounds or a quantile out of range.
    """

    def __init__(self, decoder, *, min_delay_ms=10.0, max_delay_ms=1000.0, quantile=0.99,
                 sample_rate=CLOCK_RATE):
        if not 0.0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms} and "
                             f"{max_delay_ms}")
        if not 0.5 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
        self.decoder = decoder
        self.sample_rate = sample_rate
        self.min_delay = min_delay_ms * 1e-3 * sample_rate
        self.max_delay = max_delay_ms * 1e-3 * sample_rate
        self.quantile = quantile
        self.channels = decoder.channels
        self.stats = collections.Counter()
        # What the buffer has learned about the path outlives a pause in the stream.
        self._unwrap_ts = TimestampUnwrapper()
        self._base = _MinWindow(_BASE_WINDOW_S)
        self._arrivals = _QuantileWindow(_HISTORY_FRAMES)
        self._pull_size = 480
        self._last_arrival = -math.inf
        self._stalled = False
        self._reset_stream()
        self._unwrap_seq = SequenceUnwrapper()
        self._jitter = 0.0                    # RFC 3550 interarrival jitter, samples
        self._last_transit = None
        self._loss = LossMeter()
        self._highest_seq = None
        self._first_seq = None
        self._held = None                     # (packet, arrival) after a jump, RFC 3550 A.1
        self._missing = MissingPackets(max_gap=64)
        self._nacked = set()

    # ------------------------------------------------------------- arrivals

    def put(self, packet, now, *, retransmission=False):
        """Take one received RTP packet (``rtp.RtpPacket``) that arrived at ``now``.

        RED packets are unpacked into their blocks.  A packet whose payload
        cannot be unpacked is counted (``stats['malformed']``) and ignored.
        ``retransmission``: True for a packet known to be a resend (one this
        buffer asked for is recognised without it): it is counted as a
        retransmission, not in the path's loss figures, and does not move
        the stream's front.
        """
        if self._in_sequence(packet, now):
            self._take(packet, now, retransmission)

    def _take(self, packet, now, retransmission=False):
        self._last_arrival = now
        ext_seq = self._unwrap_seq.unwrap(packet.sequence_number)
        rtx = retransmission or ext_seq in self._nacked
        if packet.payload_type == PT_RED:
            try:
                blocks = decode_red(packet.payload, packet.timestamp)
            except PacketError:
                self.stats["malformed"] += 1
                return
            items = [(b.timestamp, b.payload) for b in blocks]
        else:
            items = [(packet.timestamp, packet.payload)]
        primary_ts = self._unwrap_ts.unwrap(items[-1][0])
        if self._stalled and not rtx:
            self._after_stall(primary_ts, now)
        if rtx:
            self.stats["retransmitted_received"] += 1
        else:
            self.stats["packets_received"] += 1
            self._count_primary(ext_seq, primary_ts, now)
        self._missing.arrived(ext_seq)
        if self._start_ts is None and not rtx:
            self._start_ts = primary_ts
        for i, (ts, payload) in enumerate(items):
            ext = primary_ts if i == len(items) - 1 else self._unwrap_ts.unwrap(ts)
            source = "rtx" if rtx else ("primary" if i == len(items) - 1 else "red")
            if source == "red" and ext < self._start_ts:
                # Copies of frames from before this stream began for us (a join
                # or a restart mid-stream): never due, so neither played nor
                # counted as late, which would raise the delay target for long.
                continue
            self._store(ext, payload, source, now)

    def _in_sequence(self, packet, now):
        """Whether ``packet`` belongs to the stream (RFC 3550, appendix A.1).
        One far ahead of the highest sequence number so far (more than
        ``MAX_DROPOUT``) or far behind it (more than ``MAX_MISORDER``) is
        held back and counted (``stats['out_of_sequence']``); when the next
        packet follows it, the sender has restarted: the buffer starts over on
        the new numbering and takes the held packet first."""
        seq = packet.sequence_number
        if self._highest_seq is None:
            return True
        delta = seq_diff(seq, self._highest_seq & 0xFFFF)
        if -MAX_MISORDER <= delta <= MAX_DROPOUT:
            return True
        held, self._held = self._held, None
        if held is not None and seq == (held[0].sequence_number + 1) & 0xFFFF:
            self._restart_numbering()
            self._take(*held)
            return True
        self._held = (packet, now)
        self.stats["out_of_sequence"] += 1
        return False

    def _restart_numbering(self):
        """Start over on a restarted sender's new numbering: what is decoded
        already still plays; sequence, timestamp and path state are new."""
        self._unwrap_seq = SequenceUnwrapper()
        self._unwrap_ts = TimestampUnwrapper()
        self._loss = LossMeter()
        self._highest_seq = self._first_seq = None
        self._last_transit = None
        self._missing.clear()
        self._nacked.clear()
        self._forget_path()
        self._end_stream()
        self.stats["restarts"] += 1

    def _count_primary(self, ext_seq, ext_ts, now):
        transit = now * self.sample_rate - ext_ts
        if self._last_transit is not None:
            self._jitter += (abs(transit - self._last_transit) - self._jitter) / 16.0
        self._last_transit = transit
        self._loss.add(ext_seq)
        if self._first_seq is None:
            self._first_seq = ext_seq
        if self._highest_seq is not None and ext_seq > self._highest_seq + 1:
            self._missing.gap(self._highest_seq, ext_seq, ext_ts, self._frame_step(), now)
        if self._highest_seq is None or ext_seq > self._highest_seq:
            self._highest_seq = ext_seq
            self._highest_ts = ext_ts

    def _frame_step(self):
        return self._frame or 960

    def _store(self, ext, payload, source, now):
        played = self._played.get(ext)
        if ext in self._frames or played is not None and played != "concealed":
            self.stats["duplicates"] += 1
            return
        # The first copy of every frame counts towards the delay target, even
        # one too late to play: that is how the buffer learns to wait longer.
        self._base.add(now, now * self.sample_rate - ext)
        self._arrivals.append(now * self.sample_rate - ext)
        if (self._playing or self._paused) and ext < self._play_ts:
            self._played[ext] = "late"
            self.stats["late"] += 1
            return
        self._frames[ext] = (payload, source)
        if ext > self._newest_ts and source != "rtx":
            # Only the stream itself moves the front: a retransmission of a
            # newer frame says nothing of the frames before it, which the next
            # packet's RED blocks may still bring.
            self._newest_ts = ext
        if self._first_arrival is None:
            self._first_arrival = now
        # A frame that came by RED or FEC no longer needs a retransmission.
        if len(self._missing):
            self._missing.forget_frames((ext,))

    # ------------------------------------------------------------- playout

    def target_delay(self):
        """The delay the buffer aims for, in samples (lateness quantile + margin)."""
        if not self._arrivals or self._base.value is None:
            return self.min_delay + self._pull_size
        q = self._arrivals.quantile(self.quantile) - self._base.value
        return min(max(q + self._pull_size + 0.002 * self.sample_rate, self.min_delay),
                   self.max_delay)

    def buffer_delay_ms(self, now):
        """How far the playout point is behind the newest possible at ``now``, in ms.

        ``now``: seconds on the same clock as ``put``; 0 while not playing.
        """
        if not self._playing or self._base.value is None:
            return 0.0
        newest = now * self.sample_rate - self._base.value
        return 1e3 * (newest - (self._play_ts - self._fifo_len())) / self.sample_rate

    def pull(self, num_samples, now):
        """The next ``num_samples`` of decoded audio at ``now`` (seconds), float32
        (channels, num_samples).

        Silence while the buffer fills or when the stream has stopped.
        """
        self._pull_size = num_samples
        if not self._playing and not self._start(now):
            out = np.zeros((self.channels, num_samples), np.float32)
            have = min(self._fifo_len(), num_samples)
            out[:, :have] = self._fifo[:, self._fifo_pos:self._fifo_pos + have]
            self._fifo_pos += have
            return out
        self._adjust(now)
        while self._fifo_len() < num_samples and self._playing:
            self._decode_next(now)
        have = min(self._fifo_len(), num_samples)
        out = np.zeros((self.channels, num_samples), np.float32)
        out[:, :have] = self._fifo[:, self._fifo_pos:self._fifo_pos + have]
        self._fifo_pos += have
        self.stats["samples_played"] += have
        return out

    def _fifo_len(self):
        return self._fifo.shape[1] - self._fifo_pos

    def _start(self, now):
        if not self._frames or self._first_arrival is None:
            return False
        if self._paused and self._resumable():
            # A gap in the path, not a new stream: go on where playout stopped.
            self._paused = False
            self._playing = True
            self._expanded = 0
            self.stats["resumed"] += 1
            return True
        if now - self._first_arrival < self.target_delay() / self.sample_rate:
            return False
        if self._paused:
            # Nothing came for where playout stopped: a new start.
            self._paused = False
            self.decoder.reset()
        self._playing = True
        self._play_ts = min(self._frames)
        return True

    def _resumable(self):
        """Whether the frames that came after a stall continue the paused
        timeline: one of the next few frames from where playout stopped is
        here (the frames of the gap are coming in by RED or retransmission).
        A sender that was silent sends no such frames."""
        step = self._frame_step()
        return any(self._play_ts + k * step in self._frames for k in range(_RESUME_FRAMES))

    def _after_stall(self, primary_ts, now):
        """The first packet after a stall.  Its transit far from the path's
        (a sender that stopped and went on with its clock standing still, or a
        new route) means a new stream on a new path; otherwise the paused
        timeline may go on (see ``_start``)."""
        self._stalled = False
        if self._base.value is None:
            return
        transit = now * self.sample_rate - primary_ts
        if abs(transit - self._base.value) > self.target_delay() + _STALL_S * self.sample_rate:
            self._forget_path()
            self._end_stream()

    def _ideal_position(self, now):
        return now * self.sample_rate - self._base.value - self.target_delay()

    def _lag(self, now):
        """How far playout is behind the ideal point at ``now``, in samples."""
        return self._ideal_position(now) - (self._play_ts - self._fifo_len())

    def _adjust(self, now):
        """Skip ahead to the ideal playout point when far behind it."""
        error = self._lag(now)
        if error > _JUMP_S * self.sample_rate:
            # Far behind: skip whole frames (after a stall or a long burst).
            step = self._frame_step()
            skip = int(error // step) * step
            self._play_ts += skip
            self.stats["jumped_samples"] += skip
            self._drop_old()

    def _decode_next(self, now):
        ts = self._play_ts
        step = self._frame_step()
        entry = self._frames.pop(ts, None)
        if entry is not None:
            payload, source = entry
            frame = self._decode(payload)
            if frame is None:
                frame = self.decoder.conceal(step)
                self.stats["concealed"] += 1
            else:
                self.stats[f"frames_{source}"] += 1
                self._frame = frame.shape[1]
                step = self._frame
            self._expanded = 0
        else:
            silent = now - self._last_arrival
            if self._newest_ts < ts and silent > _STALL_S + self.target_delay() / self.sample_rate:
                self._stop(self.decoder.conceal(step))
                return
            if self._newest_ts < ts and self._expanded < _MAX_EXPAND_S * self.sample_rate:
                # Nothing newer is here: the frame is late rather than lost.
                # Play concealment *without* moving on, so the frame is still
                # played when it comes (the delay grows; shortening brings it
                # back later, or a skip when it grew too much).
                frame = self.decoder.conceal(step)
                self._expanded += step
                self.stats["expanded"] += 1
                self.stats["expanded_samples"] += step
                self._push_fifo(frame)
                return
            nxt = self._frames.get(ts + step)
            frame = None
            if nxt is not None and getattr(self.decoder, "has_fec", False):
                try:
                    frame = self.decoder.decode_fec(nxt[0], step)
                    self.stats["frames_fec"] += 1
                except Exception:   # a corrupt next payload: conceal instead
                    self.stats["undecodable"] += 1
            if frame is None:
                frame = self.decoder.conceal(step)
                self.stats["concealed"] += 1
        self._played[ts] = "played" if entry is not None else "concealed"
        self._play_ts = ts + step
        frame = self._stretch(frame, now)
        self._push_fifo(frame)
        self._drop_old()

    def _decode(self, payload):
        try:
            return self.decoder.decode(payload)
        except Exception:       # a corrupt payload from the network must not stop playback
            self.stats["undecodable"] += 1
            return None

    def _stretch(self, frame, now):
        """Shorten or lengthen ``frame`` by a pitch period when the playout point
        has drifted from the ideal one.  The drift is smoothed over a few frames
        and must pass a dead band, so the scheduling noise of the threads that
        push and pull never makes the buffer stretch speech that needs none.
        """
        error = self._ideal_position(now) - (self._play_ts - frame.shape[1] - self._fifo_len())
        self._drift += _DRIFT_SMOOTHING * (error - self._drift)
        band = _DEAD_BAND_S * self.sample_rate
        below_db = self._below_level_db(frame)
        share = _PAUSE_SHORTEN_SHARE if below_db >= -_QUIET_DB else _LOUD_SHORTEN_SHARE
        run, self._shorten_run = self._shorten_run, 0
        if (self._drift > band + share * self.target_delay()
                and (below_db >= -_SILENT_DB or run < _MAX_SHORTEN_RUN)):
            frame, removed = stretch.shorten(frame, self.sample_rate)
            self._shorten_run = run + 1
            self.stats["shortened_samples"] += removed
            self._drift -= removed
        elif self._drift < -band:
            frame, added = stretch.lengthen(frame, self.sample_rate)
            self.stats["lengthened_samples"] += added
            self._drift += added
        return frame

    def _below_level_db(self, frame):
        """How far ``frame`` is below the recent level (which it updates), dB >= 0."""
        rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
        decay = 10.0 ** (-_LEVEL_DECAY_DB_S / 20.0 * frame.shape[1] / self.sample_rate)
        self._level = max(rms, self._level * decay)
        if self._level <= 0.0:
            return math.inf
        return 20.0 * math.log10(self._level / max(rms, 1e-12))

    def _push_fifo(self, frame):
        rest = self._fifo[:, self._fifo_pos:]
        self._fifo = np.concatenate([rest, frame.astype(np.float32, copy=False)], axis=1)
        self._fifo_pos = 0

    def _stop(self, last_frame):
        """Nothing comes: fade the last concealed frame out and wait, keeping
        the place in the stream (the next packets may continue it)."""
        fade = np.linspace(1.0, 0.0, last_frame.shape[1], dtype=np.float32)
        self._push_fifo(last_frame * fade)
        self.stats["stalls"] += 1
        self._stalled = True
        self._playing = False
        self._paused = True
        self._first_arrival = None
        self._drift = 0.0

    def _end_stream(self):
        """Forget the stream's frames and decoder state; what is decoded
        already still plays."""
        fifo, pos = self._fifo, self._fifo_pos
        self._reset_stream()
        self._fifo, self._fifo_pos = fifo, pos
        self.decoder.reset()

    def _forget_path(self):
        """Forget the measured transit times (the path changed)."""
        self._base = _MinWindow(_BASE_WINDOW_S)
        self._arrivals.clear()

    def _drop_old(self):
        horizon = self._play_ts - _KEEP_BEHIND_S * self.sample_rate
        for ts in [t for t in self._frames if t < self._play_ts]:
            del self._frames[ts]
            self.stats["late"] += 1
        while self._played and next(iter(self._played)) < horizon:
            del self._played[next(iter(self._played))]
        self._missing.forget_before(horizon)

    def _reset_stream(self):
        self._frames = {}
        # ext ts of frames played, in order -> "played" (from a copy), "concealed"
        # (no copy yet: FEC or concealment) or "late" (a copy came too late).
        self._played = {}
        self._playing = False
        self._paused = False                  # stalled, keeping the place in the stream
        self._play_ts = 0
        self._frame = None
        self._newest_ts = -math.inf           # newest frame the stream (not a retransmission) brought
        self._first_arrival = None
        self._start_ts = None                 # primary ts of the stream's first packet
        self._expanded = 0
        self._drift = 0.0
        self._level = 0.0
        self._shorten_run = 0                 # frames shortened in a row
        self._fifo = np.zeros((self.channels, 0), np.float32)
        self._fifo_pos = 0

    # ------------------------------------------------------------- feedback

    def nacks(self, now, rtt_s, *, max_tries=12):
        """Sequence numbers (16-bit) to ask the sender to retransmit now.

        A missing packet is asked for when its frame would still arrive before
        its playout time (more than ``rtt_s`` plus a little away) or when the
        buffer will wait for it (nothing newer has come), at most
        ``max_tries`` times and no more often than once a round trip.  Missing
        means: skipped by a later packet, or overdue (nothing has come for
        more than two frame times, so the next ones are asked for; during a
        long loss burst this is the only way to learn of the loss in time).
        """
        if not self._playing or self._base.value is None:
            due_ts = None
        else:
            due_ts = self._ideal_position(now)
            step = self._frame_step()
            overdue = int((now - self._last_arrival) * self.sample_rate / step) - 1
            self._missing.overdue(self._highest_seq, self._highest_ts, step, min(overdue, 32))
        margin = (rtt_s + 0.005) * self.sample_rate

        def wanted(seq, ts):
            # Too late for its playout time, unless the buffer will wait for
            # it: it plays concealment in place of a frame that has nothing
            # newer behind it (see _decode_next), so the answer is still played.
            waited_for = ts >= self._play_ts and ts > self._newest_ts
            return due_ts is None or ts - due_ts >= margin or waited_for
        asked = self._missing.due(now, max(rtt_s, 0.01), max_tries, wanted=wanted)
        self._nacked.update(asked)
        out = [seq & 0xFFFF for seq in asked]
        self.stats["nacks_sent"] += len(out)
        if len(self._nacked) > 4096:
            low = (self._highest_seq or 0) - 2048
            self._nacked = {s for s in self._nacked if s > low}
        return out

    def report(self):
        """Receiver statistics since the last call, for the sender.

        Returns a dict: ``fraction_lost`` (0-1, packets lost on the path before
        any recovery), ``burst`` (95th percentile of loss-run length, packets),
        ``highest_seq`` (extended), ``cumulative_lost`` (packets lost on the
        path since the stream began) and ``jitter_ms``; ``None`` when no packet
        came since the last report.
        """
        loss = self._loss.report()
        if loss is None:
            return None
        return {"fraction_lost": loss[0], "burst": loss[1], "highest_seq": self._highest_seq,
                "cumulative_lost": self._loss.cumulative_lost,
                "jitter_ms": 1e3 * self._jitter / self.sample_rate}

    def summary(self, now):
        """The figures a listener's statistics show for this stream, as a dict:
        packets received and lost on the path (before recovery), frames
        recovered from RED, FEC and retransmission, concealed, late,
        duplicate and out of sequence (dropped, see ``_in_sequence``), time added and removed by stretching (ms), interarrival
        jitter, the delay target and the current buffer delay (ms) at ``now``."""
        st = self.stats
        ms = 1e3 / self.sample_rate
        lost = 0
        if self._highest_seq is not None:
            lost = max(0, self._highest_seq - self._first_seq + 1 - st["packets_received"])
        return {
            "received": st["packets_received"],
            "lost": lost,
            "recovered_red": st["frames_red"],
            "recovered_fec": st["frames_fec"],
            "recovered_retransmission": st["frames_rtx"],
            "concealed": st["concealed"],
            "late": st["late"],
            "expanded_ms": ms * st["expanded_samples"],
            "shortened_ms": ms * st["shortened_samples"],
            "lengthened_ms": ms * st["lengthened_samples"],
            "duplicates": st["duplicates"],
            "out_of_sequence": st["out_of_sequence"],
            "frames_played": sum(st[f"frames_{k}"] for k in ("primary", "red", "rtx", "fec"))
            + st["concealed"],
            "jitter_ms": ms * self._jitter,
            "target_delay_ms": ms * self.target_delay(),
            "buffer_delay_ms": self.buffer_delay_ms(now),
        }

    @property
    def playing(self):
        """True while playout runs (False while filling or after the stream stopped)."""
        return self._playing

