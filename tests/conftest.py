"""Shared fixtures."""

import os

import numpy as np
import pytest

from stagevox.dsp import samples

#: Under CI=true a missing component is a failure, never a skip.
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition, reason):
    """Skip when ``condition`` is false, except under CI=true where it fails."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def speech():
    """The bundled speech sample, 48 kHz mono float32 (19 s)."""
    return samples.speech(48000)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
