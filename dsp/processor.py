"""The processor protocol: parameters, streaming state, latency, registry.

A processor owns its parameters and state; the arithmetic lives in
``dsp.kernels``.  Subclasses declare parameters as class attributes::

    class Gain(Processor):
        gain_db = Float(0.0, -60.0, 24.0, unit="dB", doc="gain")

and implement ``_prepare`` (allocate state for ``self.sample_rate`` and
``self.num_channels``), ``_process(block)`` and, where they have state,
``_reset``.  Every concrete subclass is entered in ``registry`` under its class
name in snake_case.
"""

import collections.abc
import copy
import importlib
import math
import re

import numpy as np

from .audio import as_block, check_sample_rate
from .errors import ParameterError
from .lazykernels import load_all

_registry = {}


class _Registry(collections.abc.Mapping):
    """Registry name -> processor class, read-only.  The processors of
    ``stagevox.dsp`` are listed before their modules are imported (see
    ``catalogue``); a lookup imports the one module it needs, iterating
    imports them all.  Subclasses defined elsewhere are entered when their
    class statement runs."""

    @staticmethod
    def _modules():
        from .catalogue import PROCESSORS
        return {snake_case(cls): module for cls, module in PROCESSORS.items()}

    def __getitem__(self, name):
        if name not in _registry and isinstance(name, str):
            module = self._modules().get(name)
            if module is not None:
                importlib.import_module(f"{__package__}.{module}")
        return _registry[name]

    def __iter__(self):
        for module in sorted(set(self._modules().values())):
            importlib.import_module(f"{__package__}.{module}")
        return iter(sorted(_registry))

    def __len__(self):
        return sum(1 for _ in self)

    def __contains__(self, name):
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __repr__(self):
        return f"registry({', '.join(self)})"


#: Registry name -> processor class, for presets and the command line.
registry = _Registry()

#: Sample rate assumed by ``latency`` before a processor has seen audio.
DEFAULT_SAMPLE_RATE = 48000


