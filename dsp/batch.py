"""Many audio files at once: on this machine's cores, or over a Dask cluster.

    from stagevox import dsp, presets
    results = dsp.process_files(["a.wav", "b.flac"], "out", preset="radio",
                                preset_loader=presets.load)          # local cores
    client = dsp.batch.connect("tcp://10.0.0.5:8786")
    results = dsp.process_files(paths, "out", dsp.Limiter(), client=client)

Each file is one task that runs ``fileio.process_file`` in a worker process:
streamed block by block and written through a temporary file that replaces
the output only when it is complete, so nothing is ever half-written.  A
file that fails is reported in its ``FileResult`` and the others go on.

On a cluster the workers open the files themselves: they must see the
inputs and the output folder at the same paths (a shared filesystem, such
as an NFS mount) and have stagevox installed.  Paths are sent absolute.
The cluster needs the ``distributed`` package
(``pip install 'stagevox[distributed]'``); nothing here imports it unless a
cluster is used.
"""

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import uuid
from pathlib import Path

from . import fileio
from .audio import check_sample_rate
from .errors import ParameterError, StagevoxError

__all__ = ["ClusterError", "FileResult", "connect", "output_paths", "process_files",
           "process_pairs"]

#: How long ``connect`` waits for the scheduler and for a first worker, in seconds.
CONNECT_TIMEOUT_S = 10.0


class ClusterError(StagevoxError):
    """The Dask cluster cannot be used: ``distributed`` is not installed, the
    scheduler cannot be reached, or it has no workers."""


