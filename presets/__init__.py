"""Presets: processing graphs stored as TOML files.

``load("voice_clarity")`` returns a ready ``stagevox.dsp.Graph``; ``save(graph,
path)`` writes one; ``names()`` lists the presets and ``describe(name)`` gives
a preset's one-line description.

A preset is named by a bare name (no path separator, no ``.toml`` suffix) or
by the path of a TOML file.  Names are looked up in two places:

- the user preset folder, ``user_dir()``: ``$STAGEVOX_PRESET_DIR`` when set,
  otherwise the platform's user configuration folder plus
  ``stagevox/presets`` (``$XDG_CONFIG_HOME/stagevox/presets`` or
  ``~/.config/stagevox/presets`` on Linux, ``~/Library/Application
  Support/stagevox/presets`` on macOS, ``%APPDATA%\\stagevox\\presets`` on
  Windows).  ``save(graph, "my_voice")`` writes there;
- the presets bundled with stagevox.

A user preset wins over a bundled one of the same name, so a bundled preset
can be tuned and saved under its own name.

Format (schema 1)::

    name = "telephone"
    description = "Narrow-band phone line"
    schema = 1

    [[nodes]]                       # a plain list of nodes is a chain
    name = "band_low"               # optional; default: the type, made unique
    type = "high_pass"              # a name in stagevox.dsp.registry
    params = { cutoff_hz = 300, order = 8 }

    [[edges]]                       # optional; without edges the nodes form
    from = "input"                  # the chain input -> n1 -> ... -> output
    to = "band_low"

A node of ``type = "graph"`` holds its own ``nodes`` (and optional ``edges``)
arrays, recursively.  Parameter values are TOML numbers, booleans, strings
and arrays (``-inf`` is valid TOML for "off").  Every error raises
``PresetError`` naming the file, the node and the valid choices.
"""

import difflib
import os
import re
import tomllib
from importlib import resources
from pathlib import Path

import platformdirs
import tomli_w

from stagevox.dsp import Chain, Graph, registry
from stagevox.dsp.errors import ParameterError
from stagevox.dsp.graph import INPUT, OUTPUT

__all__ = ["PresetError", "SCHEMA", "USER_DIR_ENV", "bundled_names", "describe", "load",
           "names", "save", "user_dir", "user_names"]

#: The schema version this module reads and writes.
SCHEMA = 1

_TOP_KEYS = ("name", "description", "schema", "nodes", "edges")
_NODE_KEYS = ("name", "type", "params")
_GRAPH_NODE_KEYS = ("name", "type", "nodes", "edges")
_EDGE_KEYS = ("from", "to")

#: The environment variable that overrides the user preset folder.
USER_DIR_ENV = "STAGEVOX_PRESET_DIR"

# What a preset saved by name may be called: a file stem that is safe on every
# platform and cannot be read as a path or an option.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


class PresetError(ParameterError):
    """A preset cannot be found, read, checked or written.

    The message names the file, the node (``nodes[i] 'name'``) or edge, and
    the valid choices.
    """


# ------------------------------------------------------------------ public API

def user_dir():
    """The user preset folder, as a ``Path`` (it may not exist yet).

    ``$STAGEVOX_PRESET_DIR`` when set and not empty; otherwise
    ``stagevox/presets`` in the platform's user configuration folder (see the
    module docstring).
    """
    override = os.environ.get(USER_DIR_ENV, "")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("stagevox", appauthor=False, roaming=True)) / "presets"


def bundled_names():
    """Sorted names of the presets bundled with stagevox (file stems)."""
    folder = resources.files(__name__)
    return sorted(p.name[:-5] for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(".toml"))


def user_names():
    """Sorted names of the presets in the user preset folder (``user_dir()``).

    Files whose stem is not a valid preset name are left out (load them by
    path).  A missing folder holds no presets.
    """
    folder = user_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.toml")
                  if p.is_file() and _NAME_RE.match(p.stem))


def names():
    """Sorted names of every preset ``load`` accepts by name: the user's and
    the bundled ones (a name in both is listed once; the user's wins)."""
    return sorted(set(bundled_names()) | set(user_names()))


def describe(name_or_path):
    """The one-line ``description`` of a preset.

    ``name_or_path``: a preset name (see ``names()``; the user's first) or a
    file path.

    Raises ``PresetError`` for an unknown name, an unreadable file, bad TOML or
    bad top-level keys.
    """
    doc, _ = _read(name_or_path)
    return doc.get("description", "")


def load(name_or_path):
    """Load a preset and return it as a ready ``stagevox.dsp.Graph``.

    ``name_or_path``: a preset name (no path separator and no ``.toml``
    suffix, see ``names()``; the user preset folder is searched first, then
    the bundled presets) or the path of a TOML file.  Every node type,
    parameter and edge is checked; any problem raises ``PresetError`` naming
    the file, the node and the valid choices.
    """
    doc, label = _read(name_or_path)
    return _build(doc, label, "")


