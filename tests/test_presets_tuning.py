"""The preset tuner behind notebooks/02_tune_a_preset, driven without a browser."""

import io
import math

import numpy as np
import pytest
import soundfile as sf

from stagevox import dsp, presets
from stagevox.presets import tuning

SR = 48000


@pytest.fixture(scope="module")
def clip(speech):
    return speech[SR:2 * SR].copy()


def aligned(graph, x):
    """Reference rendering: one call over the input and zeros, the delay cut."""
    delay = graph.latency_at(SR)
    y = graph.process(np.concatenate([x, np.zeros(delay, np.float32)]), SR)
    return y[..., delay:]


# ----------------------------------------------------------------- controls from the specs

def every_parameter():
    for kind, cls in sorted(dsp.registry.items()):
        if issubclass(cls, dsp.Graph):
            continue
        for name, spec in cls.parameters.items():
            yield kind, cls, name, spec


@pytest.mark.parametrize("kind, cls, name, spec",
                         [pytest.param(*p, id=f"{p[0]}.{p[2]}") for p in every_parameter()])
def test_control_shows_the_specs_range_unit_and_default(kind, cls, name, spec):
    default = cls().params()[name]
    if isinstance(spec, dsp.processor.FloatList) and not default:
        default = [0.0, -6.0]  # a mixer's list grows with its inputs
    widget = tuning.control_for(spec, name, default)
    value = widget.value
    assert (list(value) if isinstance(value, tuple) else value) == default
    assert spec.doc in widget.tooltip and f"default {spec.default}" in widget.tooltip
    label = (widget.slider.description if isinstance(widget, tuning.LevelControl)
             else getattr(widget, "description", None) or widget.children[0].value)
    assert label == (f"{name} ({spec.unit})" if spec.unit else name)
    sliders = [w for w in _leaves(widget) if hasattr(w, "min")]
    if isinstance(spec, (dsp.processor.Float, dsp.processor.Int, dsp.processor.FloatList)):
        assert sliders
        for s in sliders:
            lo, hi = (10 ** s.min, 10 ** s.max) if s.__class__.__name__ == "FloatLogSlider" \
                else (s.min, s.max)
            top_lo = spec.hi - tuning.OPEN_FLOOR_DB if spec.lo == -math.inf else spec.lo
            assert lo == pytest.approx(top_lo) and hi == pytest.approx(spec.hi)
    if isinstance(spec, dsp.processor.Choice):
        assert [v for _, v in widget.options] == list(spec.choices)


def _leaves(widget):
    children = getattr(widget, "children", ())
    return [widget] if not children else [w for c in children for w in _leaves(c)]


def test_level_control_has_an_off_box():
    spec = dsp.Gain.parameters["gain_db"]
    w = tuning.control_for(spec, "gain_db", -6.0)
    assert w.off.value is False and w.slider.value == -6.0
    w.off.value = True
    assert w.value == -math.inf
    w.off.value = False
    w.slider.value = 3.0
    assert w.value == 3.0
    w.value = -math.inf
    assert w.off.value is True


def test_list_control_changes_one_item():
    spec = dsp.Equalizer.parameters["gains_db"]
    w = tuning.control_for(spec, "gains_db", [0.0] * 10)
    w.inner.items[3].value = 6.0
    assert w.value == (0, 0, 0, 6.0, 0, 0, 0, 0, 0, 0)
    w.value = (1.0,) * 10
    assert [i.value for i in w.inner.items] == [1.0] * 10


# ----------------------------------------------------------------- live rendering

def test_moving_a_slider_changes_the_graph_and_the_rendering(clip):
    tuner = tuning.Tuner(clip, SR, "ktv", debounce_s=0.05)
    before = tuner.wait().copy()
    png_before, wav_before = tuner.plot.value, tuner.player.value
    np.testing.assert_allclose(before, aligned(presets.load("ktv"), clip), atol=1e-6)

    tuner.control("reverb", "rt60_s").value = 3.0
    tuner.control("compressor", "ratio").value = 8.0
    assert tuner.processor("reverb").rt60_s == 3.0 and tuner.graph["compressor"].ratio == 8.0
    after = tuner.wait()
    reference = presets.load("ktv")
    reference["reverb"].rt60_s = 3.0
    reference["compressor"].ratio = 8.0
    np.testing.assert_allclose(after, aligned(reference, clip), atol=1e-6)
    assert np.max(np.abs(after - before)) > 0.01
    assert tuner.plot.value != png_before and tuner.player.value != wav_before
    heard, rate = sf.read(io.BytesIO(tuner.player.value), dtype="float32")
    assert rate == SR and np.max(np.abs(heard - np.clip(after, -1, 1))) <= 1 / 32768


