"""The wheel: layout as designed (stagevox.dsp/engine/presets/cli), data included, and it runs;
and the layers: dsp imports nothing above it."""

import ast
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel and what pip printed while building it."""
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("stagevox-*.whl")
    return path, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(built):
    return built[0]


def test_wheel_builds_without_setuptools_warnings(built):
    """No deprecation warnings from the build backend (such as a license
    table, or a data folder missing from the package list)."""
    log = built[1]
    assert "BuildBackendWarning" not in log and "SetuptoolsDeprecationWarning" not in log, log


def test_wheel_holds_packages_presets_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("stagevox/dsp/__init__.py", "stagevox/dsp/kernels/__init__.py",
                     "stagevox/engine/__init__.py", "stagevox/presets/__init__.py",
                     "stagevox/cli/__init__.py", "stagevox/cli/__main__.py",
                     "stagevox/dsp/data/speech.flac", "stagevox/dsp/data/README.md",
                     "stagevox/engine/gateway/__init__.py",
                     "stagevox/engine/gateway/web/room.html",
                     "stagevox/engine/gateway/web/room.js",
                     "stagevox/engine/gateway/web/room.css"):
        assert required in names
    tomls = {Path(n).name for n in names if n.startswith("stagevox/presets/")
             and n.endswith(".toml")}
    assert tomls == {p.name for p in (ROOT / "presets").glob("*.toml")} and tomls
    # The repository's top-level folders are mapped, not shipped as-is.
    assert not any(n.startswith(("dsp/", "engine/", "presets/", "cli/", "tests/", "bench/"))
                   for n in names)
    assert "stagevox/__init__.py" not in names  # stagevox is a namespace package
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "stagevox = stagevox.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


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


# ------------------------------------------------------------------------- layers

#: What dsp must never import: the layers above it.
ABOVE_DSP = ("stagevox.engine", "stagevox.presets", "stagevox.cli")


def test_importing_all_of_dsp_loads_nothing_above_it():
    """Every module of stagevox.dsp, imported in a fresh interpreter, leaves
    engine, presets and the command out of sys.modules."""
    code = f"""
import importlib, json, pkgutil, sys
import stagevox.dsp
names = [m.name for m in pkgutil.walk_packages(stagevox.dsp.__path__, "stagevox.dsp.")]
for name in names:
    importlib.import_module(name)
above = sorted(m for m in sys.modules
               if any(m == t or m.startswith(t + '.') for t in {ABOVE_DSP!r}))
print(json.dumps({{"imported": names, "above": above}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    # The walk really went through dsp: its command module, its errors, its kernels.
    assert {"stagevox.dsp.cli", "stagevox.dsp.errors", "stagevox.dsp.graph",
            "stagevox.dsp.kernels", "stagevox.dsp.kernels.common"} <= set(report["imported"])
    assert report["above"] == []


def _imports(tree):
    """``(module, level)`` for every import in an AST, wherever the statement is;
    ``from a import b`` gives both ``a`` and ``a.b``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            yield base, node.level
            yield from (((f"{base}." if base else "") + alias.name, node.level)
                        for alias in node.names)


def _is_above_dsp(name):
    return any(name == top or name.startswith(top + ".") for top in ABOVE_DSP)


def test_dsp_source_has_no_import_from_above():
    """Also imports inside functions (which the test above does not run):
    no ``stagevox.engine``, ``stagevox.presets`` or ``stagevox.cli`` and no
    relative import that climbs out of dsp, anywhere under dsp/."""
    found = []
    for path in sorted((ROOT / "dsp").rglob("*.py")):
        depth = len(path.relative_to(ROOT / "dsp").parts)  # dsp/x.py: 1 (level 2 leaves dsp)
        for name, level in _imports(ast.parse(path.read_text(), str(path))):
            if (level == 0 and _is_above_dsp(name)) or level > depth:
                found.append(f"{path.relative_to(ROOT)}: {'.' * level}{name}")
    assert not found
