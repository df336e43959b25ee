"""The wheel: layout as designed (stagevox.dsp/engine/presets), data included, and it runs."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, timeout=600)
    (path,) = out.glob("stagevox-*.whl")
    return path


def test_wheel_holds_packages_presets_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("stagevox/dsp/__init__.py", "stagevox/dsp/kernels/__init__.py",
                     "stagevox/engine/__init__.py", "stagevox/presets/__init__.py",
                     "stagevox/dsp/data/speech.flac", "stagevox/dsp/data/README.md"):
        assert required in names
    tomls = {Path(n).name for n in names if n.startswith("stagevox/presets/")
             and n.endswith(".toml")}
    assert tomls == {p.name for p in (ROOT / "presets").glob("*.toml")} and tomls
    # The repository's top-level folders are mapped, not shipped as-is.
    assert not any(n.startswith(("dsp/", "engine/", "presets/", "tests/", "bench/"))
                   for n in names)
    assert "stagevox/__init__.py" not in names  # stagevox is a namespace package


def test_installed_wheel_runs_without_the_source_tree(wheel, tmp_path):
    """Install the wheel into a folder and use it with the source tree out of reach."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    # -S: no site processing, so the editable install's path hooks are not loaded;
    # dependencies come from this environment's site-packages, appended after the wheel.
    code = f"""
import sys
sys.path[:0] = [{str(target)!r}]
sys.path.append({sysconfig.get_paths()["purelib"]!r})
sys.path.append({sysconfig.get_paths()["platlib"]!r})
from stagevox import dsp, presets
assert dsp.__file__.startswith({str(target)!r}), dsp.__file__
assert presets.__file__.startswith({str(target)!r}), presets.__file__
x = dsp.samples.speech(16000)[:16000]
for name in presets.names():
    y = presets.load(name)(x, 16000)
    assert y.shape[-1] == x.shape[-1]
print(len(presets.names()), "presets ok")
"""
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "presets ok" in result.stdout
