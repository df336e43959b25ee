"""Shared fixtures."""

import os
import shutil
import tempfile

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


def pytest_configure(config):
    """Point the user preset folder at an empty folder of the test run's own,
    before collection, so that no test reads or writes the real one."""
    config._stagevox_presets = tempfile.mkdtemp(prefix="stagevox-test-presets-")
    os.environ["STAGEVOX_PRESET_DIR"] = config._stagevox_presets


def pytest_itemcollected(item):
    """The live engine's tests (``test_engine_*.py``) stream audio in real
    time and judge what arrives: they get the ``realtime`` marker, and
    ``make test`` runs them after the parallel run of the others, one at a
    time, so they share the machine with nothing of the suite's own."""
    if item.path.name.startswith("test_engine_"):
        item.add_marker(pytest.mark.realtime)


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_stagevox_presets", ""), ignore_errors=True)


@pytest.fixture
def user_presets(tmp_path, monkeypatch):
    """An empty user preset folder for one test (``STAGEVOX_PRESET_DIR``)."""
    folder = tmp_path / "user presets"
    monkeypatch.setenv("STAGEVOX_PRESET_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def speech():
    """The bundled speech sample, 48 kHz mono float32 (19 s)."""
    return samples.speech(48000)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
