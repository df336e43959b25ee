"""The stagevox command line, end to end on real files."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stagevox import cli, dsp, presets

BIN = Path(sys.executable).parent / "stagevox"


def run(capsys, *argv):
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def wav(tmp_path, speech):
    path = tmp_path / "in.wav"
    sf.write(str(path), speech[:48000 * 3], 48000, subtype="PCM_16")
    return path


def test_console_script_processes_the_readme_example(tmp_path, wav):
    """The installed console script, as a new user would run it."""
    out = tmp_path / "out.wav"
    result = subprocess.run(
        [str(BIN), "process", str(wav), str(out),
         "--effect", "equalizer:gains_db=[6,0,0,0,0,0,0,0,0,-3]",
         "--effect", "limiter:ceiling_db=-1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "latency" in result.stdout and str(out) in result.stdout
    x, _ = sf.read(str(wav), dtype="float32")
    y, rate = sf.read(str(out), dtype="float32")
    assert rate == 48000 and y.shape == x.shape
    # Same as the library with the same chain, aligned by its latency.
    fx = dsp.Chain(dsp.Equalizer(gains_db=[6, 0, 0, 0, 0, 0, 0, 0, 0, -3]),
                   dsp.Limiter(ceiling_db=-1))
    ref = fx(np.concatenate([x, np.zeros(fx.latency, np.float32)]), 48000)[fx.latency:]
    np.testing.assert_allclose(y, ref, atol=2 / 32768)
    assert np.abs(y).max() <= 10 ** (-1 / 20) + 1 / 32768


def test_effects_chain_in_order(tmp_path, wav, capsys):
    """gain then limiter differs from limiter then gain."""
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert run(capsys, "process", wav, a, "--effect", "gain:gain_db=12",
               "--effect", "limiter:ceiling_db=-6")[0] == 0
    assert run(capsys, "process", wav, b, "--effect", "limiter:ceiling_db=-6",
               "--effect", "gain:gain_db=12")[0] == 0
    ya, _ = sf.read(str(a))
    yb, _ = sf.read(str(b))
    assert np.abs(ya).max() <= 10 ** (-6 / 20) + 1 / 32768
    assert np.abs(yb).max() > 0.9


def test_preset_then_effect(tmp_path, wav, capsys):
    out = tmp_path / "out.flac"
    status, text, err = run(capsys, "process", wav, out, "--preset", "telephone",
                            "--effect", "gain:gain_db=-6")
    assert status == 0, err
    y, _ = sf.read(str(out))
    fx = dsp.Chain(presets.load("telephone"), dsp.Gain(gain_db=-6))
    x, _ = sf.read(str(wav), dtype="float32")
    ref = fx(np.concatenate([x, np.zeros(fx.latency, np.float32)]), 48000)[fx.latency:]
    np.testing.assert_allclose(y, ref, atol=2 / 32768)


def test_sample_rate_option(tmp_path, wav, capsys):
    out = tmp_path / "out.wav"
    assert run(capsys, "process", wav, out, "--copy", "--sample-rate", 16000)[0] == 0
    assert sf.info(str(out)).samplerate == 16000


def test_block_size_option_does_not_change_the_output(tmp_path, wav, capsys):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    run(capsys, "process", wav, a, "--preset", "voice_clarity", "--block-size", 17)
    run(capsys, "process", wav, b, "--preset", "voice_clarity", "--block-size", 65536)
    np.testing.assert_allclose(sf.read(str(a))[0], sf.read(str(b))[0], atol=1.5 / 32768)


def test_many_files_in_parallel_into_a_folder(tmp_path, speech, capsys):
    inputs = []
    for i, suffix in enumerate([".wav", ".flac", ".ogg", ".wav"]):
        p = tmp_path / f"clip{i}{suffix}"
        sf.write(str(p), speech[48000 * i:48000 * (i + 1)], 48000)
        inputs.append(p)
    status, out, err = run(capsys, "process", *inputs, tmp_path / "done", "--preset", "radio",
                           "--jobs", 2)
    assert status == 0, err
    written = sorted(p.name for p in (tmp_path / "done").iterdir())
    assert written == sorted(p.name for p in inputs)
    assert out.count(" -> ") == 4
    for p in inputs:
        y, rate = sf.read(str(tmp_path / "done" / p.name))
        assert rate == 48000 and abs(len(y) - 48000) <= 1 and np.isfinite(y).all()


def test_one_bad_file_among_many(tmp_path, speech, capsys):
    good = tmp_path / "good.wav"
    sf.write(str(good), speech[:48000], 48000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    status, out, err = run(capsys, "process", good, bad, tmp_path / "outdir", "--copy",
                           "--quiet")
    assert status == 1
    assert "bad.wav: not a readable audio file" in err and "1 of 2 files failed" in err
    assert [p.name for p in (tmp_path / "outdir").iterdir()] == ["good.wav"]


def test_same_output_name_twice_is_refused(tmp_path, speech, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        sf.write(str(tmp_path / d / "x.wav"), speech[:4800], 48000)
    status, _, err = run(capsys, "process", tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav",
                         tmp_path / "out", "--copy")
    assert status == 1 and "would both be written" in err


def _effect_sections(out):
    """``stagevox effects`` output split into {name: lines} (sections are
    separated by blank lines and start with ``name: ``)."""
    sections = {}
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        name, _, _ = lines[0].partition(": ")
        sections[name] = lines
    return sections


def test_effects_lists_every_effect_with_ranges_and_defaults(capsys):
    """Every effect but the graph: its whole first docstring paragraph as
    plain text, every parameter and constructor argument (none hidden) with
    a rounded default, its range and unit, and a usage line that works."""
    import inspect
    status, out, _ = run(capsys, "effects")
    assert status == 0
    sections = _effect_sections(out.rsplit("\nmore about one effect", 1)[0])
    assert set(sections) == set(dsp.registry) - {"graph"}
    assert "``" not in out
    for name, lines in sections.items():
        cls = dsp.registry[name]
        description = " ".join(x.strip() for x in lines
                               if not re.match(r"    (\w+ = |usage: )", x))
        first = inspect.cleandoc(cls.__doc__).split("\n\n")[0]
        assert description == f"{name}: " + " ".join(first.replace("``", "").split())
        assert description.endswith((".", ")")), name  # a whole sentence
        for pname, p in cls.parameters.items():
            (line,) = [x for x in lines if x.startswith(f"    {pname} = ")]
            assert p.range_text() in line
        keywords = [k for k, v in inspect.signature(cls.__init__).parameters.items()
                    if k != "self" and v.kind is not v.VAR_KEYWORD]
        for keyword in keywords:
            assert any(x.startswith(f"    {keyword} = ") for x in lines), (name, keyword)
        (usage,) = [x for x in lines if x.startswith("    usage: --effect ")]
        spec = usage.split("--effect ", 1)[1].strip("'")
        assert type(dsp.spec.build_effect(spec)) is cls
    assert "    q = 0.707  (float, from 0.1 to 40)" in sections["band_pass"][2]
    assert "gains_db = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]" in out
    assert "from -15 to 15 dB" in out
    assert any(x.startswith("    ir = (none)  impulse response: an audio file")
               for x in sections["convolution_reverb"])
    assert "    usage: --effect reverb:rt60_s=1.5,damping=0.4" in sections["reverb"]
    assert "    usage: --effect 'equalizer:gains_db=[0.0," in out


def test_effects_name_describes_one_effect_in_full(capsys):
    status, out, _ = run(capsys, "effects", "reverb")
    assert status == 0
    assert out.startswith("reverb: Algorithmic reverb")
    assert "width 0-1 stereo spread of the wet signal" in " ".join(out.split())
    assert "    usage: --effect reverb:" in out and "\nchorus:" not in out


def test_effects_unknown_name_lists_the_valid_ones(capsys):
    status, out, err = run(capsys, "effects", "reverbb")
    assert status == 1 and out == ""
    assert "unknown effect 'reverbb' (did you mean 'reverb'?)" in err
    assert "valid effects: band_pass, bitcrush," in err


def test_version_and_bare_command_print_version_and_help(capsys):
    import importlib.metadata
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"stagevox {importlib.metadata.version('stagevox')}"
    status, out, _ = run(capsys)
    assert status == 0 and out.startswith("usage: stagevox") and "process" in out


def test_resampled_input_gets_a_note(tmp_path, capsys):
    """A 96 kHz input is processed at 48 kHz, and stderr says so."""
    src = tmp_path / "hi.wav"
    sf.write(str(src), np.zeros(9600, np.float32), 96000)
    status, out, err = run(capsys, "process", src, tmp_path / "out.wav", "--copy")
    assert status == 0
    assert "hi.wav is at 96000 Hz; it was processed and written at 48000 Hz" in err
    assert "--sample-rate" in err and sf.info(str(tmp_path / "out.wav")).samplerate == 48000
    status, out, err = run(capsys, "process", src, tmp_path / "out16.wav", "--copy",
                           "--sample-rate", 16000)
    assert status == 0 and err == ""


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, speech, capsys):
    """Piped into a log, the parallel path writes no carriage returns."""
    inputs = []
    for i in range(2):
        inputs.append(tmp_path / f"clip{i}.wav")
        sf.write(str(inputs[-1]), speech[:4800], 48000)
    status, out, err = run(capsys, "process", *inputs, tmp_path / "done", "--copy",
                           "--jobs", 1)
    assert status == 0 and out.count(" -> ") == 2
    assert "\r" not in err and "file/s" not in err


def test_listing_imports_no_kernel_from_an_empty_numba_cache(tmp_path):
    """``stagevox effects``, ``stagevox presets`` and the registry with its
    parameter specs import no module of stagevox.dsp.kernels (nor Numba),
    so nothing is compiled, in a fresh interpreter with an empty cache."""
    code = (
        "import sys\n"
        "from stagevox import cli, dsp\n"
        "assert cli.main(['effects']) == 0 and cli.main(['presets']) == 0\n"
        "specs = {n: dict(dsp.registry[n].parameters) for n in dsp.registry}\n"
        "assert specs['equalizer']['gains_db'].length == 10\n"
        "print('LOADED', *sorted(m for m in sys.modules\n"
        "      if m.startswith(('stagevox.dsp.kernels', 'numba'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "LOADED"
    assert "compiling" not in done.stderr and list(tmp_path.iterdir()) == []


PROBE_KERNEL = """
import numba