def save(graph, name_or_path, *, name=None, description=""):
    """Write ``graph`` as a preset (TOML, schema 1); returns the file's ``Path``.

    ``name_or_path``: a bare name such as ``"my_voice"`` (letters, digits,
    ``_`` and ``-``; no path separator, no ``.toml``) saves to
    ``user_dir() / "my_voice.toml"``, creating the folder, so that
    ``load("my_voice")`` finds it; anything else is the path of the file to
    write.  An existing file of that name is replaced.  ``graph`` is a
    ``dsp.Graph`` (``Chain`` and ``Mix`` are saved as plain graphs, nested
    graphs as ``type = "graph"`` nodes) or a single processor (saved as a
    one-node chain).  ``name`` defaults to the file stem; ``description`` is
    a one-line text that ``describe`` returns.  Node types, parameters and
    edges are written so that ``load`` rebuilds the same
    processing; edge observers and streaming state are not saved.  Raises
    ``PresetError`` for a bad name, a processor whose class is not in
    ``dsp.registry``, or a folder or file that cannot be written.
    """
    by_name = _is_name(name_or_path)
    path = _user_path(name_or_path) if by_name else Path(name_or_path)
    if not isinstance(graph, Graph):
        graph = Chain(graph)
    doc = {"name": path.stem if name is None else str(name),
           "description": str(description), "schema": SCHEMA}
    doc.update(_graph_table(graph, str(path), ""))
    try:
        text = tomli_w.dumps(doc)
    except TypeError as e:
        raise PresetError(f"{path}: a parameter value cannot be written as TOML: {e}") from None
    try:
        if by_name:
            path.parent.mkdir(parents=True, exist_ok=True)
        # Through a temporary file, so that a failed write keeps the old preset.
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise PresetError(f"{path}: cannot write the preset: {e}") from None
    return path


def _user_path(name):
    """``user_dir() / f"{name}.toml"`` for a valid preset name."""
    if not _NAME_RE.match(name):
        raise PresetError(f"cannot save a preset named {name!r}: a name is letters, digits, "
                          f"'_' and '-', starting with a letter or digit (or give a path "
                          f"ending in .toml)")
    return user_dir() / f"{name}.toml"


# --------------------------------------------------------------------- reading

def _choices(values):
    return ", ".join(str(v) for v in values) or "(none)"


def _did_you_mean(word, options):
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _is_name(name_or_path):
    return (isinstance(name_or_path, str) and "/" not in name_or_path
            and os.sep not in name_or_path and not name_or_path.endswith(".toml"))


def _find(name):
    """The file of the preset called ``name``: the user's, else the bundled one."""
    user = user_dir() / f"{name}.toml"
    if _NAME_RE.match(name) and user.is_file():
        return user
    bundled = resources.files(__name__) / f"{name}.toml"
    if bundled.is_file():
        return bundled
    valid = names()
    raise PresetError(f"unknown preset {name!r}; {_did_you_mean(name, valid)}"
                      f"valid presets: {_choices(valid)} (user presets are read from "
                      f"{user_dir()}, set {USER_DIR_ENV} to use another folder)")


