"""dsp.Graph, Chain and Mix: wiring, run order, latency alignment, multi-input
nodes, observers, errors and tails (DESIGN.md, "dsp: processors and the graph").

References are the same processors run by hand (fresh instances, same
parameters) or NumPy; tolerance 1e-6 (float32 arithmetic, amplitudes <= 1).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagevox import dsp
from stagevox.dsp import Graph
from stagevox.dsp.processor import Float, Int, Processor

TOL = 1e-6
SR = 48000


class Delay(Processor, register=False):
    """Test helper: a pure delay of ``samples`` at every rate (and reports it)."""

    samples = Int(3, 0, 10000)

    def latency_at(self, sample_rate):
        return self.samples

    def _prepare(self):
        self._buf = np.zeros((self.num_channels, self.samples), np.float32)

    def _process(self, block):
        full = np.concatenate([self._buf, block], axis=1)
        n = block.shape[1]
        self._buf = full[:, n:].copy()
        return np.ascontiguousarray(full[:, :n])


class Tail(Processor, register=False):
    """Test helper: passes audio through and reports a tail of ``tail_ms``."""

    tail_ms = Float(10.0, 0.0, 10000.0, unit="ms")

    def tail_at(self, sample_rate):
        return int(round(self.tail_ms * 1e-3 * sample_rate))

    def _process(self, block):
        return block.copy()


def delayed(x, d):
    """``x`` delayed by ``d`` samples along its last axis (same length)."""
    out = np.zeros_like(x)
    if d < x.shape[-1]:
        out[..., d:] = x[..., :x.shape[-1] - d]
    return out


def run_blocks(fx, x, rate, sizes):
    outs, pos = [], 0
    for s in sizes:
        outs.append(fx.process(x[..., pos:pos + s], rate))
        pos = min(x.shape[-1], pos + s)
    outs.append(fx.process(x[..., pos:], rate))
    return np.concatenate(outs, axis=-1)


@pytest.fixture(scope="module")
def voice(speech):
    """2 s of speech, peak 0.8, mono and a stereo pair (right: delayed, quieter, plus noise)."""
    r = np.random.default_rng(99)
    x = speech[SR * 5:SR * 7].astype(np.float64)
    x = 0.8 * x / np.abs(x).max()
    right = 0.6 * np.roll(x, 333) + 0.01 * r.standard_normal(x.size)
    stereo = np.ascontiguousarray(np.stack([x, right]), dtype=np.float32)
    return {"mono": stereo[0].copy(), "stereo": stereo}


EQ = [5.0, 0.0, -4.0, 2.0, 0.0, 6.0, -3.0, 4.0, 0.0, -2.0]


# ---------------------------------------------------------------- chain

@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_chain_equals_calling_in_sequence(layout, voice):
    def parts():
        return (dsp.Equalizer(gains_db=EQ), dsp.Compressor(threshold_db=-30.0, makeup_db=4.0),
                dsp.Limiter(ceiling_db=-6.0, lookahead_ms=3.0))

    x = voice[layout]
    chain = dsp.Chain(*parts())
    got = run_blocks(chain, x, SR, [480] * 20 + [1, 0, 7, 3000])
    by_hand = x
    for p in parts():
        by_hand = p.process(by_hand, SR)
    assert got.shape == by_hand.shape
    np.testing.assert_allclose(got, by_hand, rtol=0, atol=TOL)
    assert np.max(np.abs(got - x)) > 0.05  # the chain does act
    assert chain.latency == 144            # 3 ms at 48 kHz
    assert list(chain.nodes) == ["equalizer", "compressor", "limiter"]
    assert chain.edges == [("input", "equalizer"), ("equalizer", "compressor"),
                           ("compressor", "limiter"), ("limiter", "output")]


# ---------------------------------------------------------------- building errors

def _abc():
    g = Graph()
    for name in "abc":
        g.add(dsp.Gain(), name)
    return g


def test_cycles_are_rejected_at_connect_time():
    g = _abc()
    g.connect("a", "b")
    with pytest.raises(ValueError, match="cycle"):
        g.connect("b", "a")
    g.connect("b", "c")
    with pytest.raises(ValueError, match="cycle") as err:
        g.connect("c", "a")
    assert "a -> b -> c" in str(err.value)
    for n in "abc":
        with pytest.raises(ValueError, match="cycle"):
            g.connect(n, n)
    assert g.edges == [("a", "b"), ("b", "c")]  # nothing was added
    g.connect("input", "a")
    g.connect("c", "output")
    x = np.ones(10, np.float32)
    np.testing.assert_array_equal(g.process(x, SR), x)


def test_unknown_and_reserved_names():
    g = _abc()
    with pytest.raises(ValueError) as err:
        g.connect("a", "nope")
    for name in ("nope", "input", "a", "b", "c", "output"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="nope"):
        g.connect("nope", "a")
    with pytest.raises(KeyError, match="a, b, c"):
        g["nope"]
    for reserved in ("input", "output"):
        with pytest.raises(ValueError, match="reserved"):
            g.add(dsp.Gain(), reserved)
    with pytest.raises(ValueError):
        g.connect("output", "a")
    with pytest.raises(ValueError):
        g.connect("a", "input")
    with pytest.raises(ValueError, match="exists"):
        g.add(dsp.Gain(), "a")
    assert list(g.nodes) == ["a", "b", "c"]


def test_duplicate_edges_and_instances_are_rejected():
    g = _abc()
    g.connect("a", "b")
    with pytest.raises(ValueError, match="exists"):
        g.connect("a", "b")
    assert g.edges == [("a", "b")]
    shared = dsp.Gain()
    g.add(shared, "d")
    with pytest.raises(ValueError, match="already"):
        g.add(shared, "e")
    with pytest.raises(ValueError, match="already"):
        g.add(g["a"])
    with pytest.raises(TypeError):
        g.add(lambda x, sr: x)
    assert list(g.nodes) == ["a", "b", "c", "d"]


def test_generated_names_are_unique():
    g = Graph()
    names = [g.add(dsp.Gain()) for _ in range(3)]
    assert names == ["gain", "gain_2", "gain_3"]


# ---------------------------------------------------------------- run order

def test_run_order_is_planned_when_the_graph_changes(monkeypatch, voice):
    calls = []
    plan = Graph._plan

    def spy(self):
        calls.append(self)
        return plan(self)

    monkeypatch.setattr(Graph, "_plan", spy)
    g = dsp.Chain(dsp.Gain(gain_db=-6.0), dsp.LowPass(cutoff_hz=3000.0))
    x = voice["mono"]
    out = [g.process(x[i:i + 480], SR) for i in range(0, 480 * 200, 480)]
    assert len(calls) == 1
    _ = g.latency, g.tail
    g.observe("input", "gain", lambda f, sr: None)
    g.process(x[:480], SR)
    assert len(calls) == 1
    # change the graph: one more plan, however many blocks follow
    name = g.add(dsp.Gain(gain_db=-60.0))
    g.connect("input", name)
    g.connect(name, "output")
    for i in range(100):
        g.process(x[i * 480:(i + 1) * 480], SR)
    assert len(calls) == 2
    g.disconnect(name, "output")
    g.remove(name)
    g.process(x[:480], SR)
    assert len(calls) == 3
    # and the planned order is right: same as by hand
    ref = dsp.LowPass(cutoff_hz=3000.0).process(dsp.Gain(gain_db=-6.0).process(x[:480 * 200], SR),
                                                SR)
    np.testing.assert_allclose(np.concatenate(out), ref, rtol=0, atol=TOL)


def test_order_does_not_depend_on_insertion_order(voice):
    """Nodes added downstream-first still run after their inputs."""
    x = voice["mono"]
    g = Graph()
    g.add(dsp.LowPass(cutoff_hz=2000.0), "last")
    g.add(dsp.Gain(gain_db=6.0), "middle")
    g.add(dsp.HighPass(cutoff_hz=200.0), "first")
    g.connect("last", "output")
    g.connect("middle", "last")
    g.connect("first", "middle")
    g.connect("input", "first")
    ref = dsp.LowPass(cutoff_hz=2000.0).process(
        dsp.Gain(gain_db=6.0).process(dsp.HighPass(cutoff_hz=200.0).process(x, SR), SR), SR)
    np.testing.assert_allclose(g.process(x, SR), ref, rtol=0, atol=TOL)


# ---------------------------------------------------------------- latency

@pytest.mark.parametrize("rate", [48000, 16000])
@pytest.mark.parametrize("soft_clip", [False, True])
def test_parallel_branches_are_delay_aligned(rate, soft_clip, voice):
    # 2x the signal stays under the soft clipper's knee (0.97 * 0.5 = 0.48).
    x = 0.2 * voice["stereo"]
    g = dsp.Mix(dsp.Limiter(lookahead_ms=5.0), None, soft_clip=soft_clip)
    lat = round(5e-3 * rate)
    assert g.latency_at(rate) == lat
    y = run_blocks(g, x, rate, [rate // 100] * 50 + [1, 0, 333])
    assert g.latency == lat == g["limiter"].latency
    np.testing.assert_allclose(y, 2.0 * delayed(x, lat), rtol=0, atol=TOL)
    # without alignment the dry branch would be early: make sure that would show
    assert np.max(np.abs(y - (x + delayed(x, lat)))) > 0.01


def test_latency_is_that_of_the_longest_path(voice):
    x = 0.1 * voice["mono"]
    g = Graph()
    a = g.add(dsp.Limiter(lookahead_ms=5.0))          # 240
    b1 = g.add(dsp.Limiter(lookahead_ms=2.0))         # 96
    b2 = g.add(dsp.Limiter(lookahead_ms=4.0))         # 192 -> 288 on this path
    m = g.add(dsp.Mixer(soft_clip=False), "mix")
    g.connect("input", a)
    g.connect("input", b1)
    g.connect(b1, b2)
    g.connect(a, m)
    g.connect(b2, m)
    g.connect("input", m)
    g.connect(m, "output")
    assert g.latency_at(48000) == 288 and g.latency_at(16000) == 96
    y = g.process(x, SR)
    assert g.latency == 288
    np.testing.assert_allclose(y, 3.0 * delayed(x, 288), rtol=0, atol=TOL)


def test_nested_graphs_report_summed_latency():
    inner = dsp.Chain(dsp.Limiter(lookahead_ms=2.0), dsp.Mix(dsp.Limiter(lookahead_ms=1.0), None))
    g = dsp.Chain(dsp.Limiter(lookahead_ms=5.0), inner)
    assert inner.latency_at(48000) == 96 + 48
    assert g.latency_at(48000) == 240 + 96 + 48
    assert g.latency_at(16000) == 80 + 32 + 16
    x = np.zeros(2000, np.float32)
    x[10] = 0.2  # 2x stays under the Mix's soft-clip knee
    for rate, lat in ((48000, 384), (16000, 128)):
        g.reset()
        y = g.process(x, rate)
        # the Mix sums the aligned branches: the impulse doubles
        np.testing.assert_allclose(y, 2.0 * delayed(x, lat), rtol=0, atol=TOL)
        assert g.latency == lat


def test_querying_latency_at_another_rate_does_not_disturb_streaming(voice):
    x = 0.2 * voice["mono"]
    whole = dsp.Mix(dsp.Limiter(lookahead_ms=5.0), None).process(x, SR)
    g = dsp.Mix(dsp.Limiter(lookahead_ms=5.0), None)
    half = 30011  # inside speech: the alignment buffer holds sound
    assert np.max(np.abs(x[half - 240:half])) > 0.01
    first = g.process(x[:half], SR)
    assert g.latency_at(16000) == 80 and g.latency_at(8000) == 40
    assert g.latency == 240
    assert g.tail_at(16000) == 0
    second = g.process(x[half:], SR)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=0, atol=TOL)


def test_rate_change_resets_alignment_delays(voice):
    """Alignment buffers hold audio of the old rate; a rate change must clear them
    even when the aligned delay (in samples) stays the same."""
    x = voice["stereo"][:, 9600:14400]
    assert np.all(np.abs(x[:, -3:]) > 1e-4)
    g = dsp.Mix(Delay(samples=3), None, soft_clip=False)
    g.process(x, 48000)
    fresh = dsp.Mix(Delay(samples=3), None, soft_clip=False)
    y = g.process(x, 16000)
    np.testing.assert_allclose(y, fresh.process(x, 16000), rtol=0, atol=TOL)
    np.testing.assert_allclose(y, 2.0 * delayed(x, 3), rtol=0, atol=TOL)


def test_reset_clears_alignment_delays(voice):
    x = voice["mono"][:9600]
    g = dsp.Mix(Delay(samples=100), dsp.Gain(gain_db=-6.0), soft_clip=False)
    g.process(x, SR)
    g.reset()
    expected = (1.0 + 10 ** (-6 / 20)) * delayed(x, 100)
    np.testing.assert_allclose(g.process(x, SR), expected, rtol=0, atol=TOL)


# ---------------------------------------------------------------- nesting

@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_nested_graph_equals_flattened(layout, voice):
    x = voice[layout]

    def nodes():
        return (dsp.Equalizer(gains_db=EQ), dsp.Limiter(ceiling_db=-9.0, lookahead_ms=4.0),
                dsp.Compressor(threshold_db=-25.0), dsp.Mixer(gains_db=[0.0, -4.0]))

    eq, lim, comp, mix = nodes()
    nested = Graph()
    inner = nested.add(dsp.Chain(eq, lim), "inner")
    nested.add(comp, "comp")
    nested.add(mix, "mix")
    nested.connect("input", inner)
    nested.connect("input", "comp")
    nested.connect(inner, "mix")
    nested.connect("comp", "mix")
    nested.connect("mix", "output")

    eq, lim, comp, mix = nodes()
    flat = Graph()
    for name, p in (("eq", eq), ("lim", lim), ("comp", comp), ("mix", mix)):
        flat.add(p, name)
    flat.connect("input", "eq")
    flat.connect("eq", "lim")
    flat.connect("input", "comp")
    flat.connect("lim", "mix")
    flat.connect("comp", "mix")
    flat.connect("mix", "output")

    assert nested.latency_at(SR) == flat.latency_at(SR) == 192
    sizes = [480] * 30 + [1, 0, 5000]
    a = run_blocks(nested, x, SR, sizes)
    b = run_blocks(flat, x, SR, sizes)
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL)
    assert np.max(np.abs(a - x)) > 0.05


# ---------------------------------------------------------------- multi-input nodes

def test_plain_node_gets_the_sum_of_its_inputs(voice):
    x = voice["stereo"]
    g = Graph()
    g.add(dsp.Gain(gain_db=6.0), "up")
    g.add(dsp.Gain(gain_db=-6.0), "down")
    g.add(dsp.LowPass(cutoff_hz=2000.0), "lp")
    g.connect("input", "up")
    g.connect("input", "down")
    g.connect("up", "lp")
    g.connect("down", "lp")
    g.connect("lp", "output")
    total = (10 ** (6 / 20) + 10 ** (-6 / 20)) * x.astype(np.float64)
    ref = dsp.LowPass(cutoff_hz=2000.0).process(total.astype(np.float32), SR)
    np.testing.assert_allclose(g.process(x, SR), ref, rtol=0, atol=TOL)


def test_output_node_sums_its_inputs(voice):
    x = voice["mono"]
    g = Graph()
    g.add(dsp.Gain(gain_db=-6.0), "g")
    g.connect("input", "g")
    g.connect("g", "output")
    g.connect("input", "output")
    np.testing.assert_allclose(g.process(x, SR), (1 + 10 ** (-6 / 20)) * x, rtol=0, atol=TOL)


def test_mixer_node_gets_the_list_and_applies_its_gains(voice):
    x = voice["stereo"]
    gains = [0.0, -6.0, 3.0]
    g = Graph()
    g.add(dsp.Gain(gain_db=-3.0), "g")
    g.add(dsp.LowPass(cutoff_hz=1500.0), "lp")
    g.add(dsp.Mixer(gains_db=gains, soft_clip=False), "mix")
    g.connect("input", "g")
    g.connect("input", "lp")
    g.connect("g", "mix")
    g.connect("lp", "mix")
    g.connect("input", "mix")
    g.connect("mix", "output")
    branches = [dsp.Gain(gain_db=-3.0).process(x, SR),
                dsp.LowPass(cutoff_hz=1500.0).process(x, SR), x]
    ref = sum(10 ** (gd / 20) * b.astype(np.float64) for gd, b in zip(gains, branches))
    y = g.process(x, SR)
    np.testing.assert_allclose(y, ref, rtol=0, atol=TOL)
    # the mixer really received separate inputs: a plain sum would differ
    assert np.max(np.abs(y - sum(branches))) > 0.01


def test_mono_and_stereo_inputs_broadcast(voice):
    m = voice["mono"]
    theta = 1.6 * math.pi / 4.0  # pan 0.6
    panned = np.stack([math.cos(theta) * m, math.sin(theta) * m])
    for target in ("sum", "mix", "output"):
        g = Graph()
        g.add(dsp.Pan(pan=0.6), "pan")      # mono -> stereo
        g.add(dsp.Gain(gain_db=-6.0), "g")  # mono -> mono
        g.connect("input", "pan")
        g.connect("input", "g")
        if target == "sum":
            g.add(dsp.Gain(), "sum")
        elif target == "mix":
            g.add(dsp.Mixer(soft_clip=False), "mix")
        if target != "output":
            g.connect(target, "output")
        g.connect("pan", target)
        g.connect("g", target)
        y = g.process(m, SR)
        assert y.shape == (2, m.size)
        np.testing.assert_allclose(y, panned + 10 ** (-6 / 20) * m[None, :], rtol=0, atol=TOL)


def test_incompatible_channel_counts_raise():
    g = Graph()
    g.add(Delay(samples=0), "a")
    g.add(dsp.Gain(), "b")
    g.connect("input", "a", lambda f, sr: np.zeros((3, f.shape[1]), np.float32))
    g.connect("input", "b")
    g.connect("a", "output")
    g.connect("b", "output")
    with pytest.raises(ValueError, match="channels"):
        g.process(np.zeros((2, 100), np.float32), SR)


# ---------------------------------------------------------------- observers

@settings(max_examples=10, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(0, 2000), min_size=1, max_size=25))
def test_observer_sees_every_frame_of_its_edge(voice, sizes):
    x = voice["stereo"][:, :24000]
    seen, rates = [], set()

    def watch(frame, sample_rate):
        seen.append(frame.copy())
        rates.add(sample_rate)

    g = dsp.Chain(dsp.Gain(gain_db=6.0), dsp.LowPass(cutoff_hz=3000.0))
    g.observe("gain", "low_pass", watch)
    y = run_blocks(g, x, SR, sizes)
    assert len(seen) == len(sizes) + 1
    assert rates == {SR}
    np.testing.assert_allclose(np.concatenate(seen, axis=1),
                               dsp.Gain(gain_db=6.0).process(x, SR), rtol=0, atol=TOL)
    np.testing.assert_allclose(y, dsp.LowPass(cutoff_hz=3000.0).process(
        dsp.Gain(gain_db=6.0).process(x, SR), SR), rtol=0, atol=TOL)


def test_observer_on_an_aligned_edge_sees_the_delayed_frame(voice):
    x = 0.2 * voice["mono"][:9600]
    seen = []
    g = dsp.Mix(dsp.Limiter(lookahead_ms=5.0), None)
    g.observe("input", "mixer", lambda f, sr: seen.append(f.copy()))
    run_blocks(g, x, SR, [480] * 10)
    np.testing.assert_allclose(np.concatenate(seen, axis=1)[0], delayed(x, 240), rtol=0, atol=0)


def test_observer_can_replace_the_frame(voice):
    x = voice["mono"][:9600]
    g = dsp.Chain(dsp.Gain(gain_db=6.0), dsp.LowPass(cutoff_hz=3000.0))
    g.observe("input", "gain", lambda f, sr: np.zeros_like(f))
    y = run_blocks(g, x, SR, [480] * 10)
    assert np.all(y == 0)
    # a mono 1-D replacement of the right length works too
    g.observe("gain", "low_pass", lambda f, sr: np.full(f.shape[1], 0.25, np.float32))
    y = g.process(x[:4800], SR)
    ref = dsp.LowPass(cutoff_hz=3000.0)
    ref.process(np.zeros(9600, np.float32), SR)
    np.testing.assert_allclose(y, ref.process(np.full(4800, 0.25, np.float32), SR),
                               rtol=0, atol=TOL)


def test_replacement_of_the_wrong_length_raises(voice):
    g = dsp.Chain(dsp.Gain())
    g.observe("input", "gain", lambda f, sr: np.zeros((f.shape[0], f.shape[1] + 1), np.float32))
    with pytest.raises(ValueError, match="input -> gain"):
        g.process(voice["mono"][:480], SR)


def test_observe_none_removes_the_observer(voice):
    x = voice["mono"][:4800]
    calls = []
    g = dsp.Chain(dsp.Gain(gain_db=-6.0))
    g.observe("gain", "output", lambda f, sr: calls.append(1) or np.zeros_like(f))
    assert np.all(g.process(x, SR) == 0) and len(calls) == 1
    g.observe("gain", "output", None)
    y = g.process(x, SR)
    assert len(calls) == 1
    np.testing.assert_allclose(y, 10 ** (-6 / 20) * x, rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="no edge"):
        g.observe("input", "output", None)
    with pytest.raises(TypeError):
        g.observe("gain", "output", "not callable")


def test_observer_given_at_connect_time(voice):
    x = voice["mono"][:4800]
    seen = []
    g = Graph()
    g.add(dsp.Gain(gain_db=-6.0), "g")
    g.connect("input", "g", lambda f, sr: seen.append(f.copy()))
    g.connect("g", "output")
    g.process(x, SR)
    np.testing.assert_array_equal(seen[0][0], x)


# ---------------------------------------------------------------- errors, pass-through

def test_node_feeding_the_output_without_input_raises_naming_it():
    g = Graph()
    g.add(dsp.Gain(), "orphan")
    g.add(dsp.Gain(), "fed")
    g.connect("input", "fed")
    g.connect("fed", "output")
    g.connect("orphan", "output")
    with pytest.raises(ValueError, match="'orphan'"):
        g.process(np.zeros(10, np.float32), SR)


def test_edges_that_do_not_reach_the_output_raise():
    g = Graph()
    g.add(dsp.Gain(), "a")
    g.add(dsp.Gain(), "b")
    g.connect("input", "a")
    g.connect("a", "b")
    with pytest.raises(ValueError, match="output"):
        g.process(np.zeros(10, np.float32), SR)


@pytest.mark.parametrize("shape", [(500,), (1, 500), (2, 500), (0,), (3, 0)])
def test_empty_graph_passes_input_through(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    keep = x.copy()
    for g in (Graph(), dsp.Chain()):
        y = g.process(x, SR)
        assert y.shape == x.shape and y.dtype == np.float32
        np.testing.assert_array_equal(y, keep)
        np.testing.assert_array_equal(x, keep)  # input untouched
        assert g.latency == 0 and g.tail == 0
    g = Graph()
    g.add(dsp.Gain(gain_db=12.0))  # a node but no edges: still pass-through
    np.testing.assert_array_equal(g.process(x, SR), keep)
    pcm = (keep * 1000).astype(np.int16)
    np.testing.assert_array_equal(Graph().process(pcm, SR), pcm / np.float32(32768))


def test_graph_rejects_bad_input():
    g = dsp.Chain(dsp.Gain())
    x = np.zeros((2, 100), np.float32)
    x[1, 42] = np.nan
    with pytest.raises(ValueError, match="nan.*channel 1, sample 42"):
        g.process(x, SR)
    with pytest.raises(ValueError, match="8000 to 48000"):
        g.process(np.zeros(10, np.float32), 96000)


# ---------------------------------------------------------------- tail

def test_tail_sums_along_a_path_and_takes_the_longest():
    assert dsp.Chain(Tail(tail_ms=100.0), Tail(tail_ms=50.0)).tail_at(SR) == 7200
    assert dsp.Mix(Tail(tail_ms=100.0), Tail(tail_ms=30.0)).tail_at(SR) == 4800
    g = dsp.Chain(Tail(tail_ms=10.0),
                  dsp.Mix(Tail(tail_ms=100.0),
                          dsp.Chain(Tail(tail_ms=70.0), Tail(tail_ms=40.0)), None))
    assert g.tail_at(SR) == 480 + 5280
    assert g.tail_at(16000) == 160 + 1760
    assert dsp.Chain(Tail(tail_ms=5.0), dsp.Chain(Tail(tail_ms=7.0))).tail_at(SR) == 576
    g.process(np.zeros(100, np.float32), 16000)
    assert g.tail == 1920
    assert dsp.Chain(dsp.Gain(), dsp.Limiter()).tail == 0
