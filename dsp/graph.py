"""Processing graphs: processors as nodes, audio flowing along edges.

A ``Graph`` is itself a processor, so graphs nest.  Its nodes are named; the
names ``"input"`` and ``"output"`` stand for the graph's own input and output.

* The run order is computed when the graph changes, not on every block.
* A node with several incoming edges gets their sum (mono inputs spread to
  every channel), or the list of frames if it is ``multi_input`` (``Mixer``).
* Paths of different latency that meet are aligned: the shorter path is
  delayed, so parallel branches stay in phase.  ``latency`` of the graph is
  that of its longest path.
* Every edge may carry an observer, ``observer(frame, sample_rate)``, called
  with the frame the edge carries; it may return ``None`` to leave the frame
  alone or an array to replace it.
"""

import numpy as np

from .audio import as_block, check_sample_rate
from .lazykernels import kernels
from .mixer import Mixer
from .processor import Processor, snake_case

kcommon = kernels("common")

INPUT = "input"
OUTPUT = "output"


class _Edge:
    __slots__ = ("src", "dst", "observer", "delay", "buffer", "position")

    def __init__(self, src, dst, observer):
        self.src, self.dst, self.observer = src, dst, observer
        self.delay = 0
        self.buffer = None
        self.position = np.zeros(1, dtype=np.int64)

    def carry(self, frame, sample_rate):
        if self.delay:
            if self.buffer is None or self.buffer.shape[0] != frame.shape[0]:
                self.buffer = np.zeros((frame.shape[0], self.delay), dtype=np.float32)
                self.position[0] = 0
            out = np.empty_like(frame)
            kcommon.delay_line(frame, out, self.buffer, self.position)
            frame = out
        if self.observer is not None:
            replaced = self.observer(frame, sample_rate)
            if replaced is not None:
                replaced, _ = as_block(replaced)
                if replaced.shape[1] != frame.shape[1]:
                    raise ValueError(
                        f"observer on edge {self.src} -> {self.dst} returned "
                        f"{replaced.shape[1]} samples, expected {frame.shape[1]}")
                frame = replaced
        return frame


def _sum(frames):
    if len(frames) == 1:
        return frames[0]
    channels = max(f.shape[0] for f in frames)
    for f in frames:
        if f.shape[0] not in (1, channels):
            raise ValueError(f"cannot mix {f.shape[0]} channels with {channels}")
    out = np.zeros((channels, frames[0].shape[1]), dtype=np.float32)
    for f in frames:
        out += f
    return out


