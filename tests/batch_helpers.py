"""A processor for the batch tests that takes a module-level lock around its
work: a batch worker that started with the lock held (copied, held, from a
caller that forked it) would wait for it for ever."""

import threading

from stagevox import dsp

LOCK = threading.Lock()


class LockedGain(dsp.Gain, register=False):
    """``dsp.Gain`` whose ``process`` holds ``LOCK`` (a test's, not in the registry)."""

    def process(self, *args, **kwargs):
        with LOCK:
            return super().process(*args, **kwargs)
