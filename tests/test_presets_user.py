"""The user preset folder: save by name, load/names/describe, the CLI, errors.

Every test points ``STAGEVOX_PRESET_DIR`` at a folder of its own (the
``user_presets`` fixture); none reads or writes the real home.
"""

import sys

import numpy as np
import pytest
import soundfile as sf

from stagevox import cli, dsp, presets
from stagevox.presets import PresetError

SR = 48000


def run(capsys, *argv):
    """Run the ``stagevox`` command in-process; (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def quiet_graph(gain_db=-6.0):
    return dsp.Chain(dsp.Gain(gain_db=gain_db), dsp.HighPass(cutoff_hz=150.0, order=4))


# ----------------------------------------------------------------- where it is

def test_user_dir_follows_the_environment_variable(user_presets):
    assert presets.user_dir() == user_presets
    assert not user_presets.exists()
    assert presets.user_names() == [] and presets.names() == presets.bundled_names()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux folder layout")
def test_user_dir_on_linux_is_in_the_xdg_config_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("STAGEVOX_PRESET_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert presets.user_dir() == tmp_path / "cfg" / "stagevox" / "presets"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert presets.user_dir() == tmp_path / "home" / ".config" / "stagevox" / "presets"
    monkeypatch.setenv("STAGEVOX_PRESET_DIR", "")  # empty means unset
    assert presets.user_dir() == tmp_path / "home" / ".config" / "stagevox" / "presets"


# ----------------------------------------------------------------- save and load by name

def test_save_by_name_writes_into_the_user_folder_and_loads_back(user_presets, speech):
    path = presets.save(quiet_graph(), "my_voice", description="quieter, no rumble")
    assert path == user_presets / "my_voice.toml" and path.is_file()
    assert not list(user_presets.glob("*.tmp"))
    assert presets.user_names() == ["my_voice"]
    assert "my_voice" in presets.names() and "my_voice" not in presets.bundled_names()
    assert presets.describe("my_voice") == "quieter, no rumble"
    copy = presets.load("my_voice")
    assert copy["gain"].gain_db == -6.0 and copy["high_pass"].order == 4
    x = speech[:SR]
    np.testing.assert_allclose(copy.process(x, SR), quiet_graph().process(x, SR),
                               rtol=0, atol=1e-7)


def test_saving_again_replaces_the_users_preset(user_presets):
    presets.save(quiet_graph(-6.0), "again")
    presets.save(quiet_graph(-12.0), "again")
    assert presets.load("again")["gain"].gain_db == -12.0
    assert sorted(p.name for p in user_presets.iterdir()) == ["again.toml"]


def test_user_preset_wins_over_a_bundled_one_of_the_same_name(user_presets, speech):
    bundled = presets.load("telephone")
    presets.save(dsp.Gain(gain_db=-20.0), "telephone", description="mine")
    assert presets.describe("telephone") == "mine"
    mine = presets.load("telephone")
    assert list(mine.nodes) == ["gain"] and mine["gain"].gain_db == -20.0
    assert presets.names().count("telephone") == 1
    assert "telephone" in presets.bundled_names() and "telephone" in presets.user_names()
    x = speech[:SR]
    assert not np.allclose(mine.process(x, SR), bundled.process(x, SR), atol=1e-3)


def test_a_path_is_still_a_path(user_presets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    presets.save(quiet_graph(), "here.toml")
    presets.save(quiet_graph(), tmp_path / "sub_dir_less")  # a Path is never a name
    assert (tmp_path / "here.toml").is_file() and (tmp_path / "sub_dir_less").is_file()
    assert not user_presets.exists()


def test_files_that_are_not_preset_names_are_not_listed(user_presets):
    user_presets.mkdir()
    for stem in ("good-one", "has space", ".hidden"):
        (user_presets / f"{stem}.toml").write_text('schema = 1\n[[nodes]]\ntype = "gain"\n')
    (user_presets / "notes.txt").write_text("not a preset")
    assert presets.user_names() == ["good-one"]


# ----------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", ["", "my voice", "-x", "_x", "a.b", "ünïcode"])
def test_bad_names_are_refused_and_nothing_is_written(user_presets, bad):
    with pytest.raises(PresetError) as err:
        presets.save(quiet_graph(), bad)
    message = str(err.value)
    assert repr(bad) in message and "letters, digits, '_' and '-'" in message
    assert ".toml" in message
    assert not user_presets.exists()


def test_unknown_name_lists_user_and_bundled_presets(user_presets):
    presets.save(quiet_graph(), "my_voice")
    with pytest.raises(PresetError) as err:
        presets.load("my_vioce")
    message = str(err.value)
    assert "'my_vioce'" in message and "did you mean 'my_voice'" in message
    assert "valid presets: " + ", ".join(presets.names()) in message
    assert "my_voice" in message and "telephone" in message
    assert str(user_presets) in message and "STAGEVOX_PRESET_DIR" in message


def test_a_failed_save_keeps_the_old_preset(user_presets):
    path = presets.save(quiet_graph(-6.0), "keep")
    before = path.read_text()
    (user_presets / "keep.toml.tmp").mkdir()  # the new text cannot be written
    with pytest.raises(PresetError) as err:
        presets.save(quiet_graph(-12.0), "keep")
    assert str(path) in str(err.value) and "cannot write" in str(err.value)
    assert path.read_text() == before
    assert presets.load("keep")["gain"].gain_db == -6.0


def test_a_user_folder_that_is_a_file_is_reported(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("keep me")
    monkeypatch.setenv("STAGEVOX_PRESET_DIR", str(blocker))
    with pytest.raises(PresetError) as err:
        presets.save(quiet_graph(), "x")
    assert str(blocker / "x.toml") in str(err.value) and "cannot write" in str(err.value)
    assert blocker.read_text() == "keep me"
    assert presets.user_names() == []


def test_a_broken_user_preset_names_its_file(user_presets):
    user_presets.mkdir()
    (user_presets / "broken.toml").write_text('schema = 1\n[[nodes]]\ntype = "gian"\n')
    with pytest.raises(PresetError) as err:
        presets.load("broken")
    assert str(user_presets / "broken.toml") in str(err.value)
    assert "did you mean 'gain'" in str(err.value)


# ----------------------------------------------------------------- the command line

def test_presets_command_marks_user_presets(user_presets, capsys):
    presets.save(quiet_graph(), "my_voice", description="quieter")
    presets.save(dsp.Gain(), "radio", description="my radio")
    user_presets.joinpath("broken.toml").write_text("schema = [")
    status, out, err = run(capsys, "presets")
    assert status == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == presets.names()
    assert "my_voice  quieter  [user]" in lines
    assert "radio  my radio  [user, replaces bundled]" in lines
    broken = next(line for line in lines if line.startswith("broken  "))
    assert "cannot be read" in broken and "TOML syntax error" in broken
    assert f"telephone  {presets.describe('telephone')}" in lines
    assert str(user_presets) in err and "STAGEVOX_PRESET_DIR" in err
    assert "replaces a bundled one" in err


def test_process_with_a_user_preset(user_presets, tmp_path, speech, capsys):
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    x = speech[:2 * SR]
    sf.write(str(src), x, SR, subtype="FLOAT")
    graph = quiet_graph(-9.0)
    presets.save(graph, "my_voice")
    status, out, err = run(capsys, "process", src, dst, "--preset", "my_voice", "--quiet")
    assert status == 0, err
    y, rate = sf.read(str(dst), dtype="float32")
    assert rate == SR
    np.testing.assert_allclose(y, quiet_graph(-9.0).process(x, SR), rtol=0, atol=1e-6)


def test_process_with_an_unknown_preset_lists_the_users_too(user_presets, tmp_path, speech,
                                                            capsys):
    src = tmp_path / "in.wav"
    sf.write(str(src), speech[:SR], SR)
    presets.save(quiet_graph(), "my_voice")
    status, _, err = run(capsys, "process", src, tmp_path / "out.wav", "--preset", "my_vocie")
    assert status != 0
    assert "did you mean 'my_voice'" in err and "telephone" in err
    assert not (tmp_path / "out.wav").exists()
