"""Presets: bundled files, load/save round trips, spectral character, errors."""

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import welch

from stagevox import dsp, presets
from stagevox.presets import PresetError

SR = 48000
PRESET_DIR = Path(presets.__file__).parent
REQUIRED = {"voice_clarity", "radio", "telephone", "warm"}


def band_energy(audio, lo_hz, hi_hz):
    """Energy of ``audio`` between ``lo_hz`` and ``hi_hz`` (Welch, Hann, 11.7 Hz bins).

    No detrending: subtracting each segment's mean would put energy at DC
    that the signal does not have.
    """
    f, p = welch(np.asarray(audio, dtype=np.float64), SR, nperseg=4096, detrend=False)
    return p[(f >= lo_hz) & (f < hi_hz)].sum()


def structure(graph):
    """Node types, parameters and edges of ``graph``, nested graphs included."""
    nodes = {name: (structure(p) if isinstance(p, dsp.Graph) else (p.registry_name, p.params()))
             for name, p in graph.nodes.items()}
    return nodes, graph.edges


# ----------------------------------------------------------------- bundled presets

def test_names_lists_every_toml_file_in_the_package():
    files = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
    assert presets.bundled_names() == files
    assert REQUIRED <= set(files)
    assert any(tomllib.loads((PRESET_DIR / f"{n}.toml").read_text()).get("edges")
               for n in files), "one bundled preset must use explicit [[edges]]"


@pytest.mark.parametrize("name", presets.bundled_names())
def test_bundled_preset_is_described_and_ends_with_a_limiter(name):
    text = presets.describe(name)
    assert text and "\n" not in text and len(text) < 120
    doc = tomllib.loads((PRESET_DIR / f"{name}.toml").read_text())
    assert doc["name"] == name and doc["schema"] == 1
    graph = presets.load(name)
    feeding = [src for src, dst in graph.edges if dst == "output"]
    assert len(feeding) == 1 and isinstance(graph[feeding[0]], dsp.Limiter)


@pytest.mark.parametrize("name", presets.bundled_names())
def test_bundled_preset_processes_speech(name, speech):
    graph = presets.load(name)
    assert isinstance(graph, dsp.Graph)
    y = graph.process(speech, SR)
    binaural = any(isinstance(p, dsp.Spatializer) for p in graph.nodes.values())
    assert y.shape == ((2, speech.size) if binaural else speech.shape)
    assert np.all(np.isfinite(y))
    peak_db = 20 * np.log10(np.max(np.abs(y)))
    assert peak_db < 0.0
    # A real effect, at a sane loudness: changes the signal, keeps it within 6 dB.
    rms = lambda a: np.sqrt(np.mean(np.square(a, dtype=np.float64)))
    assert abs(20 * np.log10(rms(y) / rms(speech))) < 6.0
    assert np.max(np.abs(y - speech)) > 0.01


def test_telephone_is_band_limited(speech):
    y = presets.load("telephone").process(speech, SR)

    def gain_db(lo, hi):  # output energy relative to input energy in the band
        return 10 * np.log10(band_energy(y, lo, hi) / band_energy(speech, lo, hi))

    passband = gain_db(500, 3000)
    assert gain_db(0, 150) < passband - 30.0
    assert gain_db(5000, 24000) < passband - 30.0


def test_radio_and_voice_clarity_cut_low_end_and_keep_mids(speech):
    for name, cut_db in [("radio", 6.0), ("voice_clarity", 1.0)]:
        y = presets.load(name).process(speech, SR)
        low = band_energy(y, 20, 120) / band_energy(speech, 20, 120)
        mid = band_energy(y, 500, 3000) / band_energy(speech, 500, 3000)
        assert 10 * np.log10(low / mid) < -cut_db, name


