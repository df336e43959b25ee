"""Tune a preset by ear and by eye in Jupyter (needs ``stagevox[notebooks]``).

``Tuner(audio, sample_rate, "ktv")`` loads a preset and builds a control
for every parameter of every node from the processors' own parameter specs
(``cls.parameters``: range, unit, default, description), so nothing about a
parameter is written twice.  Moving a control sets the parameter on
``tuner.graph`` and re-renders the clip in a worker thread once the
controls have been still for ``debounce_s`` (one rendering at a time,
always of the latest settings, so dragging a slider never queues up work).
The player and the plot are ``ipywidgets.Audio`` and ``ipywidgets.Image``
widgets whose values are replaced, so they redraw with any matplotlib
backend.  ``tuner.save(name)`` (or the save button) writes
the tuned graph with ``presets.save`` into the user preset folder, loads it
back by name and reports whether the parameters and the output are the same.

Everything works without a browser: set ``tuner.control(node, param).value``
(or call ``tuner.set``), then ``tuner.wait()`` and read ``tuner.output``.
"""

import copy
import html
import io
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

try:
    import ipywidgets as widgets
    import traitlets
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"stagevox.presets.tuning needs ipywidgets and matplotlib ({e}); "
                      f"install them with: pip install 'stagevox[notebooks]'") from None

from stagevox.dsp import Graph
from stagevox.dsp.audio import as_block, check_sample_rate
from stagevox.dsp.processor import Bool, Choice, Float, FloatList, Int

from . import PresetError, describe, load, names, save

__all__ = ["SaveCheck", "Tuner", "control_for", "parameters", "render", "render_figure",
           "update_figure"]

#: Number of slider steps across a parameter's range.
SLIDER_STEPS = 200
#: A level slider whose range has no floor (``-inf`` allowed) reaches this far
#: below its top; lower levels are the "off" box.
OPEN_FLOOR_DB = 80.0


# --------------------------------------------------------------------- rendering

def render(graph, audio, sample_rate):
    """``audio`` through a fresh copy of ``graph``, aligned by its latency.

    ``audio``: float32 ``(channels, samples)`` or 1-D mono; ``sample_rate``
    in Hz.  The output has as many samples as the input (the processing
    delay is removed; a reverb's tail past the end is cut).  ``graph`` itself
    is not touched, so a worker can render while the controls change it.
    Raises ``ValueError`` for bad audio or a bad rate.
    """
    block, was_1d = as_block(audio)
    rate = check_sample_rate(sample_rate)
    fresh = copy.deepcopy(graph)
    fresh.reset()
    delay = fresh.latency_at(rate)
    padded = np.concatenate([block, np.zeros((block.shape[0], delay), np.float32)], axis=1)
    out = fresh.process(padded, rate)[:, delay:]
    return out[0] if was_1d and out.shape[0] == 1 else out


def parameters(graph, prefix=""):
    """``{node path: (registry type, params)}`` for every node of ``graph``.

    Nested graphs are walked; their nodes are named ``outer/inner``.  Two
    graphs with equal results build the same processing.
    """
    out = {}
    for name, proc in graph.nodes.items():
        path = f"{prefix}{name}"
        if isinstance(proc, Graph):
            out.update(parameters(proc, f"{path}/"))
        else:
            out[path] = (proc.registry_name, proc.params())
    return out


def _level_db(x):
    return 10 * np.log10(np.maximum(x, 1e-12))


def render_figure(before, after, sample_rate, title):
    """A matplotlib ``Figure`` (no pyplot): waveform and spectrum, before and after.

    ``before``/``after``: 1-D or ``(channels, samples)`` audio at
    ``sample_rate`` Hz; ``title`` heads the figure.  Left: the envelope of
    the waveform against time; right: the long-term spectrum (Welch, 4096
    points, channels averaged) in dB against frequency.  ``update_figure``
    replaces the "after" curves.
    """
    fig = Figure(figsize=(10, 3.4))  # a fixed layout draws twice as fast as "constrained"
    FigureCanvasAgg(fig)
    wave, spec = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.8, wspace=0.25)
    _draw(fig, before, sample_rate, "before", "0.6")
    wave.set(title="waveform", xlabel="time (s)", ylabel="amplitude (full scale)", ylim=(-1, 1))
    spec.set(title="long-term spectrum", xlabel="frequency (Hz)",
             ylabel="power spectral density (dB/Hz)", xlim=(20, sample_rate / 2))
    for ax in (wave, spec):
        ax.grid(alpha=0.3)
    return update_figure(fig, after, sample_rate, title)