@dataclasses.dataclass
class FileResult:
    """The outcome of one file of a batch, input ``src`` to output ``dst``:
    its ``report`` (a ``fileio.FileReport``) when it was written, else the
    ``error`` message."""

    src: str
    dst: str
    report: fileio.FileReport | None = None
    error: str | None = None

    @property
    def ok(self):
        """True when the output was written."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class _Job:
    """What a worker needs for one file (sent to it by pickling)."""

    src: str
    dst: str
    fx: object
    block_size: int
    sample_rate: int | None
    overwrite: bool
    overwrite_hint: str = "overwrite=True"   # how the caller's user asks to overwrite


def _process_one(job):
    """Worker: process one file; returns (report, None) or (None, error message)."""
    try:
        report = fileio.process_file(job.src, job.dst, job.fx, block_size=job.block_size,
                                     sample_rate=job.sample_rate, overwrite=job.overwrite)
        return report, None
    except fileio.OutputExistsError as exc:
        return None, exc.message(job.overwrite_hint)
    except (ValueError, OSError) as exc:
        return None, str(exc)


# ------------------------------------------------------------------------ cluster

def connect(address, timeout_s=None):
    """A ``distributed.Client`` of the Dask scheduler at ``address``
    (``tcp://HOST:PORT``), once at least one worker is there.

    Waits at most ``timeout_s`` seconds (default ``CONNECT_TIMEOUT_S``) for
    the scheduler, then as long again for a worker.  The caller closes the
    client.  Raises ``ClusterError`` when ``distributed`` is not installed,
    the address is not valid, the scheduler does not answer in time, or it
    has no worker.
    """
    try:
        import distributed
    except ImportError:
        raise ClusterError("a Dask cluster needs the distributed package: "
                           "pip install 'stagevox[distributed]'") from None
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        distributed.comm.get_address_host_port(address)
    except ValueError as exc:
        raise ClusterError(f"{address!r} is not a Dask scheduler address ({exc}); "
                           "give tcp://HOST:PORT") from None
    try:
        client = distributed.Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError):
        raise ClusterError(f"cannot reach the Dask scheduler at {address} within "
                           f"{timeout_s:g} s; is 'dask scheduler' running there, and "
                           "can this machine reach that port?") from None
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (OSError, TimeoutError):
        client.close()
        raise ClusterError(f"the Dask scheduler at {address} has no worker (waited "
                           f"{timeout_s:g} s); start some with 'dask worker {address}'") from None
    return client


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _outcome(future, job):
    """(report, error) of a finished future, also when the task itself failed
    (a worker that died, a processor that could not be sent, ...)."""
    try:
        return future.result()
    except Exception as exc:  # one file's failure must not stop the batch
        return None, f"{job.src}: {type(exc).__name__}: {_first_line(exc)}"


def _pool_context():
    """How the pool starts its processes: not by forking the caller.  A fork
    copies the caller's locks as they are at that instant, so in a program
    with threads (a notebook's kernel, a Dask client, Numba's pool) a worker
    could start with a lock held for good and the batch wait forever; the
    fork server (else a fresh interpreter) starts each from a process
    without them."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_local(jobs, workers):
    """Yield (index, report, error) as the files finish, on a process pool."""
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers,
                                                  mp_context=_pool_context())
    try:
        futures = {pool.submit(_process_one, job): i for i, job in enumerate(jobs)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            yield (i, *_outcome(future, jobs[i]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_cluster(jobs, client):
    """Yield (index, report, error) as the files finish, on a Dask cluster."""
    from distributed import as_completed
    batch_id = uuid.uuid4().hex[:8]
    keys = [f"stagevox-process-{batch_id}-{i}-{Path(job.src).name}"
            for i, job in enumerate(jobs)]
    futures = client.map(_process_one, jobs, key=keys, pure=False)
    index = {future.key: i for i, future in enumerate(futures)}
    try:
        for future in as_completed(futures, loop=client.loop):
            i = index[future.key]
            yield (i, *_outcome(future, jobs[i]))
    finally:
        client.cancel(futures)  # an interrupted batch leaves no task running


# --------------------------------------------------------------------------- batch

def output_paths(inputs, outdir):
    """Where each of ``inputs`` goes in folder ``outdir``: the same file name.

    Raises ``ParameterError`` when two inputs have the same name.
    """
    seen = {}
    targets = []
    for src in inputs:
        dst = Path(outdir) / Path(src).name
        if dst in seen:
            raise ParameterError(f"{seen[dst]} and {src} would both be written to {dst}")
        seen[dst] = src
        targets.append(dst)
    return targets


def process_files(inputs, outdir, fx=None, *, preset=None, effects=(), preset_loader=None,
                  block_size=fileio.DEFAULT_BLOCK_SIZE, sample_rate=None, overwrite=False,
                  client=None, jobs=None, progress=None, on_result=None):
    """Run audio files through ``fx`` (or a preset and effects) into folder
    ``outdir``, each under its own name, in parallel.

    ``inputs``: paths of audio files (any format soundfile reads).
    ``outdir``: the output folder, created if needed; each output keeps its
    input's name, so its suffix chooses the format.
    ``fx``: a processor; or ``preset`` (a name or .toml file) and
    ``effects`` (``"name:key=value,..."`` strings, run after the preset) as
    on the command line, built here with ``preset_loader`` (e.g.
    ``stagevox.presets.load``; dsp does not import presets).  With none of
    them the files are only converted.  The processor is copied to each
    task by pickling, so every file starts from a fresh state and the
    workers need no preset files.
    ``block_size`` (frames >= 1), ``sample_rate`` (Hz, 8000-48000, default:
    each file's own) and ``overwrite`` (replace existing outputs) are those
    of ``process_file``.
    ``client``: a ``distributed.Client`` (see ``batch.connect``) to run the
    files on its Dask cluster; its workers must read the inputs and write
    the outputs at the same paths (a shared filesystem).  Without it a pool
    of ``jobs`` local processes runs them (default: one per core).
    ``progress``: a tqdm bar over files on stderr (default: only when stderr
    is a terminal).  ``on_result(FileResult)`` is called as each file
    finishes (print with ``tqdm.write`` so the bar stays whole).

    Returns a list of ``FileResult`` in the order of ``inputs``.  Raises
    ``ParameterError`` (a ``ValueError``) for a bad option, preset or
    effect, or two inputs with the same name, before anything is written.
    A file that fails is reported in its result and the others are written,
    each through a temporary file, so no output is ever half-written.
    """
    fx = _processing(fx, preset, effects, preset_loader, block_size, sample_rate, jobs)
    targets = output_paths(inputs, outdir)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    return process_pairs(list(zip(inputs, targets)), fx, block_size=block_size,
                         sample_rate=sample_rate, overwrite=overwrite, client=client,
                         jobs=jobs, progress=progress, on_result=on_result)


def _processing(fx, preset, effects, preset_loader, block_size, sample_rate, jobs):
    """Check the options of a batch; the processor to run (or None)."""
    if fx is not None and (preset or effects):
        raise ParameterError("give either fx or preset/effects, not both")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ParameterError(f"jobs must be a whole number >= 1, got {jobs!r}")
    fileio.check_block_size(block_size)
    if sample_rate is not None:
        check_sample_rate(sample_rate)
    if fx is None:
        from .cli import build_fx  # the same recipe as the command line's options
        fx = build_fx(preset, effects, preset_loader)
    return fx


def process_pairs(pairs, fx=None, *, preset=None, effects=(), preset_loader=None,
                  block_size=fileio.DEFAULT_BLOCK_SIZE, sample_rate=None, overwrite=False,
                  client=None, jobs=None, progress=None, on_result=None,
                  overwrite_hint="overwrite=True"):
    """Run each ``(input, output)`` file pair of ``pairs`` through the same
    processing, in parallel: ``process_files`` with explicit output paths
    (whose folders must exist) instead of one folder.

    ``fx``, ``preset``, ``effects``, ``preset_loader``, ``block_size``,
    ``sample_rate``, ``overwrite``, ``client``, ``jobs``, ``progress`` and
    ``on_result`` are those of ``process_files``; ``overwrite_hint`` is how
    an error about an existing output tells to overwrite (the command line
    passes ``--overwrite``).  Returns a list of
    ``FileResult`` in the order of ``pairs``; raises ``ParameterError`` for
    a bad option, preset or effect before any file is touched.
    """
    fx = _processing(fx, preset, effects, preset_loader, block_size, sample_rate, jobs)
    pairs = [(str(src), str(dst)) for src, dst in pairs]
    # Workers of a cluster do not share our working folder.
    sent = [(os.path.abspath(s), os.path.abspath(d)) for s, d in pairs] \
        if client is not None else pairs
    todo = [_Job(s, d, fx, block_size, sample_rate, overwrite, overwrite_hint)
            for s, d in sent]
    results = [None] * len(todo)
    if not todo:
        return results
    runner = _run_cluster(todo, client) if client is not None else _run_local(todo, jobs)
    from tqdm import tqdm
    show = sys.stderr.isatty() if progress is None else progress
    with contextlib.closing(runner), \
            tqdm(total=len(todo), unit="file", disable=not show, file=sys.stderr) as bar:
        for i, report, error in runner:
            src, dst = pairs[i]
            if report is not None:
                report = dataclasses.replace(report, src=src, dst=dst)
            results[i] = FileResult(src, dst, report, error)
            if on_result is not None:
                on_result(results[i])
            bar.update(1)
    return results
