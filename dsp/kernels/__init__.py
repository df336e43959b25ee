"""Numba kernels: plain functions on arrays, no classes, no Python objects.

Every kernel is compiled with the options below and with explicit signatures,
so it is compiled (or loaded from Numba's on-disk cache) when its module is
imported.  Processor modules import them on first use (``dsp.lazykernels``).
The first time Numba really compiles one of them (its cache is cold), one
line says so on stderr: ``compiling stagevox kernels (first run only)...``.

Conventions shared by all kernels:

* audio blocks are ``float32[:, ::1]`` arrays shaped ``(channels, samples)``;
* state arrays are ``float64`` and are updated in place;
* outputs are written into arrays passed in; kernels never allocate in their
  per-sample loops.
"""

import sys

import numba
from numba.core import event

#: The one place where compiler options are set.  Of the fast-math flags only
#: ``contract`` is on: it lets a*b+c become one fused multiply-add, which is
#: as accurate or more and shortens the recursive paths of IIR filters; the
#: others (reassociation, no-NaN assumptions) would change results.
JIT_OPTIONS = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")


def kernel(signature):
    """Decorate a kernel: eager compilation for ``signature`` with JIT_OPTIONS."""
    return numba.njit(signature, **JIT_OPTIONS)


COMPILING_NOTICE = "compiling stagevox kernels (first run only)..."


class _CompileNotice(event.Listener):
    """Prints ``COMPILING_NOTICE`` once, when Numba starts compiling a kernel
    of this package (not when it loads one from its cache)."""

    def __init__(self):
        self.shown = False

    def on_start(self, ev):
        if not self.shown and getattr(ev.data["dispatcher"].py_func, "__module__",
                                      "").startswith(__name__ + "."):
            self.shown = True
            print(COMPILING_NOTICE, file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


#: The listener; ``compile_notice.shown`` tells whether the notice was printed.
compile_notice = _CompileNotice()
event.register("numba:compile", compile_notice)