def snake_case(name):
    """``PitchShift`` -> ``pitch_shift``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


# --------------------------------------------------------------------------- params

class Param:
    """A processor parameter: default, validation, documentation."""

    kind = "value"

    def __init__(self, default, *, unit="", doc=""):
        self.default = default
        self.unit = unit
        self.doc = doc
        self.name = None
        self.owner = None

    def __set_name__(self, owner, name):
        self.name = name
        self.owner = owner.__name__

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return obj._params[self.name]

    def __set__(self, obj, value):
        value = self.validate(value)
        old = obj._params.get(self.name, _MISSING)
        obj._params[self.name] = value
        if old is not _MISSING and old != value and obj.sample_rate is not None:
            obj._param_changed(self.name)

    def validate(self, value):
        return value

    def range_text(self):
        return ""

    def _fail(self, value, must):
        raise ParameterError(f"{self.owner}.{self.name} = {value!r} is invalid: {must}")


_MISSING = object()


def _fmt(v):
    if v == math.inf:
        return "inf"
    if v == -math.inf:
        return "-inf"
    return f"{v:g}"


class Float(Param):
    """A real number in ``[lo, hi]``; ``off=True`` also admits ``-inf`` (muted)."""

    kind = "float"

    def __init__(self, default, lo, hi, *, off=False, unit="", doc=""):
        super().__init__(float(default), unit=unit, doc=doc)
        self.lo, self.hi, self.off = float(lo), float(hi), off

    def validate(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            self._fail(value, f"must be a number {self.range_text()}")
        try:
            v = float(value)
        except OverflowError:
            self._fail(value, f"must be {self.range_text()}")
        if self.off and v == -math.inf:
            return v
        if not (self.lo <= v <= self.hi):
            self._fail(value, f"must be {self.range_text()}")
        return v

    def range_text(self):
        text = f"from {_fmt(self.lo)} to {_fmt(self.hi)}"
        if self.unit:
            text += f" {self.unit}"
        if self.off:
            text += " (or -inf for off)"
        return text


class Int(Param):
    """A whole number in ``[lo, hi]``."""

    kind = "int"

    def __init__(self, default, lo, hi, *, unit="", doc=""):
        super().__init__(int(default), unit=unit, doc=doc)
        self.lo, self.hi = int(lo), int(hi)

    def validate(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
                or not math.isfinite(value) or int(value) != value:
            self._fail(value, f"must be a whole number {self.range_text()}")
        v = int(value)
        if not (self.lo <= v <= self.hi):
            self._fail(value, f"must be {self.range_text()}")
        return v

    def range_text(self):
        return f"from {self.lo} to {self.hi}" + (f" {self.unit}" if self.unit else "")


class Bool(Param):
    """True or False."""

    kind = "bool"

    def __init__(self, default, *, doc=""):
        super().__init__(bool(default), doc=doc)

    def validate(self, value):
        if not isinstance(value, (bool, np.bool_)):
            self._fail(value, "must be true or false")
        return bool(value)

    def range_text(self):
        return "true or false"


class Choice(Param):
    """One of a fixed set of values (strings or numbers)."""

    kind = "choice"

    def __init__(self, default, choices, *, unit="", doc=""):
        super().__init__(default, unit=unit, doc=doc)
        self.choices = tuple(choices)

    def validate(self, value):
        for c in self.choices:
            if value == c and type(value) is not bool:
                return c
        self._fail(value, f"must be {self.range_text()}")

    def range_text(self):
        return "one of " + ", ".join(str(c) for c in self.choices)


class FloatList(Param):
    """A list of numbers, each in ``[lo, hi]``; ``length`` fixes its size.
    ``item_names`` (one per item, such as ``"31 Hz band"``) name the item
    that is out of range in the error message."""

    kind = "float list"

    def __init__(self, default, lo, hi, *, length=None, item_names=None, unit="", doc=""):
        super().__init__(tuple(float(v) for v in default), unit=unit, doc=doc)
        self.lo, self.hi, self.length = float(lo), float(hi), length
        self.item_names = tuple(item_names) if item_names is not None else None

    def validate(self, value):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            self._fail(value, f"must be a list of numbers {self.range_text()}")
        items = list(value)
        if self.length is not None and len(items) != self.length:
            self._fail(value, f"must have {self.length} values, got {len(items)}")
        out = []
        for i, v in enumerate(items):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not (self.lo <= float(v) <= self.hi):
                item = f"item {i}" + (f" ({self.item_names[i]})" if self.item_names else "")
                self._fail(value, f"{item} is {v!r}; each value must be a number "
                                  f"{self._item_range_text()}")
            out.append(float(v))
        return tuple(out)

    def range_text(self):
        size = f"{self.length} values " if self.length else ""
        return f"{size}each {self._item_range_text()}"

    def _item_range_text(self):
        return f"from {_fmt(self.lo)} to {_fmt(self.hi)}" + (f" {self.unit}" if self.unit else "")


# ----------------------------------------------------------------------- processor

class Processor:
    """Base class of every effect; see the module docstring.

    Public protocol: ``process(audio, sample_rate)`` (also ``__call__``),
    ``reset()``, ``latency`` (samples), ``tail`` (samples of output that follow
    the end of the input, such as a reverb's decay), ``params()``.
    """

    #: Registry name, set for each subclass from its class name.
    registry_name = ""
    #: Parameters by name, collected from the class and its bases.
    parameters = {}
    #: True when each output channel depends only on the same input channel.
    channel_independent = True
    #: True when the processor takes a list of inputs (graph nodes pass one
    #: frame per incoming edge instead of their sum).
    multi_input = False
    #: True when ``_process`` itself rejects NaN/Inf before changing any
    #: state (its kernel scans the block first), saving a separate pass.
    checks_finite = False
    #: Length of the ramp that smooths parameter changes while streaming.
    smoothing_ms = 20.0
    #: Constructor arguments that are not parameters (such as an impulse
    #: response file), by name: what each one is.  ``stagevox effects``
    #: lists them with the parameters.
    arguments = {}

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        params = {}
        for base in reversed(cls.__mro__):
            for key, value in vars(base).items():
                if isinstance(value, Param):
                    params[key] = value
        for key, value in params.items():
            if value.owner != cls.__name__:
                # An inherited parameter: a copy owned by this class, so that
                # error messages name the class the user wrote (HighPass.q).
                value = copy.copy(value)
                value.owner = cls.__name__
                setattr(cls, key, value)
                params[key] = value
        cls.parameters = params
        if register:
            name = snake_case(cls.__name__)
            if name in _registry and _registry[name] is not cls:
                raise TypeError(f"registry name {name!r} is taken by {_registry[name]!r}")
            cls.registry_name = name
            _registry[name] = cls

    def __init__(self, **params):
        load_all()  # the kernels, now rather than on the first (live) frame
        unknown = [k for k in params if k not in self.parameters]
        if unknown:
            raise ParameterError(
                f"{type(self).__name__} has no parameter {unknown[0]!r}; "
                f"valid parameters: {', '.join(self.parameters) or '(none)'}")
        self._params = {}
        self.sample_rate = None
        self.num_channels = None
        for name, p in self.parameters.items():
            setattr(self, name, params.get(name, p.default))

    # -- protocol -------------------------------------------------------------
    def process(self, audio, sample_rate):
        """Process one block and return the output block.

        ``audio``: float32 ``(channels, samples)`` or 1-D mono (any block size,
        including 0); ``sample_rate`` in Hz, 8000 to 48000.  State carries over
        from call to call.  A 1-D input gives a 1-D output when the output is
        mono.  Raises ``ParameterError`` (a ``ValueError``) for NaN/Inf samples or a
        bad rate.
        """
        block, was_1d = as_block(audio, not self.checks_finite)
        if sample_rate != self.sample_rate or block.shape[0] != self.num_channels:
            self._setup(check_sample_rate(sample_rate), block.shape[0])
        out = self._process(block)
        if was_1d and out.shape[0] == 1:
            return out[0]
        return out

    __call__ = process

    def reset(self):
        """Clear the streaming state; parameters are kept."""
        if self.sample_rate is not None:
            self._reset()

    @property
    def latency(self):
        """Algorithmic delay in samples at the current (or default) rate."""
        return self.latency_at(self.sample_rate or DEFAULT_SAMPLE_RATE)

    @property
    def tail(self):
        """Samples of output that follow the end of the input."""
        return self.tail_at(self.sample_rate or DEFAULT_SAMPLE_RATE)

    def latency_at(self, sample_rate):
        """Algorithmic delay in samples at ``sample_rate`` (Hz).

        The output lags the input by this many samples; graphs use it to
        align parallel branches.  0 for processors without look-ahead.
        """
        return 0

    def tail_at(self, sample_rate):
        """Length in samples of the output that follows the input's end.

        ``sample_rate`` in Hz.  A reverb's or delay's decay, for example;
        ``process_file`` renders this much silence through at the end.
        """
        return 0

    def params(self):
        """The current parameters as a dict (lists as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._params.items()}

    def set_params(self, **params):
        """Set several parameters; unknown names raise ``ParameterError``
        (a ``ValueError``)."""
        for k in params:
            if k not in self.parameters:
                raise ParameterError(
                    f"{type(self).__name__} has no parameter {k!r}; "
                    f"valid parameters: {', '.join(self.parameters) or '(none)'}")
        for k, v in params.items():
            setattr(self, k, v)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    # -- for subclasses -------------------------------------------------------
    def _setup(self, sample_rate, num_channels):
        self.sample_rate = sample_rate
        self.num_channels = num_channels
        self._prepare()

    def _prepare(self):
        """Allocate state for ``self.sample_rate`` and ``self.num_channels``."""

    def _reset(self):
        """Clear state (called only once prepared)."""
        self._prepare()

    def _param_changed(self, name):
        """A parameter changed while prepared: set up a smooth transition."""
        self._prepare()

    def _process(self, block):
        raise NotImplementedError

    def ramp_samples(self):
        """Length of the parameter-smoothing ramp at the current rate."""
        return max(1, int(round(self.smoothing_ms * 1e-3 * self.sample_rate)))


def make_ramp(value):
    """A ramp state (see ``kernels.common``) resting at ``value``."""
    return np.array([value, value, 0.0, 0.0])


def ramp_to(ramp, target, samples):
    """Start moving ``ramp`` to ``target`` over ``samples`` samples."""
    ramp[1] = target
    if samples <= 0 or ramp[0] == target:
        ramp[0] = target
        ramp[2] = 0.0
        ramp[3] = 0.0
    else:
        ramp[2] = (target - ramp[0]) / samples
        ramp[3] = float(samples)
