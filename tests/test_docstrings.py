"""Every public class and function of stagevox has a docstring that says what
it does, names its parameters and says what it raises.

"Public" is what ``__all__`` of ``stagevox.dsp``, ``stagevox.engine``,
``stagevox.presets`` and ``stagevox.cli`` exports, the public functions of
modules exported there, and the public methods and properties of the exported
classes (those defined in stagevox, inherited ones included).  The rules:

- a docstring of its own (a class does not borrow its base's);
- a callable that takes parameters has more than a one-line docstring, and
  the docstring (for a class: its own or its ``__init__``'s; for an
  override: its own or the overridden method's) names each parameter;
  ``*args``/``**kwargs`` are exempt;
- a callable whose own body raises an exception by name (``raise X(...)``)
  says so: its docstring contains "raise" or the exception's name;
- a processor's parameters (``Param``s: range and unit come from the
  ``Param`` itself) each have a ``doc``.
"""

import ast
import importlib
import inspect
import re
import textwrap

import pytest

from stagevox.dsp.processor import Param, Processor

MODULES = ("stagevox.dsp", "stagevox.engine", "stagevox.presets", "stagevox.cli")


def _own_doc(obj):
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _is_ours(obj):
    return (getattr(obj, "__module__", "") or "").startswith("stagevox.")


def _parameters(fn, skip_first):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    names = [p.name for p in sig.parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names[1:] if skip_first and names else names


def _raised_names(fn):
    """Names of the exceptions ``fn``'s own body raises (nested functions excluded)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return set()
    tree = ast.parse(source)
    root = tree.body[0]
    names = set()
    stack = list(ast.iter_child_nodes(root))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id[:1].isupper():
                names.add(exc.id)
            elif isinstance(exc, ast.Attribute):
                names.add(exc.attr)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _mentions(doc, name):
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", doc) is not None


def _problems_of_callable(label, fn, doc, params):
    out = []
    if not doc:
        return [f"{label}: no docstring"]
    if params and len(doc.strip().splitlines()) < 2:
        out.append(f"{label}: one-line docstring for a callable with parameters {params}")
    missing = [p for p in params if not _mentions(doc, p)]
    if missing:
        out.append(f"{label}: docstring does not name parameter(s) {missing}")
    raised = _raised_names(fn)
    if raised and "raise" not in doc.lower() and not any(_mentions(doc, r) for r in raised):
        out.append(f"{label}: raises {sorted(raised)} but the docstring does not say so")
    return out


def _method_problems(cls, seen):
    out = []
    for klass in cls.__mro__:
        if not _is_ours(klass):
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_") and name != "__call__" or name in seen:
                continue
            label = f"{cls.__module__}.{cls.__name__}.{name}"
            if isinstance(attr, property):
                seen.add(name)
                if not _own_doc(attr.fget):
                    out.append(f"{label}: property without a docstring")
                continue
            raw = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if not inspect.isfunction(raw):
                continue
            seen.add(name)
            if name == "__call__" and raw is getattr(klass, "process", None):
                continue                    # ``__call__ = process``
            skip = not isinstance(attr, staticmethod)
            doc = "\n".join(filter(None, [_own_doc(raw), _base_doc(klass, name)]))
            out += _problems_of_callable(label, raw, doc, _parameters(raw, skip))
    return out


def _base_doc(klass, name):
    """The docstring of the method ``name`` that ``klass`` overrides, if any
    (an override keeps its base's contract, so the base's docstring counts)."""
    for base in klass.__mro__[1:]:
        attr = vars(base).get(name) if _is_ours(base) else None
        if attr is not None:
            return _own_doc(getattr(attr, "__func__", attr))
    return ""


def _class_problems(cls):
    label = f"{cls.__module__}.{cls.__name__}"
    doc = _own_doc(cls)
    if not doc:
        return [f"{label}: no class docstring"]
    out = []
    init = next((k.__dict__["__init__"] for k in cls.__mro__
                 if "__init__" in k.__dict__ and _is_ours(k)), None)
    if init is not None and not issubclass(cls, Processor):
        full = doc + "\n" + _own_doc(init)
        out += _problems_of_callable(f"{label}(...)", init, full, _parameters(init, True))
    if issubclass(cls, Processor):
        for name, p in cls.parameters.items():
            if isinstance(p, Param) and not p.doc.strip():
                out.append(f"{label}.{name}: parameter without a doc")
    return out + _method_problems(cls, set())


def public_api():
    """``(label, object)`` of every exported class and function, each once."""
    found = {}
    for modname in MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                for sub, fn in vars(obj).items():
                    if (not sub.startswith("_") and inspect.isfunction(fn)
                            and fn.__module__ == obj.__name__):
                        found.setdefault(id(fn), (f"{obj.__name__}.{sub}", fn))
            elif inspect.isclass(obj) or inspect.isfunction(obj):
                found.setdefault(id(obj), (f"{modname}.{name}", obj))
    return sorted(found.values(), key=lambda item: item[0])


API = public_api()


def test_the_walk_sees_the_api():
    labels = {label for label, _ in API}
    for expected in ("stagevox.engine.Client", "stagevox.dsp.Reverb", "stagevox.presets.load",
                     "stagevox.cli.main", "stagevox.dsp.samples.speech"):
        assert expected in labels
    assert len(API) >= 70


@pytest.mark.parametrize("label,obj", API, ids=[label for label, _ in API])
def test_public_docstring(label, obj):
    if inspect.isclass(obj):
        problems = _class_problems(obj)
    else:
        problems = _problems_of_callable(label, obj, _own_doc(obj), _parameters(obj, False))
    assert not problems, "\n".join(problems)


def test_the_rules_can_fail():
    def undocumented(x):
        return x

    def terse(gain_db):
        """Set the gain."""
        if gain_db > 24:
            raise ValueError("too loud")

    def good(gain_db):
        """Set the gain.

        ``gain_db``: -60 to 24 dB.  Raises ``ValueError`` outside that range.
        """
        if gain_db > 24:
            raise ValueError("too loud")

    assert _problems_of_callable("u", undocumented, _own_doc(undocumented), ["x"])
    problems = _problems_of_callable("t", terse, _own_doc(terse), ["gain_db"])
    assert len(problems) == 3, problems       # one line, unnamed parameter, raise not told
    assert not _problems_of_callable("g", good, _own_doc(good), ["gain_db"])

    class Bare(Processor, register=False):
        """A processor whose parameter has no doc."""
        level = Param(0.0)

    assert any("parameter without a doc" in p for p in _class_problems(Bare))
    assert any("no class docstring" in p for p in _class_problems(type("X", (), {})))
