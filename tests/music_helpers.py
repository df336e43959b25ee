"""Helpers of the music-mixing tests."""

import threading


class StateRecorder:
    """Records ``(state, reason)`` music events; ``done`` is set by a
    "stopped" or "failed" one.  Callable (a ``MediaSource``'s ``on_state``)
    and an event handler (``on_audio_mixing_state_changed``)."""

    def __init__(self):
        self.events = []
        self.done = threading.Event()

    def __call__(self, state, reason):
        self.events.append((state, reason))
        if state in ("stopped", "failed"):
            self.done.set()

    on_audio_mixing_state_changed = __call__