class Graph(Processor):
    """A directed acyclic graph of processors (see the module docstring).

    ``add(processor, name=None)`` adds a node and returns its name,
    ``connect(src, dst, observer=None)`` adds an edge (a cycle raises
    ``ValueError``), ``graph[name]`` is a node's processor.  A graph with no
    edges passes its input through.
    """

    channel_independent = False

    def __init__(self, **params):
        super().__init__(**params)  # no parameters: unknown names raise ValueError
        self._nodes = {}
        self._edges = []
        self._order = None
        self._latencies = None

    # -- building --------------------------------------------------------------
    @property
    def nodes(self):
        """Node name -> processor, in the order they were added."""
        return dict(self._nodes)

    @property
    def edges(self):
        """``(src, dst)`` pairs, in the order they were connected."""
        return [(e.src, e.dst) for e in self._edges]

    def __getitem__(self, name):
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self._nodes) or '(none)'}") \
                from None

    def add(self, processor, name=None):
        """Add ``processor`` as a node; returns its (possibly generated) name.

        ``name``: a unique non-empty string (default: the registry name, made
        unique with ``_2``, ``_3``, ...).  Raises ``TypeError`` for a
        non-processor and ``ValueError`` for a processor already in the graph
        or a name that is taken or reserved (``input``, ``output``).
        """
        if not isinstance(processor, Processor):
            raise TypeError(f"a graph node must be a Processor, got {type(processor).__name__}")
        if any(p is processor for p in self._nodes.values()):
            raise ValueError("this processor is already a node of the graph; "
                             "a processor has one state, so use a second instance")
        if name is None:
            base = processor.registry_name or snake_case(type(processor).__name__)
            name, k = base, 2
            while name in self._nodes:
                name, k = f"{base}_{k}", k + 1
        elif not isinstance(name, str) or not name:
            raise ValueError(f"node name must be a non-empty string, got {name!r}")
        if name in (INPUT, OUTPUT):
            raise ValueError(f"{name!r} is reserved for the graph's own {name}")
        if name in self._nodes:
            raise ValueError(f"a node named {name!r} exists already")
        self._nodes[name] = processor
        self._changed()
        return name

    def remove(self, name):
        """Remove node ``name`` and its edges.

        Raises ``KeyError`` naming the existing nodes when there is no such node.
        """
        self[name]
        del self._nodes[name]
        self._edges = [e for e in self._edges if name not in (e.src, e.dst)]
        self._changed()

    def connect(self, src, dst, observer=None):
        """Add the edge ``src -> dst``, optionally with an observer.

        ``src``/``dst``: node names, or ``"input"``/``"output"``.
        ``observer(frame, sample_rate)`` sees the frame on the edge and may
        return a replacement.  Raises ``ValueError`` for an unknown node, an
        edge that exists or would make a cycle, and ``TypeError`` for an
        observer that is not callable.
        """
        if src == OUTPUT:
            raise ValueError("'output' has no outgoing edges")
        if dst == INPUT:
            raise ValueError("'input' has no incoming edges")
        for end in (src, dst):
            if end not in (INPUT, OUTPUT) and end not in self._nodes:
                raise ValueError(f"no node {end!r}; nodes: "
                                 f"{', '.join([INPUT, *self._nodes, OUTPUT])}")
        if src == dst:
            raise ValueError(f"edge {src} -> {dst} would make a cycle")
        if any(e.src == src and e.dst == dst for e in self._edges):
            raise ValueError(f"edge {src} -> {dst} exists already")
        path = self._path(dst, src)
        if path:
            raise ValueError(f"edge {src} -> {dst} would make a cycle: "
                             f"{' -> '.join(path)} -> {dst}")
        if observer is not None and not callable(observer):
            raise TypeError("observer must be callable as observer(frame, sample_rate)")
        self._edges.append(_Edge(src, dst, observer))
        self._changed()

    def disconnect(self, src, dst):
        """Remove the edge ``src -> dst`` (node names or ``input``/``output``).

        Raises ``ValueError`` when there is no such edge.
        """
        self._edge(src, dst)
        self._edges = [e for e in self._edges if (e.src, e.dst) != (src, dst)]
        self._changed()

    def observe(self, src, dst, observer):
        """Set (or with ``None`` clear) the observer of the edge ``src -> dst``.

        ``observer(frame, sample_rate)`` may return a replacement frame.
        Raises ``TypeError`` for an observer that is not callable and
        ``ValueError`` when there is no such edge.
        """
        if observer is not None and not callable(observer):
            raise TypeError("observer must be callable as observer(frame, sample_rate)")
        self._edge(src, dst).observer = observer

    def _edge(self, src, dst):
        for e in self._edges:
            if e.src == src and e.dst == dst:
                return e
        raise ValueError(f"no edge {src} -> {dst}")

    def _path(self, start, goal):
        """A path ``start -> ... -> goal`` as a list of names, or None."""
        stack, seen = [[start]], {start}
        while stack:
            path = stack.pop()
            if path[-1] == goal:
                return path
            for e in self._edges:
                if e.src == path[-1] and e.dst not in seen:
                    seen.add(e.dst)
                    stack.append(path + [e.dst])
        return None

    def check(self):
        """Check the graph can run: ``ValueError`` if nothing reaches 'output' or
        a node that feeds the output has no input.  Also computes the run order."""
        if self._edges and self._order is None:
            self._plan()

    def _changed(self):
        self._order = None

    # -- running ---------------------------------------------------------------
    def _plan(self):
        """Topological order of the nodes that feed the output."""
        feeds = {OUTPUT}
        grew = True
        while grew:
            grew = False
            for e in self._edges:
                if e.dst in feeds and e.src not in feeds:
                    feeds.add(e.src)
                    grew = True
        if self._edges and OUTPUT not in {e.dst for e in self._edges}:
            raise ValueError("nothing is connected to 'output'")
        incoming = {n: [e for e in self._edges if e.dst == n] for n in feeds}
        for name in feeds - {INPUT}:
            if not incoming[name]:
                raise ValueError(f"node {name!r} feeds the output but has no input")
        order, done = [], {INPUT}
        pending = [n for n in [*self._nodes, OUTPUT] if n in feeds]
        while pending:
            for n in pending:
                if all(e.src in done for e in incoming[n]):
                    order.append(n)
                    done.add(n)
                    pending.remove(n)
                    break
        self._order = [(n, self._nodes.get(n), incoming[n]) for n in order]
        self._latencies = None

    def _align(self, sample_rate, apply=True):
        """Delay the edges of shorter paths; returns the graph's latency.

        With ``apply=False`` only the latency is computed: asking for the
        latency at another rate must not touch the streaming delays.
        """
        lat = [(p.latency_at(sample_rate) if p is not None else 0) for _, p, _ in self._order]
        if apply and lat == self._latencies:
            return self._latency
        arrival = {INPUT: 0}
        for (name, _, incoming), own in zip(self._order, lat):
            ready = {id(e): arrival[e.src] for e in incoming}
            start = max(ready.values())
            for e in incoming:
                delay = start - ready[id(e)]
                if apply and delay != e.delay:
                    e.delay, e.buffer = delay, None
            arrival[name] = start + own
        if apply:
            self._latencies = lat
            self._latency = arrival[OUTPUT]
        return arrival[OUTPUT]

    def process(self, audio, sample_rate):
        """Run the block through the graph; see ``Processor.process``."""
        block, was_1d = as_block(audio)
        if sample_rate != self.sample_rate:
            self.sample_rate = check_sample_rate(sample_rate)
            for e in self._edges:  # alignment buffers hold audio of the old rate
                e.buffer = None
        self.num_channels = block.shape[0]
        if not self._edges:
            out = block.copy()
        else:
            if self._order is None:
                self._plan()
            self._align(self.sample_rate)
            values = {INPUT: block}
            out = None
            for name, proc, incoming in self._order:
                frames = [e.carry(values[e.src], self.sample_rate) for e in incoming]
                if proc is None:
                    out = _sum(frames)
                elif proc.multi_input:
                    values[name] = proc.process(frames, self.sample_rate)
                else:
                    values[name] = proc.process(_sum(frames), self.sample_rate)
        if out is block or out.base is block or out is audio:
            out = out.copy()  # never hand the caller's own array back
        if was_1d and out.shape[0] == 1:
            return out[0]
        return out

    __call__ = process

    def reset(self):
        """Reset every node and the alignment delays."""
        for p in self._nodes.values():
            p.reset()
        for e in self._edges:
            e.buffer = None

    def latency_at(self, sample_rate):
        if not self._edges:
            return 0
        if self._order is None:
            self._plan()
        return self._align(sample_rate, apply=False)

    def tail_at(self, sample_rate):
        if not self._edges:
            return 0
        if self._order is None:
            self._plan()
        tails = {INPUT: 0}
        for name, proc, incoming in self._order:
            own = proc.tail_at(sample_rate) if proc is not None else 0
            tails[name] = max(tails[e.src] for e in incoming) + own
        return tails[OUTPUT]

    def __repr__(self):
        return f"Graph(nodes={list(self._nodes)}, edges={self.edges})"


class Chain(Graph, register=False):
    """Processors in series: ``Chain(a, b, c)`` is input -> a -> b -> c -> output."""

    def __init__(self, *processors):
        super().__init__()
        prev = INPUT
        for p in processors:
            name = self.add(p)
            self.connect(prev, name)
            prev = name
        if processors:
            self.connect(prev, OUTPUT)

    def __repr__(self):
        return f"Chain({', '.join(repr(p) for p in self._nodes.values())})"


class Mix(Graph, register=False):
    """Parallel branches summed by a ``Mixer``: ``Mix(a, b, gains_db=[0, -6])``.

    A branch of ``None`` is the dry input.  Branches are aligned by latency;
    mixer parameters (``gains_db``, ``soft_clip``, ``ceiling_db``, ...) are
    keyword arguments.
    """

    def __init__(self, *branches, **mixer_params):
        super().__init__()
        mixer = self.add(Mixer(**mixer_params), "mixer")
        for b in branches:
            if b is None:
                self.connect(INPUT, mixer)
            else:
                name = self.add(b)
                self.connect(INPUT, name)
                self.connect(name, mixer)
        self.connect(mixer, OUTPUT)
