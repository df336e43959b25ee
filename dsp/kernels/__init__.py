"""Numba kernels: plain functions on arrays, no classes, no Python objects.

Every kernel is compiled with the options below and with explicit signatures,
so it is compiled (or loaded from Numba's on-disk cache) when its module is
imported, never on the first live frame.

Conventions shared by all kernels:

* audio blocks are ``float32[:, ::1]`` arrays shaped ``(channels, samples)``;
* state arrays are ``float64`` and are updated in place;
* outputs are written into arrays passed in; kernels never allocate in their
  per-sample loops.
"""

import numba

#: The one place where compiler options are set.  Of the fast-math flags only
#: ``contract`` is on: it lets a*b+c become one fused multiply-add, which is
#: as accurate or more and shortens the recursive paths of IIR filters; the
#: others (reassociation, no-NaN assumptions) would change results.
JIT_OPTIONS = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")


def kernel(signature):
    """Decorate a kernel: eager compilation for ``signature`` with JIT_OPTIONS."""
    return numba.njit(signature, **JIT_OPTIONS)