def _read(name_or_path):
    """``(document, label)`` of a preset, its top level checked."""
    if _is_name(name_or_path):
        source = _find(name_or_path)
    else:
        source = Path(name_or_path)
    label = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetError(f"{label}: no such preset file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PresetError(f"{label}: cannot read the preset: {e}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{label}: TOML syntax error: {e}") from None
    for key in doc:
        if key not in _TOP_KEYS:
            raise PresetError(f"{label}: unknown top-level key {key!r}; "
                              f"{_did_you_mean(key, _TOP_KEYS)}valid keys: {_choices(_TOP_KEYS)}")
    if "schema" not in doc:
        raise PresetError(f"{label}: missing 'schema'; add schema = {SCHEMA} "
                          f"(supported schemas: {SCHEMA})")
    schema = doc["schema"]
    if type(schema) is not int or schema != SCHEMA:
        raise PresetError(f"{label}: unsupported schema {schema!r}; supported schemas: {SCHEMA}")
    for key in ("name", "description"):
        if not isinstance(doc.get(key, ""), str):
            raise PresetError(f"{label}: {key!r} must be a string, got {doc[key]!r}")
    return doc, label


def _build(table, label, where):
    """A ``Graph`` from a table holding ``nodes`` and optionally ``edges``.

    ``where`` prefixes locations in messages (``"nodes[1] 'wet' > "`` inside a
    nested graph, ``""`` at the top).
    """
    nodes = table.get("nodes", [])
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        raise PresetError(f"{label}: {where}'nodes' must be an array of tables "
                          f"([[nodes]] with type and params)")
    graph = Graph()
    for i, node in enumerate(nodes):
        name, proc = _node(node, i, graph.nodes, label, where)
        graph.add(proc, name)
    edges = table.get("edges")
    if edges is None:
        order = list(graph.nodes)
        if order:
            for src, dst in zip([INPUT, *order], [*order, OUTPUT]):
                graph.connect(src, dst)
    else:
        _connect(graph, edges, label, where)
    try:
        graph.check()
    except ValueError as e:
        at = f"{where[:-3]} (graph): " if where else ""
        raise PresetError(f"{label}: {at}the graph cannot run: {e}") from None
    return graph


def _node(node, i, taken, label, where):
    """``(name, processor)`` for the node table ``node`` (index ``i``)."""
    name = node.get("name")
    loc = f"{where}nodes[{i}]" + (f" {name!r}" if isinstance(name, str) else "")
    if "type" not in node:
        raise PresetError(f"{label}: {loc}: missing 'type'; valid types: {_choices(sorted(registry))}")
    kind = node["type"]
    if kind not in registry:
        raise PresetError(f"{label}: {loc}: unknown type {kind!r}; "
                          f"{_did_you_mean(kind, registry)}valid types: {_choices(sorted(registry))}")
    cls = registry[kind]
    is_graph = issubclass(cls, Graph)
    allowed = _GRAPH_NODE_KEYS if is_graph else _NODE_KEYS
    if name is None:
        name, k = kind, 2
        while name in taken:
            name, k = f"{kind}_{k}", k + 1
        loc = f"{loc} {name!r}"
    elif not isinstance(name, str) or not name:
        raise PresetError(f"{label}: {loc}: 'name' must be a non-empty string, got {name!r}")
    for key in node:
        if key not in allowed:
            hint = "" if is_graph else (
                " (nodes and edges belong in type = 'graph' nodes; top-level edges go "
                "before the first [[nodes]] or as [[edges]] tables)")
            raise PresetError(f"{label}: {loc} ({kind}): unknown key {key!r}; "
                              f"{_did_you_mean(key, allowed)}valid keys: {_choices(allowed)}"
                              + hint)
    if name in (INPUT, OUTPUT):
        raise PresetError(f"{label}: {loc}: the name {name!r} is reserved for the graph's "
                          f"own {name}; choose another name")
    if name in taken:
        raise PresetError(f"{label}: {loc}: a node named {name!r} exists already "
                          f"(nodes so far: {_choices(taken)}); give this node another name")
    if is_graph:
        return name, _build(node, label, f"{loc} > ")
    params = node.get("params", {})
    if not isinstance(params, dict):
        raise PresetError(f"{label}: {loc} ({kind}): 'params' must be a table, got {params!r}")
    try:
        proc = cls()
    except (TypeError, ValueError) as e:
        raise PresetError(f"{label}: {loc}: type {kind!r} cannot be built from a preset: {e}") \
            from None
    valid = list(cls.parameters)
    for key, value in params.items():
        if key not in cls.parameters:
            raise PresetError(f"{label}: {loc} ({kind}): unknown parameter {key!r}; "
                              f"{_did_you_mean(key, valid)}valid parameters: {_choices(valid)}")
        try:
            setattr(proc, key, value)
        except ValueError as e:
            raise PresetError(f"{label}: {loc} ({kind}): parameter {key!r}: {e}") from None
    return name, proc


def _connect(graph, edges, label, where):
    """Add the edges of an ``edges`` array to ``graph``."""
    if not isinstance(edges, list) or not all(isinstance(e, dict) for e in edges):
        raise PresetError(f"{label}: {where}'edges' must be an array of tables "
                          f"([[edges]] with from and to)")
    valid = [INPUT, *graph.nodes, OUTPUT]
    for j, edge in enumerate(edges):
        loc = f"{where}edges[{j}]"
        for key in edge:
            if key not in _EDGE_KEYS:
                raise PresetError(f"{label}: {loc}: unknown key {key!r}; "
                                  f"valid keys: {_choices(_EDGE_KEYS)}")
        for key in _EDGE_KEYS:
            if key not in edge:
                raise PresetError(f"{label}: {loc}: missing {key!r}; valid nodes: {_choices(valid)}")
            if edge[key] not in valid:
                raise PresetError(f"{label}: {loc}: {key!r} names unknown node {edge[key]!r}; "
                                  f"{_did_you_mean(edge[key], valid)}valid nodes: {_choices(valid)}")
        try:
            graph.connect(edge["from"], edge["to"])
        except ValueError as e:
            raise PresetError(f"{label}: {loc} ({edge['from']} -> {edge['to']}): {e}") from None


# --------------------------------------------------------------------- writing

def _graph_table(graph, label, where):
    """``{"nodes": [...], "edges": [...]}`` for ``graph``; edges are left out
    when they are exactly the chain of the nodes in order."""
    order = list(graph.nodes)
    nodes = [_node_table(name, proc, label, f"{where}nodes[{i}] {name!r}")
             for i, (name, proc) in enumerate(graph.nodes.items())]
    table = {"nodes": nodes}
    chain = list(zip([INPUT, *order], [*order, OUTPUT])) if order else []
    if graph.edges != chain:
        table["edges"] = [{"from": src, "to": dst} for src, dst in graph.edges]
    return table


def _node_table(name, proc, label, loc):
    if isinstance(proc, Graph):
        return {"name": name, "type": "graph", **_graph_table(proc, label, f"{loc} > ")}
    kind = proc.registry_name
    if registry.get(kind) is not type(proc):
        raise PresetError(f"{label}: {loc}: cannot save a {type(proc).__name__}: its class is "
                          f"not in dsp.registry; registered types: {_choices(sorted(registry))}")
    return {"name": name, "type": kind, "params": proc.params()}
