"""Shared fixtures."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        compile_kernels_once()


def compile_kernels_once():
    """Compile every kernel module (or load it from Numba's on-disk cache)
    before the workers of a parallel run start, each module in one process
    only, the modules spread over as many processes as there are CPUs.

    On a cold cache the workers would otherwise each compile the same kernels
    at the same time (about 100 CPU-seconds each); afterwards they load them
    from the cache.  A module that fails here fails again, with its test, in
    the worker that imports it."""
    from stagevox.dsp import kernels
    folder = Path(kernels.__file__).parent
    modules = sorted(folder.glob("[a-z]*.py"), key=lambda p: -p.stat().st_size)
    groups = [[] for _ in range(max(1, min(os.cpu_count() or 1, len(modules))))]
    sizes = [0] * len(groups)
    for path in modules:                   # the largest first, to the lightest group
        i = sizes.index(min(sizes))
        groups[i].append(f"{kernels.__name__}.{path.stem}")
        sizes[i] += path.stat().st_size
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)"
    procs = [subprocess.Popen([sys.executable, "-c", code, *g]) for g in groups if g]
    for proc in procs:
        proc.wait()


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
