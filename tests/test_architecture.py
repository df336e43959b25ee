"""The layers of docs/architecture.md and what may import what, checked on
the source with ``ast`` (every import statement, at module level or inside a
function)."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> the package it is installed as (pyproject.toml's package-dir).
FOLDERS = {"dsp": "stagevox.dsp", "presets": "stagevox.presets",
           "engine": "stagevox.engine", "cli": "stagevox.cli"}
#: Layer -> the stagevox layers it may import.
ALLOWED = {
    "kernels": {"kernels"},
    "dsp": {"kernels", "dsp"},
    "presets": {"kernels", "dsp", "presets"},
    "engine": {"kernels", "dsp", "presets", "engine"},
    "cli": {"kernels", "dsp", "presets", "engine", "cli"},
}
#: Kernels are Numba functions: besides the standard library only these.
KERNEL_THIRD_PARTY = {"numba", "numpy", "rocket_fft"}


def layer_of(module):
    """``stagevox.dsp.kernels.reverb`` -> ``kernels``, ``stagevox.engine.client`` -> ``engine``."""
    parts = module.split(".")
    if parts[:3] == ["stagevox", "dsp", "kernels"]:
        return "kernels"
    return parts[1] if len(parts) > 1 else "stagevox"


def imported_modules(source, package):
    """Absolute names of the modules ``source`` imports; ``package`` resolves
    relative imports."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            # ``from stagevox import presets``: the name may be a module.
            names += [f"{stem}.{alias.name}" for alias in node.names]
    return names


def violations(source, module, package):
    """Forbidden imports of ``module`` (its source and package) as messages."""
    mine = layer_of(module)
    out = []
    for name in imported_modules(source, package):
        top = name.split(".")[0]
        if top == "stagevox":
            other = layer_of(name)
            if other not in ALLOWED[mine]:
                out.append(f"{module} ({mine}) imports {name} ({other})")
        elif mine == "kernels" and top not in KERNEL_THIRD_PARTY \
                and top not in sys.stdlib_module_names:
            out.append(f"{module} (kernels) imports {name}: kernels use only numba, "
                       f"numpy, rocket_fft and the standard library")
    return out


def source_modules():
    """``(path, module, package)`` of every source file of the four layers."""
    out = []
    for folder, dotted in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [] if rel.parts == ("__init__",) else list(rel.parts)
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
                module = ".".join([dotted, *parts])
                package = module
            else:
                module = ".".join([dotted, *parts])
                package = module.rsplit(".", 1)[0] if parts else dotted
            out.append((path, module, package))
    return out


MODULES = source_modules()


def test_every_layer_has_sources():
    layers = {layer_of(m) for _, m, _ in MODULES}
    assert layers == set(ALLOWED)
    assert len(MODULES) > 60


@pytest.mark.parametrize("path,module,package", MODULES,
                         ids=[str(p.relative_to(ROOT)) for p, _, _ in MODULES])
def test_imports_follow_the_layers(path, module, package):
    problems = violations(path.read_text(encoding="utf-8"), module, package)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source,module,package,bad", [
    ("from stagevox import presets", "stagevox.dsp.graph", "stagevox.dsp", True),
    ("def f():\n    from stagevox.engine import Client", "stagevox.dsp.fileio",
     "stagevox.dsp", True),
    ("from .. import graph", "stagevox.dsp.kernels.delay", "stagevox.dsp.kernels", True),
    ("import scipy.signal", "stagevox.dsp.kernels.delay", "stagevox.dsp.kernels", True),
    ("from stagevox.engine import cli", "stagevox.presets", "stagevox.presets", True),
    ("from stagevox.cli import main", "stagevox.engine.client", "stagevox.engine", True),
    ("from . import JIT_OPTIONS, kernel\nimport math", "stagevox.dsp.kernels.delay",
     "stagevox.dsp.kernels", False),
    ("from .kernels import spatial", "stagevox.dsp.spatial_scene", "stagevox.dsp", False),
    ("from stagevox import presets", "stagevox.engine.client", "stagevox.engine", False),
])
def test_the_rule_can_fail(source, module, package, bad):
    assert bool(violations(source, module, package)) is bad
