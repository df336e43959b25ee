"""Batch processing of many files: the local process pool and a Dask cluster.

The cluster is a real ``distributed.LocalCluster`` with two worker
processes on 127.0.0.1; its outputs must be the local path's, sample for
sample (the same code runs on the same machine, so the tolerance is zero).
"""

import sys
import threading

import batch_helpers
import numpy as np
import pytest
import soundfile as sf

from stagevox import cli, dsp, presets
from stagevox.dsp import batch

from conftest import require

PRESET = "radio"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, speech):
    """Four short files of different rates, channels and formats, and one
    that is not audio; the inputs in a stable order."""
    root = tmp_path_factory.mktemp("batch")
    src = root / "in"
    src.mkdir()
    x = speech[:48000]
    stereo = np.stack([x, 0.5 * x])
    sf.write(str(src / "a.wav"), x[:24000], 48000, subtype="PCM_16")
    sf.write(str(src / "b.flac"), stereo[:, :22050].T, 44100)
    sf.write(str(src / "c.wav"), x[:8000], 16000, subtype="FLOAT")
    (src / "d.wav").write_bytes(b"RIFF but not audio")
    sf.write(str(src / "e.ogg"), x[24000:48000], 48000)
    inputs = sorted(src.iterdir())
    return root, inputs


@pytest.fixture(scope="module")
def local(folder):
    """The local path's outputs."""
    root, inputs = folder
    results = dsp.process_files(inputs, root / "local", preset=PRESET,
                                preset_loader=presets.load, jobs=2, progress=False)
    return results


@pytest.fixture(scope="module")
def client(local):
    _has_distributed()
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", scheduler_port=0,
                                       dashboard_address=":0")
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def _has_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        require(False, "distributed is not installed (pip install 'stagevox[distributed]')")
    return True


def _samples(path):
    y, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return y, rate


def _check_outputs(outdir, inputs, reference_dir):
    """Only the good files were written (no temporary left), each the same
    samples as the reference's."""
    good = [p.name for p in inputs if p.name != "d.wav"]
    assert sorted(p.name for p in outdir.iterdir()) == sorted(good)
    for name in good:
        y, rate = _samples(outdir / name)
        ref, ref_rate = _samples(reference_dir / name)
        assert rate == ref_rate
        np.testing.assert_array_equal(y, ref, err_msg=name)


def test_local_path_matches_one_file_at_a_time(folder, local, tmp_path):
    """The reference itself: each file through ``process_file`` in this process."""
    root, inputs = folder
    assert [r.src for r in local] == [str(p) for p in inputs]
    bad = [r for r in local if not r.ok]
    assert [r.src for r in bad] == [str(inputs[3])]
    assert "d.wav: not a readable audio file" in bad[0].error
    for src in inputs:
        if src.name == "d.wav":
            continue
        dsp.process_file(src, tmp_path / src.name, presets.load(PRESET))
    _check_outputs(root / "local", inputs, tmp_path)


def test_python_api_on_the_cluster(folder, local, client, capsys):
    root, inputs = folder
    outdir = root / "api"
    results = dsp.process_files(inputs, outdir, preset=PRESET, preset_loader=presets.load,
                                client=client, progress=True)
    # In the order given, with the user's paths, one bad file reported alone.
    assert [r.src for r in results] == [str(p) for p in inputs]
    assert [r.dst for r in results] == [str(outdir / p.name) for p in inputs]
    assert [r.ok for r in results] == [True, True, True, False, True]
    assert "d.wav: not a readable audio file" in results[3].error and results[3].report is None
    for mine, theirs in zip(results, local):
        if mine.ok:
            assert (mine.report.output_frames, mine.report.latency, mine.report.sample_rate) \
                == (theirs.report.output_frames, theirs.report.latency,
                    theirs.report.sample_rate)
    _check_outputs(outdir, inputs, root / "local")
    assert "5/5" in capsys.readouterr().err  # the progress bar over files


def test_the_local_pool_does_not_inherit_the_callers_held_locks(folder, tmp_path):
    """The caller holds a lock the processor takes (as a thread of a notebook
    or a Dask client may hold one) while the batch runs: the pool's workers
    do not start as copies of the caller, so theirs is free and the file is
    done (a forked worker would wait on it for ever)."""
    root, inputs = folder
    fx = batch_helpers.LockedGain(gain_db=-6.0)
    done = []

    def run():
        done.extend(dsp.process_files([inputs[0]], tmp_path / "out", fx, jobs=1,
                                      progress=False))

    with batch_helpers.LOCK:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(60.0)
    assert done and done[0].ok, "the batch did not finish within 60 s"
    x, _ = sf.read(inputs[0], dtype="float32")
    y, _ = sf.read(tmp_path / "out" / inputs[0].name, dtype="float32")
    np.testing.assert_allclose(y, x * 10 ** (-6 / 20), atol=2 / 32768)


