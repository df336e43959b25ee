"""The README's examples run as written, and its preset catalogue matches the
bundled presets.

Every fenced block marked ```python or ```sh runs, in the README's order, in
one temporary folder (the library example writes the ``speech.wav`` that the
command-line and live-channel examples read), with the ``stagevox`` command
of this environment first on PATH and HOME in the temporary folder (so the
server's key file lands there).  The one block that runs ``make`` is left
out: it builds a virtualenv and runs this suite.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import require
from stagevox import presets

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w+)\n(.*?)^```$", TEXT,
                                                         flags=re.S | re.M)]
RUNNABLE = [(lang, code) for lang, code in BLOCKS
            if lang in ("python", "sh") and not re.search(r"^make ", code, flags=re.M)]
#: Seconds a block may take (the live-channel block records 3 s in real time).
BLOCK_TIMEOUT_S = 60


def _run(lang, code, folder):
    """Run one block in ``folder``; returns the CompletedProcess.  Background
    processes a block starts are ended with it (its own process group)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEVOX_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(folder)
    if lang == "python":
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"README {lang} block timed out after {BLOCK_TIMEOUT_S} s:\n{code}\n"
                    f"stdout:\n{out}\nstderr:\n{err}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, (f"README {lang} block failed ({proc.returncode}):\n{code}\n"
                                  f"stdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_the_readme_has_its_examples():
    langs = [lang for lang, _ in RUNNABLE]
    assert langs.count("python") >= 3 and langs.count("sh") >= 2
    assert len([1 for lang, code in BLOCKS if lang == "sh" and "make " in code]) == 1


def test_readme_examples_run_as_written(tmp_path):
    require(shutil.which("openssl") is not None, "openssl (the live-channel example uses it)")
    results = [_run(lang, code, tmp_path) for lang, code in RUNNABLE]

    # What the examples say they write.
    for name in ("speech.wav", "phone.wav", "radio.wav", "bright.wav", "batch/speech.wav",
                 "batch/radio.wav"):
        assert (tmp_path / name).stat().st_size > 1000, name
    speech, rate = sf.read(tmp_path / "speech.wav")
    assert rate == 48000 and len(speech) > 10 * rate

    # The live channel: the listener heard the host, and the server logged the joins.
    live = next(r for r, (lang, code) in zip(results, RUNNABLE) if "stagevox listen" in code)
    heard, rate = sf.read(tmp_path / "heard.wav")
    assert abs(len(heard) / rate - 3.0) < 0.05
    assert np.max(np.abs(heard)) > 0.01, "the listener heard only silence"
    assert "joined: channel 'room' uid 1 as host" in live.stderr
    assert "joined: channel 'room' uid 2 as audience" in live.stderr

    # The Python live example prints how many packets the listener received (2 s of 20 ms).
    api = next(r for r, (lang, code) in zip(results, RUNNABLE) if "engine.Server" in code)
    received = int(re.search(r"(\d+) packets received", api.stdout).group(1))
    assert received >= 50


def _catalogue_rows():
    start = TEXT.index("<!-- preset catalogue: start -->")
    end = TEXT.index("<!-- preset catalogue: end -->")
    rows = []
    for line in TEXT[start:end].splitlines():
        m = re.fullmatch(r"\| `([^`]+)` \| (.*) \|", line)
        if m:
            rows.append((m.group(1), m.group(2).replace("\\|", "|")))
    return rows


def test_preset_catalogue_matches_the_bundled_presets():
    expected = [(name, presets.describe(name)) for name in presets.names()]
    table = "\n".join(f"| `{n}` | {d.replace('|', chr(92) + '|')} |" for n, d in expected)
    assert _catalogue_rows() == expected, (
        "the README's preset catalogue differs from presets.names()/describe(); "
        f"its rows should be:\n{table}")


def _sdk_rows():
    start = TEXT.index("## SDK vocabulary")
    section = TEXT[start:TEXT.index("\n## ", start + 1)]
    return [line.split(" | ")[-1] for line in section.splitlines()
            if line.startswith("| `")]


def test_sdk_table_names_what_exists():
    """Every call the SDK table maps to exists (``engine.Client``'s and
    ``dsp.SpatialScene``'s methods, ``dsp.``/``engine.``/``presets.`` names);
    the rest says "not yet"."""
    from stagevox import dsp, engine
    rows = _sdk_rows()
    assert len(rows) >= 30
    roots = {"dsp": dsp, "engine": engine, "presets": presets}
    missing = []
    for cell in rows:
        if cell.strip(" |") == "not yet":
            continue
        names = re.findall(r"`([A-Za-z_][\w.]*)[(`[]", cell)
        assert names, cell
        for name in names:
            head, *rest = name.split(".")
            if head in roots:
                obj = roots[head]
                for part in rest:
                    obj = getattr(obj, part, None)
                ok = obj is not None
            elif name.startswith("on_"):
                ok = (hasattr(engine.AudioFrameObserver, name) or name in engine.client.__doc__
                      or name in engine.Server.register_event_handler.__doc__)
            else:
                ok = (hasattr(engine.Client, name) or hasattr(dsp.SpatialScene, name)
                      or name in ("graph", "None", "True"))
            if not ok:
                missing.append(name)
    assert not missing, f"the SDK table names calls that do not exist: {missing}"
