"""Every notebook in notebooks/ runs headless, fast, and makes the figures it declares.

Each notebook is executed top to bottom with nbclient on a ``python3`` kernel
of this interpreter (a kernel spec written for the test run, so a kernel
installed elsewhere is never picked up), with matplotlib's inline backend,
the kernel's working folder and the user preset folder in a temporary folder.

A code cell that makes figures declares how many in its metadata::

    "metadata": {"stagevox": {"figures": 2}}

and must show exactly that many ``image/png`` outputs (cells without the
key show none).  Every figure rendered to an image while a notebook runs
(shown inline or saved) must have a title (its own or the figure's), axis
labels, and a unit in each label, in parentheses or brackets.  Notebooks
are committed without outputs.
"""

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Wall-clock budget of one notebook, kernel start included (seconds).
BUDGET_S = 60.0

# Run first in the kernel (not part of the notebook): checks every figure as it
# is rendered to an image, whatever draws it (pyplot, a Figure, a widget).
SETUP = r'''
import re as _re, threading as _threading
import matplotlib.backend_bases as _mbb

_stagevox_problems, _stagevox_lock = [], _threading.Lock()
_UNIT = _re.compile(r"\(.+\)|\[.+\]")


def _stagevox_check(fig):
    found = []
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        if ax.get_label() == "<colorbar>":
            labels = [ax.get_ylabel() or ax.get_xlabel()]
        else:
            if not (ax.get_title() or ax.get_title("left") or ax.get_title("right") or suptitle):
                found.append("an axes without a title")
            labels = [ax.get_xlabel(), ax.get_ylabel()]
            if hasattr(ax, "get_zlabel"):
                labels.append(ax.get_zlabel())
        for label in labels:
            if not label:
                found.append("an axis without a label")
            elif not _UNIT.search(label):
                found.append(f"the axis label {label!r} has no unit in () or []")
    name = suptitle or next((ax.get_title() for ax in fig.axes if ax.get_title()), "untitled")
    with _stagevox_lock:
        _stagevox_problems.extend(f"figure {name!r}: {p}" for p in found)


_stagevox_print_figure = _mbb.FigureCanvasBase.print_figure


def _checked_print_figure(self, *args, **kwargs):
    _stagevox_check(self.figure)
    return _stagevox_print_figure(self, *args, **kwargs)


_mbb.FigureCanvasBase.print_figure = _checked_print_figure
'''

# Run last: any problem found above fails the notebook.
TEARDOWN = r'''
assert not _stagevox_problems, "figures without title, labels or units:\n" + \
    "\n".join(sorted(set(_stagevox_problems)))
'''


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, monkeypatch_module):
    """A ``python3`` kernel spec for this interpreter, first on JUPYTER_PATH."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(str(root / "kernels" / "python3"))
    spec = json.loads((root / "kernels" / "python3" / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    monkeypatch_module.setenv("JUPYTER_PATH", str(root))
    monkeypatch_module.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name} cell {i} has outputs; clear them before committing"
    assert "widgets" not in nb.metadata, f"{path.name} holds saved widget state"


def declared_figures(cell):
    """The number of figures a code cell declares (0 without the key)."""
    n = cell.metadata.get("stagevox", {}).get("figures", 0)
    assert isinstance(n, int) and n >= 0, f"bad figures declaration {n!r}"
    return n


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_makes_its_figures(path, tmp_path, kernel_env, monkeypatch):
    monkeypatch.setenv("STAGEVOX_PRESET_DIR", str(tmp_path / "user presets"))
    nb = nbformat.read(path, as_version=4)
    cells = list(nb.cells)
    assert sum(declared_figures(c) for c in cells if c.cell_type == "code") > 0, \
        f"{path.name} declares no figures"
    nb.cells = [nbformat.v4.new_code_cell(SETUP), *cells, nbformat.v4.new_code_cell(TEARDOWN)]
    client = NotebookClient(nb, timeout=int(BUDGET_S), startup_timeout=int(BUDGET_S),
                            kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails
    elapsed = time.perf_counter() - start

    for i, cell in enumerate(nb.cells[1:-1]):
        if cell.cell_type != "code":
            continue
        shown = sum("image/png" in o.get("data", {}) for o in cell.outputs)
        assert shown == declared_figures(cell), \
            f"{path.name} cell {i}: {shown} figures shown, {declared_figures(cell)} declared"
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.1f} s (budget {BUDGET_S:.0f} s)"
