"""Mixing several inputs into one, with a soft clipper on the sum."""

import numpy as np

from .audio import as_block, check_sample_rate, db_to_gain, float32_below
from .lazykernels import kernels
from .processor import Bool, Float, FloatList, Processor, make_ramp, ramp_to

kern = kernels("mixer")


class Mixer(Processor):
    """Sum N inputs, each with its own gain, then soft-clip the sum.

    ``process(inputs, sample_rate)`` takes a list of blocks (or one block).
    Mono inputs are spread to every channel; otherwise channel counts must
    agree.  ``gains_db[i]`` is the gain of input ``i``; inputs beyond the list
    get 0 dB.  With ``soft_clip`` the sum passes unchanged up to ``knee_db``
    below ``ceiling_db`` and bends smoothly towards the ceiling above it, so the
    output never exceeds ``ceiling_db``.
    """

    gains_db = FloatList([], -np.inf, 24.0, unit="dB", doc="gain of each input")
    soft_clip = Bool(True, doc="bend peaks under the ceiling")
    ceiling_db = Float(-0.3, -24.0, 0.0, unit="dBFS", doc="the output never exceeds this")
    knee_db = Float(6.0, 0.5, 24.0, unit="dB", doc="soft region below the ceiling")
    multi_input = True

    def process(self, inputs, sample_rate):
        """Mix ``inputs`` (a list of blocks, or one block) and return the sum."""
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if not inputs:
            raise ValueError("Mixer needs at least one input")
        blocks = [as_block(a) for a in inputs]
        lengths = {b.shape[1] for b, _ in blocks}
        if len(lengths) != 1:
            raise ValueError(f"Mixer inputs differ in length: {sorted(lengths)} samples")
        channels = {b.shape[0] for b, _ in blocks} - {1}
        if len(channels) > 1:
            raise ValueError(f"Mixer inputs have {sorted(channels)} channels; "
                             "mix mono with anything, or equal channel counts")
        n_ch = channels.pop() if channels else 1
        if (sample_rate != self.sample_rate or n_ch != self.num_channels
                or len(blocks) != len(self._ramps)):
            self._inputs = len(blocks)
            self._setup(check_sample_rate(sample_rate), n_ch)
        out = np.zeros((n_ch, lengths.pop()), dtype=np.float32)
        for (b, _), ramp in zip(blocks, self._ramps):
            kern.accumulate(out, b, ramp)
        if self.soft_clip:
            ceiling = float32_below(db_to_gain(self.ceiling_db))
            kern.soft_clip(out, ceiling * db_to_gain(-self.knee_db), ceiling)
        if all(was_1d for _, was_1d in blocks) and n_ch == 1:
            return out[0]
        return out

    __call__ = process

    def __init__(self, **params):
        self._inputs = 1
        self._ramps = []
        super().__init__(**params)

    def _gain(self, i):
        g = self.gains_db
        return db_to_gain(g[i]) if i < len(g) else 1.0

    def _prepare(self):
        self._ramps = [make_ramp(self._gain(i)) for i in range(self._inputs)]

    def _param_changed(self, name):
        if name == "gains_db":
            for i, r in enumerate(self._ramps):
                ramp_to(r, self._gain(i), self.ramp_samples())