# ----------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", presets.bundled_names())
def test_bundled_preset_round_trip(name, speech, tmp_path):
    original = presets.load(name)
    path = presets.save(original, tmp_path / f"{name}.toml", description=presets.describe(name))
    copy = presets.load(path)
    assert structure(copy) == structure(original)
    assert presets.describe(path) == presets.describe(name)
    x = speech[: 3 * SR]
    np.testing.assert_allclose(copy.process(x, SR), presets.load(name).process(x, SR),
                               rtol=0, atol=1e-6)


def nested_graph():
    """A graph with a nested chain, a nested mix, -inf values and a Choice."""
    inner = dsp.Chain(dsp.HighPass(cutoff_hz=200.0, order=4),
                      dsp.Compressor(threshold_db=-30.0, ratio=8.0, makeup_db=6.0))
    mix = dsp.Mix(None, dsp.PeakFilter(frequency_hz=2500.0, gain_db=6.0, q=2.0),
                  dsp.Gain(gain_db=-math.inf), gains_db=[0.0, -3.0, -math.inf], soft_clip=False)
    g = dsp.Graph()
    gate = g.add(dsp.NoiseGate(threshold_db=-60.0, range_db=-math.inf))
    g.add(inner, "inner")
    g.add(mix, "mix")
    g.add(dsp.Equalizer(gains_db=[0, 0, 2, 0, -2, 0, 0, 3, 0, 0]))
    lim = g.add(dsp.Limiter(ceiling_db=-2.0))
    for src, dst in [("input", gate), (gate, "inner"), (gate, "mix"), ("inner", "equalizer"),
                     ("mix", lim), ("equalizer", lim), (lim, "output")]:
        g.connect(src, dst)
    return g


def test_nested_graph_round_trip(speech, tmp_path):
    path = presets.save(nested_graph(), tmp_path / "nested.toml", description="test")
    text = path.read_text()
    assert 'type = "graph"' in text and "-inf" in text
    doc = tomllib.loads(text)
    assert doc["name"] == "nested" and doc["description"] == "test" and doc["schema"] == 1
    copy = presets.load(str(path))
    assert structure(copy) == structure(nested_graph())
    assert isinstance(copy["inner"], dsp.Graph) and isinstance(copy["mix"]["mixer"], dsp.Mixer)
    x = speech[: 3 * SR]
    np.testing.assert_allclose(copy.process(x, SR), nested_graph().process(x, SR),
                               rtol=0, atol=1e-6)


def test_save_keeps_a_graph_without_edges_a_pass_through(speech, tmp_path):
    g = dsp.Graph()
    g.add(dsp.Gain(gain_db=12.0))
    copy = presets.load(presets.save(g, tmp_path / "idle.toml"))
    x = speech[:SR]
    np.testing.assert_array_equal(copy.process(x, SR), x)


def test_save_single_processor(speech, tmp_path):
    copy = presets.load(presets.save(dsp.Gain(gain_db=-6.0), tmp_path / "g.toml"))
    x = speech[:SR]
    np.testing.assert_allclose(copy.process(x, SR), x * 10 ** (-6 / 20), rtol=1e-6, atol=1e-7)


def test_save_refuses_unregistered_processor(tmp_path):
    class Louder(dsp.Gain, register=False):
        pass

    with pytest.raises(PresetError) as err:
        presets.save(dsp.Chain(Louder()), tmp_path / "x.toml")
    assert all(s in str(err.value) for s in ("x.toml", "nodes[0] 'gain'", "Louder", "limiter"))


# ----------------------------------------------------------------- file forms

def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sub_tables_default_names_ints_and_inf(tmp_path):
    path = write(tmp_path, """
schema = 1
[[nodes]]
type = "gain"
[nodes.params]
gain_db = -inf
[[nodes]]
type = "gain"
params = { gain_db = 3 }
[[nodes]]
type = "high_pass"
params = { cutoff_hz = 120, order = 4 }
""")
    g = presets.load(path)
    assert list(g.nodes) == ["gain", "gain_2", "high_pass"]
    assert g.edges == [("input", "gain"), ("gain", "gain_2"), ("gain_2", "high_pass"),
                       ("high_pass", "output")]
    assert g["gain"].gain_db == -math.inf and g["gain_2"].gain_db == 3.0
    assert g["high_pass"].order == 4
    assert presets.describe(path) == ""


