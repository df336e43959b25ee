"""Base of the processors whose continuous parameters reach their kernel as ramps."""

import numpy as np

from .processor import Processor, make_ramp, ramp_to


class RampedProcessor(Processor, register=False):
    """A processor whose kernel reads ``self._ramps``: one ``kernels.common``
    ramp per row, each moving to its row of ``_targets()``.

    Prepared: every ramp rests at its target.  A parameter change while
    streaming moves every ramp to its new target over ``smoothing_ms``, one
    step a sample, so the change sounds the same however the audio is cut
    into blocks.
    Subclasses that hold more state extend ``_prepare`` (calling this one).
    """

    def _targets(self):
        """Target of each ramp (a sequence, in kernel row order)."""
        raise NotImplementedError

    def _prepare(self):
        self._ramps = np.array([make_ramp(v) for v in self._targets()])

    def _param_changed(self, name):
        n = self.ramp_samples()
        for ramp, target in zip(self._ramps, self._targets()):
            ramp_to(ramp, target, n)