def update_figure(fig, after, sample_rate, title):
    """Replace the "after" curves of a ``render_figure`` figure and its title.

    Redrawing a figure whose axes exist already is several times faster than
    drawing a new one (the ticks and their labels are kept).  Returns ``fig``.
    """
    wave, spec = fig.axes
    for artist in [*wave.collections, *spec.lines]:
        if artist.get_label() == "after":
            artist.remove()
    _draw(fig, after, sample_rate, "after", "C0")
    for ax in (wave, spec):
        ax.legend(loc="lower right")
    fig.suptitle(title)
    return fig


def _draw(fig, audio, sample_rate, label, colour):
    """Waveform envelope and long-term spectrum of ``audio`` on ``fig``'s two axes."""
    wave, spec = fig.axes
    channels = np.atleast_2d(np.asarray(audio, np.float64))
    mono = channels.mean(axis=0)
    bins = max(1, mono.size // 2000)
    frames = mono[: mono.size // bins * bins].reshape(-1, bins)
    t = (np.arange(frames.shape[0]) + 0.5) * bins / sample_rate
    wave.fill_between(t, frames.min(axis=1), frames.max(axis=1), color=colour, alpha=0.7,
                      lw=0, label=label)
    f, p = signal.welch(channels, sample_rate, nperseg=min(4096, mono.size), detrend=False)
    spec.semilogx(f[1:], _level_db(p.mean(axis=0)[1:]), color=colour, label=label)
    spec.relim()
    spec.autoscale_view(scalex=False)


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _wav(audio, sample_rate):
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.atleast_2d(audio), -1.0, 1.0).T, sample_rate,
             format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ---------------------------------------------------------------------- controls

def _label(param, name):
    return f"{name} ({param.unit})" if param.unit else name


def _tooltip(param):
    return f"{param.doc}; {param.range_text()}; default {param.default}"


def _nice_step(span):
    """A step of 1, 2 or 5 times a power of ten, about ``span / SLIDER_STEPS``."""
    raw = span / SLIDER_STEPS
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _slider(lo, hi, value, description, tooltip, unit, vertical=False):
    """A float slider over ``[lo, hi]``: logarithmic for wide ranges in Hz or ms."""
    style = {"description_width": "initial"}
    layout = widgets.Layout(width="auto" if vertical else "420px")
    common = dict(description=description, tooltip=tooltip, continuous_update=True,
                  style=style, layout=layout,
                  orientation="vertical" if vertical else "horizontal")
    if unit in ("Hz", "ms", "s", "m") and lo > 0 and hi / lo >= 100:
        return widgets.FloatLogSlider(value=value, base=10, min=math.log10(lo),
                                      max=math.log10(hi), step=0.005, readout_format=".4g",
                                      **common)
    step = _nice_step(hi - lo)
    return widgets.FloatSlider(value=min(max(value, lo), hi), min=lo, max=hi, step=step,
                               readout_format=".4g", **common)


class LevelControl(widgets.HBox):
    """A slider and an "off" box for a level that may be ``-inf`` (off).

    ``value`` is the level: the slider's value, or ``-inf`` while "off" is
    ticked.
    """

    value = traitlets.Float()

    def __init__(self, slider, value):
        self.slider = slider
        self.off = widgets.Checkbox(description="off", indent=False,
                                    layout=widgets.Layout(width="60px"))
        super().__init__([slider, self.off])
        self._busy = False
        self.value = value
        self._show(value)
        slider.observe(self._from_parts, names="value")
        self.off.observe(self._from_parts, names="value")
        self.observe(lambda change: self._show(change["new"]), names="value")

    def _show(self, value):
        self._busy = True
        try:
            self.off.value = value == -math.inf
            if value != -math.inf:
                self.slider.value = value
        finally:
            self._busy = False

    def _from_parts(self, change):
        if not self._busy:
            self.value = -math.inf if self.off.value else float(self.slider.value)


class ListControl(widgets.HBox):
    """One control per item of a list parameter; ``value`` is the tuple."""

    value = traitlets.Tuple()

    def __init__(self, items, value):
        self.items = items
        super().__init__(items)
        self._busy = False
        self.value = tuple(value)
        for item in items:
            item.observe(self._from_parts, names="value")
        self.observe(self._show, names="value")

    def _show(self, change):
        self._busy = True
        try:
            for item, v in zip(self.items, change["new"]):
                item.value = v
        finally:
            self._busy = False

    def _from_parts(self, change):
        if not self._busy:
            self.value = tuple(float(item.value) for item in self.items)


def _float_control(lo, hi, off, value, description, tooltip, unit, vertical=False):
    if lo == -math.inf:
        lo, off = hi - OPEN_FLOOR_DB, True
    slider = _slider(lo, hi, lo if value == -math.inf else value, description, tooltip,
                     unit, vertical)
    if not off:
        return slider
    level = LevelControl(slider, value)
    level.tooltip = tooltip
    return level


def control_for(param, name, value):
    """An ipywidget for parameter ``name`` (spec ``param``), showing ``value``.

    The widget's ``value`` is a valid value of the parameter.  Range, unit,
    default and description come from the spec: a slider for ``Float`` and
    ``Int`` (logarithmic for wide ranges in Hz, ms, s or m; with an "off" box
    where ``-inf`` is allowed), a checkbox for ``Bool``, a menu for
    ``Choice`` and a row of vertical sliders for ``FloatList``.  Raises
    ``TypeError`` for a kind of parameter it does not know.
    """
    label, tip = _label(param, name), _tooltip(param)
    if isinstance(param, Float):
        return _float_control(param.lo, param.hi, param.off, value, label, tip, param.unit)
    if isinstance(param, Int):
        return widgets.IntSlider(value=value, min=param.lo, max=param.hi, description=label,
                                 tooltip=tip, style={"description_width": "initial"},
                                 layout=widgets.Layout(width="420px"))
    if isinstance(param, Bool):
        return widgets.Checkbox(value=value, description=label, tooltip=tip, indent=False)
    if isinstance(param, Choice):
        return widgets.Dropdown(options=[(str(c), c) for c in param.choices], value=value,
                                description=label, tooltip=tip,
                                style={"description_width": "initial"})
    if isinstance(param, FloatList):
        items = [_float_control(param.lo, param.hi, False, v, f"[{i}]", tip, param.unit,
                                vertical=True)
                 for i, v in enumerate(value)]
        return _Labelled(ListControl(items, value), label, tip)
    raise TypeError(f"no control for the {type(param).__name__} parameter {name!r}")


class _Labelled(widgets.VBox):
    """A list control under its label; ``value`` is the list control's."""

    value = traitlets.Tuple()

    def __init__(self, inner, label, tooltip):
        super().__init__([widgets.Label(label, tooltip=tooltip), inner], tooltip=tooltip)
        self.inner = inner
        self.value = inner.value
        traitlets.link((inner, "value"), (self, "value"))


# ------------------------------------------------------------------------- tuner

@dataclass
class SaveCheck:
    """What ``Tuner.save`` found after saving and loading a preset back."""

    name: str
    path: Path
    same_parameters: bool
    max_difference: float

    @property
    def ok(self):
        """True when the reloaded preset has the same parameters and output."""
        return self.same_parameters and self.max_difference <= 1e-6


class Tuner:
    """Controls for every parameter of a preset, live rendering, and saving.

    ``audio``: the clip to tune on (1-D mono or ``(channels, samples)``,
    float32), at ``sample_rate`` Hz.  ``preset``: a preset name (see
    ``presets.names()``; default: the first).  ``debounce_s``: pause after
    the last change before a render starts.  ``background=False`` renders
    in the calling thread on each change instead (for scripts).

    Attributes: ``graph`` (the ``dsp.Graph`` being tuned), ``output`` (the
    latest rendering), ``widget`` (what a notebook displays), ``controls``
    (``{(node path, parameter): widget}``), ``preset_menu``, ``player``,
    ``plot``, ``status``, ``save_name``, ``save_button``, ``last_save``.
    Raises ``PresetError`` for an unknown preset and ``ValueError`` for bad
    audio.
    """

    def __init__(self, audio, sample_rate, preset=None, *, debounce_s=0.15, background=True):
        block, _ = as_block(audio)
        self.audio = block[0] if block.shape[0] == 1 else block
        self.sample_rate = check_sample_rate(sample_rate)
        self.debounce_s = float(debounce_s)
        self.background = background
        self.graph = None
        self.output = None
        self.controls = {}
        self.last_save = None
        self._lock = threading.Lock()
        self._generation = 0
        self._done = threading.Event()
        self._error = None
        self._figure = None
        self._figure_lock = threading.Lock()
        self._job = None
        self._changed_at = 0.0
        self._wake = threading.Event()
        self._worker = None

        self.preset_menu = widgets.Dropdown(options=names(), description="preset")
        self.controls_box = widgets.VBox()
        self.player = widgets.Audio(format="wav", autoplay=False, loop=False)
        self.plot = widgets.Image(format="png")
        self.status = widgets.HTML()
        self.save_name = widgets.Text(description="save as", placeholder="a preset name")
        self.save_button = widgets.Button(description="save preset", icon="save")
        self.widget = widgets.VBox([
            self.preset_menu, self.controls_box, self.player, self.plot,
            widgets.HBox([self.save_name, self.save_button]), self.status])
        self._quiet = False
        self.select(preset or names()[0])
        self.preset_menu.observe(self._on_menu, names="value")
        self.save_button.on_click(lambda _: self._save_from_widgets())

    # -- choosing and changing ---------------------------------------------------
    def select(self, name):
        """Load preset ``name`` (see ``presets.names()``), rebuild the controls
        and render.  Raises ``PresetError`` for an unknown name."""
        self.graph = load(name)
        self.preset = name
        self._quiet = True
        try:
            self.preset_menu.options = names()  # presets saved since are listed too
            self.preset_menu.value = name
        finally:
            self._quiet = False
        self.save_name.value = f"{name}_tuned"
        self.controls = {}
        sections, titles = [], []
        for path, proc in self._processors(self.graph):
            rows = []
            for pname, spec in proc.parameters.items():
                widget = control_for(spec, pname, getattr(proc, pname))
                widget.observe(self._on_change(proc, path, pname), names="value")
                self.controls[(path, pname)] = widget
                rows.append(widget)
            if rows:
                sections.append(widgets.VBox(rows))
                titles.append(f"{path} ({proc.registry_name})")
        self.controls_box.children = [widgets.Accordion(children=sections, titles=titles)]
        self._schedule()

    def _on_menu(self, change):
        if not self._quiet and change["new"] is not None:
            self.select(change["new"])

    def control(self, node, parameter):
        """The widget of ``parameter`` of node ``node`` (``outer/inner`` when nested)."""
        try:
            return self.controls[(node, parameter)]
        except KeyError:
            valid = ", ".join(f"{n}.{p}" for n, p in self.controls)
            raise KeyError(f"no control {node}.{parameter}; controls: {valid}") from None

    def set(self, node, parameter, value):
        """Move a control as a person would: the graph changes and a render starts."""
        self.control(node, parameter).value = value

    def processor(self, node):
        """The processor at node path ``node`` (``outer/inner`` when nested)."""
        proc = self.graph
        for part in node.split("/"):
            proc = proc[part]
        return proc

    @staticmethod
    def _processors(graph, prefix=""):
        for name, proc in graph.nodes.items():
            if isinstance(proc, Graph):
                yield from Tuner._processors(proc, f"{prefix}{name}/")
            else:
                yield f"{prefix}{name}", proc

    def _on_change(self, proc, path, pname):
        def changed(change):
            try:
                setattr(proc, pname, change["new"])
            except ValueError as e:
                self._say(f"{path}.{pname}: {e}", error=True)
                return
            self._schedule()
        return changed

    # -- rendering ---------------------------------------------------------------
    def _schedule(self):
        """Hand the graph as it is now to the renderer (or render it now)."""
        with self._lock:
            self._generation += 1
            self._job = (self._generation, copy.deepcopy(self.graph), self.preset)
            self._changed_at = time.monotonic()
            self._done.clear()
            job = self._job
        if not self.background:
            self._render_job(*job)
            return
        self._wake.set()
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="stagevox-tuner",
                                            daemon=True)
            self._worker.start()

    def _work(self):
        """The render thread: one rendering at a time, always of the latest graph,
        once the controls have been still for ``debounce_s``."""
        while True:
            self._wake.wait()
            while (still := time.monotonic() - self._changed_at) < self.debounce_s:
                time.sleep(self.debounce_s - still)
            self._wake.clear()
            with self._lock:
                job = self._job
            self._render_job(*job)

    def _render_job(self, generation, graph, preset):
        try:
            out = render(graph, self.audio, self.sample_rate)
            png = self._draw(out, f"preset {preset}: before (grey) and after (blue)")
            wav = _wav(out, self.sample_rate)
        except Exception as e:  # shown to the person, and raised by wait()
            with self._lock:
                if generation == self._generation:
                    self._error = e
                    self._done.set()
            self._say(f"rendering failed: {e}", error=True)
            return
        with self._lock:
            # Shown even if the controls moved on meanwhile (the next rendering
            # follows); wait() returns only once the latest change is rendered.
            self.output, self._error = out, None
            self.player.value, self.plot.value = wav, png
            if generation == self._generation:
                self._done.set()

    def _draw(self, out, title):
        """PNG of the plot for ``out``, reusing the figure drawn last time."""
        with self._figure_lock:
            if self._figure is None:
                self._figure = render_figure(self.audio, out, self.sample_rate, title)
            else:
                update_figure(self._figure, out, self.sample_rate, title)
            return _png(self._figure)

    def wait(self, timeout=60.0):
        """Block until the latest change has been rendered; returns ``output``.

        Raises ``TimeoutError`` after ``timeout`` seconds and re-raises an
        error of the rendering.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"no rendering within {timeout} s")
        if self._error is not None:
            raise self._error
        return self.output

    # -- saving ------------------------------------------------------------------
    def save(self, name, description=None):
        """Save the tuned graph as preset ``name`` in the user preset folder.

        Loads it back with ``presets.load(name)`` and compares parameters and
        the rendered clip; returns (and shows) a ``SaveCheck``.  Raises
        ``PresetError`` for a bad name or a folder that cannot be written.
        """
        if description is None:
            description = f"tuned from {self.preset}: {describe(self.preset)}"[:200]
        with self._lock:
            graph = copy.deepcopy(self.graph)
        path = save(graph, name, description=description)
        reloaded = load(name)
        same = parameters(reloaded) == parameters(graph)
        a = render(graph, self.audio, self.sample_rate)
        b = render(reloaded, self.audio, self.sample_rate)
        check = SaveCheck(name, path, same, float(np.max(np.abs(a - b), initial=0.0)))
        self.last_save = check
        self._say(f"saved {name} to {path}; loaded back: "
                  f"parameters {'the same' if same else 'DIFFERENT'}, largest output "
                  f"difference {check.max_difference:.1e}", error=not check.ok)
        return check

    def _save_from_widgets(self):
        try:
            self.save(self.save_name.value.strip())
        except PresetError as e:
            self._say(str(e), error=True)

    def _say(self, text, error=False):
        colour = "#b00020" if error else "#1b5e20"
        self.status.value = f'<span style="color:{colour}">{html.escape(text)}</span>'
