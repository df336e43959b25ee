"""Effect specifications as typed on the command line: ``name:key=value,...``.

``equalizer:gains_db=[6,0,0,0,0,0,0,0,0,-3]``, ``limiter:ceiling_db=-1``,
``gain:gain_db=-inf``, ``high_pass:cutoff_hz=120,order=4``.  Values are read
as TOML values (numbers, ``true``/``false``, ``inf``/``-inf``, ``[lists]``);
anything else is taken as a string.
"""

import difflib
import tomllib

from .errors import ParameterError
from .processor import registry


def _split_top_level(text):
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_value(text):
    """A parameter value from its text: TOML value, else the plain string."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_effect(spec):
    """``(name, params)`` from ``name[:key=value,...]``; ``ParameterError`` if malformed."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    params = {}
    if rest.strip():
        for item in _split_top_level(rest):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ParameterError(f"effect {spec!r}: {item.strip()!r} is not key=value "
                                     "(write name:key=value,key=[1,2,3])")
            if key in params:
                raise ParameterError(f"effect {spec!r}: {key!r} is given twice")
            params[key] = parse_value(value)
    return name, params


def unknown_name(kind, name, valid):
    """Error text for an unknown name, with a suggestion and the valid choices."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid {kind}s: {', '.join(sorted(valid))}"


def build_effect(spec):
    """The processor described by ``spec`` (see the module docstring).

    Raises ``ParameterError`` (a ``ValueError``) naming the unknown effect or
    parameter with the valid choices, or the parameter whose value is out of
    range.
    """
    name, params = parse_effect(spec)
    cls = registry.get(name)
    if cls is None:
        raise ParameterError(unknown_name("effect", name, list(registry)))
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"effect {spec!r}: {exc}") from None