def test_name_with_toml_suffix_is_a_path(tmp_path, monkeypatch):
    write(tmp_path, 'schema = 1\ndescription = "local"\n[[nodes]]\ntype = "gain"\n',
          name="telephone.toml")
    monkeypatch.chdir(tmp_path)
    assert presets.describe("telephone.toml") == "local"
    assert list(presets.load("telephone.toml").nodes) == ["gain"]
    assert presets.describe("telephone") != "local"


# ----------------------------------------------------------------- errors

HEADER = 'name = "p"\nschema = 1\n'

ERRORS = {
    "syntax": (HEADER + '[[nodes]]\ntype = "gain\n',
               ["TOML syntax error", "line 4"]),
    "top-level key": ('schema = 1\nnmae = "x"\n',
                      ["'nmae'", "did you mean 'name'", "valid keys", "description", "nodes"]),
    "missing schema": ('name = "x"\n', ["missing 'schema'", "schema = 1"]),
    "unsupported schema": ('schema = 2\n', ["unsupported schema 2", "supported schemas: 1"]),
    "node type": (HEADER + '[[nodes]]\ntype = "gain"\n[[nodes]]\nname = "comp"\n'
                  'type = "compresor"\n',
                  ["nodes[1] 'comp'", "'compresor'", "did you mean 'compressor'",
                   "valid types", "limiter", "equalizer", "graph"]),
    "missing type": (HEADER + '[[nodes]]\nname = "a"\n', ["nodes[0] 'a'", "missing 'type'",
                                                           "high_pass"]),
    "node key": (HEADER + '[[nodes]]\ntype = "gain"\nparam = { gain_db = 1 }\n',
                 ["nodes[0] 'gain'", "'param'", "did you mean 'params'", "valid keys"]),
    "parameter": (HEADER + '[[nodes]]\nname = "comp"\ntype = "compressor"\n'
                  'params = { threshhold_db = -20 }\n',
                  ["nodes[0] 'comp'", "'threshhold_db'", "did you mean 'threshold_db'",
                   "valid parameters", "ratio", "makeup_db"]),
    "range": (HEADER + '[[nodes]]\nname = "hp"\ntype = "high_pass"\nparams = { cutoff_hz = 5 }\n',
              ["nodes[0] 'hp'", "'cutoff_hz'", "from 10 to 24000 Hz"]),
    "type of value": (HEADER + '[[nodes]]\ntype = "high_pass"\nparams = { cutoff_hz = "100" }\n',
                      ["nodes[0] 'high_pass'", "'cutoff_hz'", "must be a number",
                       "from 10 to 24000 Hz"]),
    "choice": (HEADER + '[[nodes]]\ntype = "low_pass"\nparams = { order = 3 }\n',
               ["nodes[0] 'low_pass'", "'order'", "one of 2, 4, 6, 8"]),
    "list length": (HEADER + '[[nodes]]\ntype = "equalizer"\nparams = { gains_db = [1, 2] }\n',
                    ["nodes[0] 'equalizer'", "'gains_db'", "must have 10 values"]),
    "list item": (HEADER + '[[nodes]]\ntype = "equalizer"\n'
                  'params = { gains_db = [0, 0, 0, 0, 0, 0, 0, 0, 0, 20] }\n',
                  ["nodes[0] 'equalizer'", "'gains_db'", "item 9 (the 16000 Hz band) is 20",
                   "from -15 to 15 dB"]),
    "bool": (HEADER + '[[nodes]]\ntype = "mixer"\nparams = { soft_clip = 1 }\n',
             ["nodes[0] 'mixer'", "'soft_clip'", "true or false"]),
    "params not a table": (HEADER + '[[nodes]]\ntype = "gain"\nparams = 3\n',
                           ["nodes[0] 'gain'", "'params' must be a table"]),
    "duplicate name": (HEADER + '[[nodes]]\ntype = "gain"\n[[nodes]]\nname = "gain"\n'
                       'type = "gain"\n',
                       ["nodes[1] 'gain'", "exists already", "nodes so far: gain"]),
    "reserved name": (HEADER + '[[nodes]]\nname = "output"\ntype = "gain"\n',
                      ["nodes[0] 'output'", "reserved"]),
    "edge to unknown node": (HEADER + 'edges = [{ from = "input", to = "limter" }]\n'
                             '[[nodes]]\ntype = "limiter"\n',
                             ["edges[0]", "'to'", "'limter'", "did you mean 'limiter'",
                              "valid nodes: input, limiter, output"]),
    "edge key": (HEADER + 'edges = [{ from = "input", too = "gain" }]\n[[nodes]]\ntype = "gain"\n',
                 ["edges[0]", "'too'", "valid keys: from, to"]),
    "cycle": (HEADER + '[[nodes]]\nname = "a"\ntype = "gain"\n[[nodes]]\nname = "b"\n'
              'type = "gain"\n[[edges]]\nfrom = "input"\nto = "a"\n[[edges]]\nfrom = "a"\n'
              'to = "b"\n[[edges]]\nfrom = "b"\nto = "a"\n[[edges]]\nfrom = "b"\nto = "output"\n',
              ["edges[2] (b -> a)", "cycle", "a -> b -> a"]),
    "not runnable": (HEADER + 'edges = [{ from = "input", to = "a" }]\n'
                     '[[nodes]]\nname = "a"\ntype = "gain"\n',
                     ["cannot run", "nothing is connected to 'output'"]),
    "nested": (HEADER + '[[nodes]]\nname = "wet"\ntype = "graph"\n[[nodes.nodes]]\n'
               'type = "gain"\n[[nodes.nodes]]\nname = "pf"\ntype = "peak_filter"\n'
               'params = { gain = 3 }\n',
               ["nodes[0] 'wet' > nodes[1] 'pf'", "'gain'", "did you mean 'gain_db'",
                "frequency_hz", "q"]),
    "nested edges": (HEADER + '[[nodes]]\nname = "wet"\ntype = "graph"\n[[nodes.nodes]]\n'
                     'type = "gain"\n[[nodes.edges]]\nfrom = "input"\nto = "gian"\n',
                     ["nodes[0] 'wet' > edges[0]", "'gian'", "valid nodes: input, gain, output"]),
    "params on a graph": (HEADER + '[[nodes]]\ntype = "graph"\nparams = {}\n',
                          ["nodes[0] 'graph'", "'params'", "valid keys: name, type, nodes, edges"]),
    "nodes on an effect": (HEADER + '[[nodes]]\ntype = "gain"\nnodes = []\n',
                           ["nodes[0] 'gain'", "'nodes'", "valid keys: name, type, params",
                            "top-level edges go before the first [[nodes]]"]),
}


@pytest.mark.parametrize("case", ERRORS)
def test_error_names_file_node_and_choices(case, tmp_path):
    text, expected = ERRORS[case]
    path = write(tmp_path, text, name=f"bad_{case.replace(' ', '_')}.toml")
    with pytest.raises(PresetError) as err:
        presets.load(path)
    message = str(err.value)
    for part in [path.name, *expected]:
        assert part in message, f"{part!r} not in {message!r}"


def test_unknown_bundled_name():
    with pytest.raises(PresetError) as err:
        presets.load("telephon")
    message = str(err.value)
    assert "'telephon'" in message and "did you mean 'telephone'" in message
    assert "valid presets: " + ", ".join(presets.names()) in message
    assert issubclass(PresetError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(PresetError, match="nothere.toml: no such preset file"):
        presets.load(tmp_path / "nothere.toml")
