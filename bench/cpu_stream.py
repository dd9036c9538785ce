"""A full pass streamed from a file against the same pass in memory, and the file's read rate.

Run from the repository root::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.cpu_stream --output bench/results/cpu_stream.json

Writes a float32 ``.npy`` of N x D (default 1,000,000 x 256, 1 GiB) to ``--dir``,
then times, in one run: reading it whole in 64 MiB chunks into one reused buffer
(the storage's ceiling: the page cache here, when the file is freshly written and
RAM holds it), the loss-and-gradient pass on the array in memory (the compute
ceiling), and the same pass streamed from the file through ``NpySource`` and from
``np.load(mmap_mode="r")``.

The floor of a streamed pass: reading costs CPU time (a copy out of the page cache)
that the compute threads, one per core, would otherwise have, so with perfect
overlap a pass takes ``in-memory pass + read / cores``, and never less than the read
alone: ``max(read, in-memory + read / cores)``.
"""

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from fastsoftmax import SoftmaxObjective, get_backend
from fastsoftmax.sources import ArraySource, NpySource
from fastsoftmax.streaming import SourceFeatures

from . import machine
from .cpu_pass import time_runs


def write_dataset(path, n, d, seed=0):
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    step = 1 << 16
    for start in range(0, n, step):
        X[start : start + step] = rng.standard_normal((min(step, n - start), d), dtype=np.float32)
    X.flush()


def median_seconds(fn, repeats):
    times = time_runs(fn, repeats)
    return statistics.median(times), times


def read_whole(source):
    """Read every chunk into one reused buffer: the source's read rate, nothing computed."""
    for _ in source.iter_features(range(source.n_chunks), prefetch=False, reuse_buffers=True):
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--classes", type=int, nargs="+", default=[20, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dir", default=None, help="where to write the data file (default: a temporary folder)"
    )
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    folder = Path(args.dir or tempfile.mkdtemp(prefix="fastsoftmax-bench-"))
    path = folder / "X.npy"
    write_dataset(path, args.rows, args.features)
    nbytes = args.rows * args.features * 4
    backend = get_backend("cpu")
    y = np.random.default_rng(1).integers(0, max(args.classes), args.rows)
    sw = np.ones(args.rows, np.float32)
    results = {
        "machine": machine.describe(machine.module_command("bench.cpu_stream", argv)),
        "rows": args.rows,
        "features": args.features,
    }

    read_s, read_all = median_seconds(lambda: read_whole(NpySource(path)), args.repeats)
    results["read"] = {"seconds": read_s, "all": read_all, "GB_per_s": nbytes / read_s / 1e9}
    print(
        f"read {nbytes / 2**30:.2f} GiB in 64 MiB chunks: {read_s * 1e3:.0f} ms, {nbytes / read_s / 1e9:.2f} GB/s"
    )
    X = np.load(path)
    results["passes"] = []
    for c in args.classes:
        W = np.full((args.features, c), 1e-3, np.float32)
        b = np.zeros(c, np.float32)
        labels = y % c
        variants = {
            "in memory": X,
            "NpySource": SourceFeatures(NpySource(path), np.float32),
            "np.memmap": SourceFeatures(ArraySource(np.load(path, mmap_mode="r")), np.float32),
        }
        for name, features in variants.items():
            objective = SoftmaxObjective(backend, features, labels, sw, c)
            seconds, times = median_seconds(lambda o=objective, p=(W, b): o.loss_grad(p), args.repeats)
            row = {
                "classes": c,
                "variant": name,
                "seconds": seconds,
                "all": times,
                "GB_per_s": nbytes / seconds / 1e9,
            }
            results["passes"].append(row)
        in_memory = next(
            r["seconds"] for r in results["passes"] if r["classes"] == c and r["variant"] == "in memory"
        )
        cores = backend.n_threads
        floor = max(read_s, in_memory + read_s / cores)
        for row in results["passes"]:
            if row["classes"] != c:
                continue
            line = (
                f"C={c:5d} {row['variant']:10s} {row['seconds'] * 1e3:8.1f} ms  {row['GB_per_s']:6.2f} GB/s"
            )
            if row["variant"] != "in memory":
                row["ratio_to_floor"] = row["seconds"] / floor
                line += (
                    f"  {row['ratio_to_floor']:.2f}x floor ({floor * 1e3:.0f} ms = in-memory pass "
                    f"+ read / {cores} cores)"
                )
            print(line)
    os.remove(path)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