@numba.njit(cache=True)
def double(x):
    return 2 * x
"""


def _load_probe(path, name):
    """Import ``path`` as module ``name`` (a fresh module object each time)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_compiling_is_announced_once_and_not_when_cached(tmp_path, monkeypatch, capsys):
    """Numba compiling a function of stagevox.dsp.kernels prints the notice
    once on stderr (for two compilations); a function elsewhere prints
    nothing; the same kernel loaded from Numba's cache prints nothing."""
    from stagevox.dsp import kernels
    monkeypatch.setattr(kernels.compile_notice, "shown", False)
    path = tmp_path / "probe.py"
    path.write_text(PROBE_KERNEL)
    elsewhere = _load_probe(path, "stagevox_probe_elsewhere")
    assert elsewhere.double(2) == 4
    assert capsys.readouterr().err == ""
    name = "stagevox.dsp.kernels._probe"
    monkeypatch.setitem(sys.modules, name, None)
    probe = _load_probe(path, name)
    assert probe.double(2) == 4 and probe.double(2.5) == 5.0
    assert capsys.readouterr().err == "compiling stagevox kernels (first run only)...\n"
    monkeypatch.setattr(kernels.compile_notice, "shown", False)
    again = _load_probe(path, name)
    assert again.double(2) == 4 and again.double(2.5) == 5.0
    assert sum(again.double.stats.cache_hits.values()) == 2
    assert capsys.readouterr().err == ""