def test_quick_moves_end_with_the_last_value(clip):
    tuner = tuning.Tuner(clip, SR, "telephone", debounce_s=0.2)
    tuner.wait()
    for cutoff in (400.0, 600.0, 800.0):
        tuner.set("band_low", "cutoff_hz", cutoff)
    out = tuner.wait()
    reference = presets.load("telephone")
    reference["band_low"].cutoff_hz = 800.0
    np.testing.assert_allclose(out, aligned(reference, clip), atol=1e-6)


def test_choosing_another_preset_rebuilds_the_controls(clip):
    tuner = tuning.Tuner(clip, SR, "ktv", background=False)
    tuner.preset_menu.value = "radio"
    assert tuner.preset == "radio" and tuner.save_name.value == "radio_tuned"
    expected = {(n, p) for n, proc in presets.load("radio").nodes.items()
                for p in proc.parameters}
    assert set(tuner.controls) == expected
    np.testing.assert_allclose(tuner.wait(), aligned(presets.load("radio"), clip), atol=1e-6)
    with pytest.raises(presets.PresetError, match="did you mean 'radio'"):
        tuner.select("radoi")


def test_unknown_control_lists_the_valid_ones(clip):
    tuner = tuning.Tuner(clip, SR, "telephone", background=False)
    with pytest.raises(KeyError, match="limiter.ceiling_db"):
        tuner.control("limiter", "ceiling")


def test_figure_has_titles_labels_and_units(clip):
    fig = tuning.render_figure(clip, 0.5 * clip, SR, "a title")
    assert fig.get_suptitle() == "a title"
    for ax in fig.axes:
        assert ax.get_title()
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert "(" in label and label.endswith(")")
    wave, spec = fig.axes
    first = next(line for line in spec.lines if line.get_label() == "after").get_ydata()
    tuning.update_figure(fig, 0.25 * clip, SR, "another title")
    assert fig.get_suptitle() == "another title"
    after = [line for line in spec.lines if line.get_label() == "after"]
    assert len(after) == 1 and len(spec.lines) == 2 and len(wave.collections) == 2
    # A quarter of the amplitude is 6 dB less power than a half, in every bin.
    audible = first > -100  # above the floor that keeps log10 finite
    np.testing.assert_allclose(after[0].get_ydata()[audible], first[audible] - 20 * np.log10(2),
                               atol=1e-4)


# ----------------------------------------------------------------- saving

def test_save_writes_to_the_user_folder_and_loads_back_the_same(clip, user_presets):
    tuner = tuning.Tuner(clip, SR, "ktv", background=False)
    tuner.set("echo", "delay_ms", 240.0)
    tuner.set("reverb", "wet_level_db", -math.inf)
    check = tuner.save("my_ktv")
    assert check.ok and check.same_parameters and check.max_difference <= 1e-6
    assert check.path == user_presets / "my_ktv.toml"
    loaded = presets.load("my_ktv")
    assert loaded["echo"].delay_ms == 240.0 and loaded["reverb"].wet_level_db == -math.inf
    assert presets.describe("my_ktv").startswith("tuned from ktv")
    np.testing.assert_allclose(aligned(loaded, clip), tuner.wait(), atol=1e-6)
    assert "my_ktv" in tuner.status.value and "the same" in tuner.status.value


def test_save_button_uses_the_typed_name_and_reports_bad_ones(clip, user_presets):
    tuner = tuning.Tuner(clip, SR, "telephone", background=False)
    tuner.save_name.value = "not a name"
    tuner.save_button.click()
    assert tuner.last_save is None and "letters, digits" in tuner.status.value
    assert not user_presets.exists()
    tuner.save_name.value = "  phone_2 "
    tuner.save_button.click()
    assert tuner.last_save.ok and (user_presets / "phone_2.toml").is_file()
    tuner.select("telephone")
    assert "phone_2" in tuner.preset_menu.options


def test_parameters_walks_nested_graphs():
    inner = dsp.Chain(dsp.Gain(gain_db=-3.0))
    outer = dsp.Graph()
    outer.add(inner, "wet")
    outer.connect("input", "wet")
    outer.connect("wet", "output")
    assert tuning.parameters(outer) == {"wet/gain": ("gain", {"gain_db": -3.0})}
