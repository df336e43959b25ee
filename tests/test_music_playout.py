"""The music's local-playout ring (engine.music._Playout) against the plain
"concatenate and keep the last samples" it replaces."""

import numpy as np
from stagevox.engine.music import _Playout


def test_ring_matches_a_plain_fifo(rng):
    size = 1000
    ring = _Playout(size)
    fifo = np.zeros((2, 0), np.float32)
    for step in range(400):
        if rng.random() < 0.5:
            x = rng.standard_normal((2, int(rng.integers(0, 1500)))).astype(np.float32)
            ring.write(x)
            fifo = np.concatenate([fifo, x], axis=1)[:, -size:]
        else:
            n = int(rng.integers(0, 700))
            expected = np.zeros((2, n), np.float32)
            k = min(n, fifo.shape[1])
            expected[:, :k] = fifo[:, :k]
            fifo = fifo[:, k:]
            np.testing.assert_array_equal(ring.read(n), expected, err_msg=f"step {step}")
    ring.clear()
    assert not ring.read(10).any()
