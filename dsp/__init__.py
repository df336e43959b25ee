"""stagevox.dsp: effects, the processing graph and file processing.

Every processor follows one protocol (see ``processor.Processor``)::

    fx = dsp.Equalizer(gains_db=[3, 0, 0, 0, 0, 0, 0, 2, 0, 0])
    y = fx.process(x, sample_rate=48000)   # or fx(x, 48000); state carries over

``registry`` maps registry names (``equalizer``, ``limiter``, ...) to classes.
Kernels are imported on first use; ``load_kernels()`` imports those of every
processor module imported so far (building a processor does it too), for a
live path whose first frame must not wait.

Spatial audio: ``Spatializer`` (HRTF, mono in, binaural out), ``Panner``
(level only), ``SpatialScene`` (many remote voices around a listener),
``Hrtf`` (the bundled MIT KEMAR set or any SOFA file).

Files: ``process_file`` streams one file through a processor;
``process_files`` runs many in parallel, on the local cores or on a Dask
cluster (``batch``).

Errors (``errors``): every error the package raises on purpose is a
``StagevoxError``; bad parameters and file contents are ``ParameterError``
(a ``ValueError``), unreadable or unauthentic packets and tokens
``ProtocolError`` (a ``ValueError``), a server's refusal ``RefusedError``.
"""

import importlib

from . import batch, samples
from .audio import as_block, check_sample_rate, db_to_gain
from .batch import process_files
from .catalogue import NAMES as _LAZY
from .errors import ParameterError, ProtocolError, RefusedError, StagevoxError
from .fileio import AudioFileError, process_file
from .graph import Chain, Graph, Mix
from .lazykernels import load_all as load_kernels
from .processor import Processor, registry

__all__ = [
    "Chain", "Graph", "Mix", "Processor", "as_block", "check_sample_rate", "db_to_gain",
    "AudioFileError", "ParameterError", "ProtocolError", "RefusedError", "StagevoxError",
    "load_kernels", "process_file", "process_files", "registry", "samples", *_LAZY,
]


def __getattr__(name):
    """The processors and spatial-audio classes, imported on first use (see
    ``catalogue``)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
