"""Kernel modules imported on first use.

Importing a module of ``stagevox.dsp.kernels`` compiles its Numba kernels, or
loads them from Numba's cache: tens of seconds on a first run.  Processor
modules therefore reach their kernels through ``kernels(name)``, a stand-in
that imports ``stagevox.dsp.kernels.<name>`` when one of its names is first
read (normally in the processor's first ``process``).  Importing a processor
class, listing ``registry`` with its parameters, or loading a preset
compiles nothing.
"""

import importlib


class KernelModule:
    """Stand-in for a module of ``stagevox.dsp.kernels``: reading an
    attribute imports the module and returns its attribute, which is then
    kept on the stand-in so later reads cost a plain attribute lookup."""

    def __init__(self, name):
        self._module_name = f"{__package__}.kernels.{name}"

    def __getattr__(self, attr):
        if attr.startswith("__") or attr == "_module_name":
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self._module_name), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self):
        return f"<kernels {self._module_name!r}, imported on first use>"


def kernels(name):
    """A stand-in for ``stagevox.dsp.kernels.<name>`` (see ``KernelModule``)."""
    return KernelModule(name)