def test_presets_lists_name_then_description(capsys):
    status, out, _ = run(capsys, "presets")
    assert status == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == presets.names()
    for line in lines:
        name = line.split()[0]
        assert line == f"{name}  {presets.describe(name)}"


def test_demo_writes_outputs(tmp_path, capsys):
    status, out, _ = run(capsys, "demo", "--out", tmp_path / "demo")
    assert status == 0
    files = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert "speech.wav" in files and len(files) == len(cli.DEMO_JOBS) + 1
    assert out.count("wrote ") == len(files)


# ------------------------------------------------------------------- bad input

BAD_CASES = {
    "missing input": (["{tmp}/nope.wav", "{tmp}/out.wav", "--copy"], "nope.wav: no such file"),
    "empty input": (["{empty}", "{tmp}/out.wav", "--copy"], "file is empty"),
    "corrupt input": (["{corrupt}", "{tmp}/out.wav", "--copy"], "not a readable audio file"),
    "unsupported output": (["{wav}", "{tmp}/out.xyz", "--copy"],
                           "supported output suffixes: .wav"),
    "nan samples": (["{nan}", "{tmp}/out.wav", "--copy"], "sample 100 of channel 0 is nan"),
    "unknown effect": (["{wav}", "{tmp}/out.wav", "--effect", "reverbb"],
                       "unknown effect 'reverbb'"),
    "unknown parameter": (["{wav}", "{tmp}/out.wav", "--effect", "gain:gian_db=3"],
                          "valid parameters: gain_db"),
    "out of range": (["{wav}", "{tmp}/out.wav", "--effect", "equalizer:gains_db=[20,0,0,0,0,0,0,0,0,0]"],
                     "item 0 (the 31 Hz band) is 20; each value must be a number from -15 to "
                     "15 dB"),
    "malformed effect": (["{wav}", "{tmp}/out.wav", "--effect", "gain:6"], "is not key=value"),
    "unknown preset": (["{wav}", "{tmp}/out.wav", "--preset", "telefone"], "telephone"),
    "same path": (["{wav}", "{wav}", "--copy"],
                  "is the input file; choose another output, or pass --overwrite to replace"),
    "existing output": (["{wav}", "{existing}", "--effect", "gain"],
                        "exists already; pass --overwrite to replace it"),
    "bad sample rate": (["{wav}", "{tmp}/out.wav", "--copy", "--sample-rate", "96000"],
                        "8000 to 48000"),
    "bad block size": (["{wav}", "{tmp}/out.wav", "--copy", "--block-size", "0"],
                       "--block-size"),
    "nothing to do": (["{wav}", "{tmp}/out.wav"],
                      "--preset NAME and/or --effect NAME[:key=value,...]"),
    "copy with effects": (["{wav}", "{tmp}/out.wav", "--copy", "--preset", "radio"],
                          "cannot go with --preset or --effect"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_one_line_error_nonzero_exit_nothing_lost(case, tmp_path, wav, capsys):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage" * 4)
    nan = tmp_path / "nan.wav"
    data = np.zeros(1000, np.float32)
    data[100] = np.nan
    sf.write(str(nan), data, 48000, subtype="FLOAT")
    existing = tmp_path / "existing.wav"
    existing.write_bytes(b"precious")
    argv, expected = BAD_CASES[case]
    names = dict(tmp=tmp_path, wav=wav, empty=empty, corrupt=corrupt, nan=nan, existing=existing)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    status, out, err = run(capsys, "process", *[a.format(**names) for a in argv])
    assert status != 0
    assert err.startswith("stagevox: error: ") and err.count("\n") == 1, err
    assert expected in err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing changed, no temporary left


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["process"])
    assert exc.value.code == 2


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "stagevox.cli", "--help"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0 and "process" in result.stdout
