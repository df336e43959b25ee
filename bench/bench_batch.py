"""Files per second: the local process pool against a Dask cluster, side by side.

Runs the same folder of WAV files through the same preset with
``dsp.process_files`` twice per round: on the local process pool (what
``stagevox process IN... OUTDIR`` does without ``--scheduler``) and through
a ``distributed.LocalCluster`` with as many single-threaded worker
processes as the pool has (what ``--scheduler`` does, here on one machine).
One untimed warm-up run of each comes first (Numba's cache, worker
imports); then the timed runs alternate, and each figure is the median.

The local pool is started anew for every batch, as every ``stagevox
process`` command does; the cluster's workers stay up between batches and
keep their kernels loaded, as a cluster does.  On one machine the cluster
can only add its scheduling cost: it is there to reach more machines.

Needs the ``bench`` extra (``pip install -e '.[bench]'``, which has
``distributed``).

Usage::

    python bench/bench_batch.py              # 16 files of 10 s, 5 repeats
    python bench/bench_batch.py --quick      # 6 files of 3 s, 2 repeats
    python bench/bench_batch.py --files 32 --seconds 30 --workers 4
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import bench_core as core  # one thread per process, set before NumPy loads

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from stagevox import dsp, presets  # noqa: E402

RATE = 48000


def make_inputs(folder, files, seconds):
    """``files`` WAV files of ``seconds`` of the bundled speech each (16-bit)."""
    speech = dsp.samples.speech(RATE)
    n = int(seconds * RATE)
    reps = int(np.ceil((n * files) / speech.size)) + 1
    long = np.tile(speech, reps)
    paths = []
    for i in range(files):
        path = Path(folder) / f"clip{i:03d}.wav"
        sf.write(str(path), long[i * n:(i + 1) * n], RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def timed(run):
    start = time.perf_counter()
    results = run()
    elapsed = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"bench: {len(failed)} files failed, first: {failed[0].error}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio a file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="pool processes and cluster workers (default: all cores)")
    parser.add_argument("--preset", default="voice_clarity")
    parser.add_argument("--quick", action="store_true", help="6 files of 3 s, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.files, args.seconds, args.repeats = 6, 3.0, 2

    import distributed

    print(f"bench_batch: {args.files} files of {args.seconds:g} s at {RATE} Hz, preset "
          f"{args.preset}, {args.workers} workers, median of {args.repeats} runs; "
          f"{core.cpu_name()}, {os.cpu_count()} CPUs, "
          f"distributed {distributed.__version__}")
    common = dict(preset=args.preset, preset_loader=presets.load, overwrite=True,
                  progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(tmp, args.files, args.seconds)
        local_out, cluster_out = Path(tmp, "local"), Path(tmp, "cluster")

        def local():
            return dsp.process_files(inputs, local_out, jobs=args.workers, **common)

        # The local pool forks: run its warm-up before this process has the
        # cluster's threads.
        local()
        with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                      processes=True, host="127.0.0.1", scheduler_port=0,
                                      dashboard_address=":0") as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:

            def on_cluster():
                return dsp.process_files(inputs, cluster_out, client=client, **common)

            on_cluster()
            same = all(np.array_equal(sf.read(str(local_out / p.name))[0],
                                      sf.read(str(cluster_out / p.name))[0]) for p in inputs)
            print(f"check: the cluster's outputs are the local pool's, sample for sample: "
                  f"{'yes' if same else 'NO'}")
            times = {"local": [], "cluster": []}
            for _ in range(args.repeats):
                times["local"].append(timed(local))
                times["cluster"].append(timed(on_cluster))

    audio_s = args.files * args.seconds
    print(f"\n{'path':<34}{'files/s':>10}{'x real time':>14}{'median s':>11}")
    rate = {}
    for name, label in (("local", "local process pool (--jobs)"),
                        ("cluster", "Dask LocalCluster (--scheduler)")):
        t = statistics.median(times[name])
        rate[name] = args.files / t
        print(f"{label:<34}{rate[name]:>10.2f}{audio_s / t:>14.1f}{t:>11.2f}")
    print(f"\ncluster / local files per second: {rate['cluster'] / rate['local']:.2f}")


if __name__ == "__main__":
    main()