def test_a_processor_object_is_sent_to_the_workers(folder, client, tmp_path):
    root, inputs = folder
    good = [p for p in inputs if p.name != "d.wav"]
    fx = presets.load(PRESET)
    results = dsp.process_files(good, tmp_path / "fx", fx, client=client, progress=False)
    assert all(r.ok for r in results)
    _check_outputs(tmp_path / "fx", good, root / "local")


def test_cli_on_the_cluster(folder, client, capsys):
    root, inputs = folder
    outdir = root / "cli"
    address = client.scheduler.address
    status = cli.main(["process", *map(str, inputs), str(outdir), "--preset", PRESET,
                       "--scheduler", address])
    out, err = capsys.readouterr()
    assert status == 1
    assert "d.wav: not a readable audio file" in err
    assert "1 of 5 files failed; the others were written" in err
    assert "\r" not in err  # no progress bar when stderr is not a terminal
    assert out.count(" -> ") == 4 and str(outdir / "a.wav") in out
    _check_outputs(outdir, inputs, root / "local")


def test_existing_outputs_are_kept_without_overwrite(folder, client, tmp_path):
    root, inputs = folder
    good = [p for p in inputs if p.name != "d.wav"]
    (tmp_path / "a.wav").write_bytes(b"keep me")
    results = dsp.process_files(good, tmp_path, client=client, progress=False)
    assert [r.ok for r in results] == [False, True, True, True]
    assert "exists already" in results[0].error
    assert (tmp_path / "a.wav").read_bytes() == b"keep me"


def test_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _has_distributed()
    monkeypatch.setattr(batch, "CONNECT_TIMEOUT_S", 0.5)
    src = tmp_path / "x.wav"
    sf.write(str(src), np.zeros(480), 48000)
    status = cli.main(["process", str(src), str(tmp_path / "out.wav"), "--copy",
                       "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert status == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 0.5 s" in err
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("address", ["nonsense", "ftp://host:21"])
def test_bad_scheduler_address(address, tmp_path, capsys):
    _has_distributed()
    src = tmp_path / "x.wav"
    sf.write(str(src), np.zeros(480), 48000)
    status = cli.main(["process", str(src), str(tmp_path / "out.wav"), "--copy",
                       "--scheduler", address])
    err = capsys.readouterr().err
    assert status == 1 and "is not a Dask scheduler address" in err and "tcp://HOST:PORT" in err


def test_scheduler_without_workers(monkeypatch):
    _has_distributed()
    import distributed
    monkeypatch.setattr(batch, "CONNECT_TIMEOUT_S", 0.5)
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1",
                                  scheduler_port=0, dashboard_address=":0") as cluster:
        with pytest.raises(batch.ClusterError, match="has no worker .*dask worker"):
            batch.connect(cluster.scheduler_address)


def test_without_distributed_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(batch.ClusterError, match=r"pip install 'stagevox\[distributed\]'"):
        batch.connect("tcp://127.0.0.1:8786")


def test_bad_options_fail_before_any_file(tmp_path, capsys):
    with pytest.raises(ValueError, match="either fx or preset/effects"):
        dsp.process_files(["a.wav"], tmp_path, dsp.Gain(), preset=PRESET)
    with pytest.raises(ValueError, match="would both be written"):
        dsp.process_files(["x/a.wav", "y/a.wav"], tmp_path / "out")
    with pytest.raises(ValueError, match="block_size"):
        dsp.process_files(["a.wav"], tmp_path / "out", block_size=0)
    with pytest.raises(ValueError, match="jobs"):
        dsp.process_files(["a.wav"], tmp_path / "out", jobs=0)
    with pytest.raises(ValueError, match="unknown effect .no_such_effect"):
        dsp.process_files(["a.wav"], tmp_path / "out", effects=["no_such_effect"])
    status = cli.main(["process", "a.wav", "b.wav", str(tmp_path), "--copy", "--jobs", "2",
                       "--scheduler", "tcp://127.0.0.1:8786"])
    assert status == 1 and "--jobs is for local runs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
