"""Kernel modules imported on first use.

Importing a module of ``stagevox.dsp.kernels`` compiles its Numba kernels, or
loads them from Numba's cache: tens of seconds on a first run.  Processor
modules therefore reach their kernels through ``kernels(name)``, a stand-in
that imports ``stagevox.dsp.kernels.<name>`` when one of its names is first
read, or when ``load_all`` runs.  Importing a processor class or listing
``registry`` with its parameters compiles nothing.

Building a processor calls ``load_all``, which imports the kernels of every
processor module imported so far, so that its first ``process`` (a live
frame) does not wait for them.
"""

import importlib

#: Stand-ins whose module is not imported yet.
_pending = []


class KernelModule:
    """Stand-in for a module of ``stagevox.dsp.kernels``: reading an
    attribute imports the module and returns its attribute, which is then
    kept on the stand-in so later reads cost a plain attribute lookup."""

    def __init__(self, name):
        self._module_name = f"{__package__}.kernels.{name}"
        #: True once the kernel module is imported (read per frame: a plain attribute).
        self.loaded = False
        _pending.append(self)

    def __getattr__(self, attr):
        if attr.startswith("__") or attr in ("_module_name", "loaded"):
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self._module_name), attr)
        try:
            _pending.remove(self)
        except ValueError:  # loaded already (load_all, or another thread)
            pass
        self.loaded = True
        setattr(self, attr, value)
        return value

    def __repr__(self):
        return f"<kernels {self._module_name!r}, imported on first use>"


def load_all():
    """Import the kernel modules of every stand-in made so far (those of the
    processor modules imported); a no-op when there are none left."""
    while _pending:
        try:
            stand_in = _pending.pop()
        except IndexError:  # emptied by another thread
            return
        importlib.import_module(stand_in._module_name)
        stand_in.loaded = True


def kernels(name):
    """A stand-in for ``stagevox.dsp.kernels.<name>`` (see ``KernelModule``)."""
    return KernelModule(name)
