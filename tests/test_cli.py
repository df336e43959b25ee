"""The stagevox command line, end to end on real files."""

import os
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
    assert run(capsys, "process", wav, out, "--sample-rate", 16000)[0] == 0
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
    status, out, err = run(capsys, "process", good, bad, tmp_path / "outdir", "--quiet")
    assert status == 1
    assert "bad.wav: not a readable audio file" in err and "1 of 2 files failed" in err
    assert [p.name for p in (tmp_path / "outdir").iterdir()] == ["good.wav"]


def test_same_output_name_twice_is_refused(tmp_path, speech, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        sf.write(str(tmp_path / d / "x.wav"), speech[:4800], 48000)
    status, _, err = run(capsys, "process", tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav",
                         tmp_path / "out")
    assert status == 1 and "would both be written" in err


def test_effects_lists_every_effect_with_ranges_and_defaults(capsys):
    status, out, _ = run(capsys, "effects")
    assert status == 0
    for name, cls in dsp.registry.items():
        assert f"\n{name}: " in "\n" + out
        for pname, p in cls.parameters.items():
            assert f"    {pname} = " in out
    assert "gains_db = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]" in out
    assert "from -15 to 15 dB" in out


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
    "missing input": (["{tmp}/nope.wav", "{tmp}/out.wav"], "nope.wav: no such file"),
    "empty input": (["{empty}", "{tmp}/out.wav"], "file is empty"),
    "corrupt input": (["{corrupt}", "{tmp}/out.wav"], "not a readable audio file"),
    "unsupported output": (["{wav}", "{tmp}/out.xyz"], "supported output suffixes: .wav"),
    "nan samples": (["{nan}", "{tmp}/out.wav"], "sample 100 of channel 0 is nan"),
    "unknown effect": (["{wav}", "{tmp}/out.wav", "--effect", "reverbb"],
                       "unknown effect 'reverbb'"),
    "unknown parameter": (["{wav}", "{tmp}/out.wav", "--effect", "gain:gian_db=3"],
                          "valid parameters: gain_db"),
    "out of range": (["{wav}", "{tmp}/out.wav", "--effect", "equalizer:gains_db=[20,0,0,0,0,0,0,0,0,0]"],
                     "from -15 to 15 dB"),
    "malformed effect": (["{wav}", "{tmp}/out.wav", "--effect", "gain:6"], "is not key=value"),
    "unknown preset": (["{wav}", "{tmp}/out.wav", "--preset", "telefone"], "telephone"),
    "same path": (["{wav}", "{wav}"], "is the input file"),
    "existing output": (["{wav}", "{existing}"], "exists already"),
    "bad sample rate": (["{wav}", "{tmp}/out.wav", "--sample-rate", "96000"], "8000 to 48000"),
    "bad block size": (["{wav}", "{tmp}/out.wav", "--block-size", "0"], "--block-size"),
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
