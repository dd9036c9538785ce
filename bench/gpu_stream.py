"""A pass over a data set larger than device memory: host-to-device rate and copy-compute overlap.

Run from the repository root, on a machine with a CUDA device, CuPy and numba-cuda::

    python -m bench.gpu_stream --output bench/results/gpu_stream.json

What is measured (float32 throughout):

host-to-device bandwidth
    ``cudaMemcpyAsync`` of 256 MiB, 512 MiB and 1 GiB from one pinned (page-locked) host
    buffer to the device, timed with CUDA events: median of ``BANDWIDTH_REPEATS`` after a
    warm-up copy.  The same copies from pageable memory, for reference, timed on the host up
    to the end of the copy (a pageable copy is staged by the driver through its own pinned
    buffers, partly before the call returns, so events would miss part of it).  The best
    pinned median is the rate the streamed passes are compared with.
streamed pass
    One ``SoftmaxObjective.loss_grad`` pass over X held in host memory, with CuPy's memory
    pool capped at ``--pool-limit-gib`` (2 GiB) and X ``--dataset-gib`` large (8 GiB): X is
    four times the device memory the pass may use, so the CUDA backend keeps it on the host
    (``CudaBackend.resident``, which page-locks it) and copies each piece to the device while
    the previous one is computed on.  N = dataset bytes / (4 D), for each D in
    ``--features`` (256, 1024) and C in ``--classes`` (20, 1000).  The pieces are sized by
    the backend (``max_chunk_rows``) once, then fixed, so every timed pass does the same
    work.  Time per pass: the median of ``--repeats`` host wall times after a warm-up pass
    (which compiles the kernels and allocates the buffers); a pass ends with its loss on the
    host, which waits for every kernel of the pass.
    ``effective H2D = dataset bytes / pass time``, and its ratio to the pinned bandwidth
    (``TARGET``: at least 0.80).  The ratio can only reach 1 when the pass is bound by the
    copy: ``copy_bound`` says whether copying X at the pinned rate takes longer than the
    resident pass's compute, and ``overlap = max(copy time, resident pass time) / streamed
    pass time`` is how close the pass comes to perfect overlap either way.
staged pass
    The same with X in pageable memory, as pieces from a data source are: each piece is
    first copied into a pinned staging buffer by host threads.
resident pass
    The same pass with the cap lifted and X copied to the device beforehand (outside the
    timing): the compute alone.  The streamed and staged losses and gradients are checked
    against it: relative errors below ``RTOL`` (1e-3; only the piece boundaries differ, so
    float32 rounding of sums over millions of rows is all that separates them).

Budget: about a minute on an H100 (host memory: 8 GiB for X, plus the staging buffers).
CuPy is imported inside the functions, so the module imports without it.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import gpu_ceilings, gpu_pass, machine
from .report import log

GIB = 1 << 30
BANDWIDTH_SIZES = (256 << 20, 512 << 20, 1 << 30)
BANDWIDTH_REPEATS = 10
TARGET = 0.80  # effective host-to-device rate of a copy-bound streamed pass, over the pinned rate
RTOL = 1e-3
_HOST_TO_DEVICE = 1  # cudaMemcpyKind


# -- data ---------------------------------------------------------------------------------------
def host_dataset(nbytes, seed=0, n_threads=None):
    """A flat float32 array of ``nbytes``, uniform in [-1, 1), in pageable host memory.

    Filled by several threads (NumPy's generators release the GIL), each with its own
    stream of a seed sequence, so 8 GiB take a second or two instead of half a minute.
    """
    X = np.empty(nbytes // 4, np.float32)
    n_parts = max(1, n_threads or min(16, os.cpu_count() or 1))
    bounds = np.linspace(0, X.size, n_parts + 1).astype(np.int64)
    seeds = np.random.SeedSequence(seed).spawn(n_parts)

    def fill(part):
        view = X[bounds[part] : bounds[part + 1]]
        np.random.default_rng(seeds[part]).random(out=view, dtype=np.float32)
        view *= 2
        view -= 1

    with ThreadPoolExecutor(n_parts) as pool:
        list(pool.map(fill, range(n_parts)))
    return X


def make_workload(X_flat, n_features, n_classes, seed=0):
    """``X, y, W, b``: X a (N, D) view of ``X_flat`` (N = its size // D), random labels and weights.

    Logits ``X W + b`` have a standard deviation of about 0.6: every class keeps a fair
    probability, so the gradient is dense and of order one.
    """
    n = X_flat.size // n_features
    X = X_flat[: n * n_features].reshape(n, n_features)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    W = (rng.standard_normal((n_features, n_classes)) / np.sqrt(n_features)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n_classes)).astype(np.float32)
    return X, y, W, b


# -- the device ---------------------------------------------------------------------------------
def h2d_bandwidths(sizes=BANDWIDTH_SIZES, repeats=BANDWIDTH_REPEATS):
    """Median host-to-device bytes/s per copy size, from pinned and from pageable memory.

    Returns
    -------
    dict
        ``pinned`` and ``pageable``: ``{size in bytes: bytes/s}``; ``pinned_best``: the
        largest pinned median.
    """
    import cupy
    import cupyx

    largest = max(sizes)
    pinned = cupyx.empty_pinned(largest, dtype=np.uint8)
    pinned[:] = 1
    pageable = np.ones(largest, np.uint8)  # every page touched: no first-touch faults timed
    device = cupy.empty(largest, dtype=cupy.uint8)
    result = {"pinned": {}, "pageable": {}}
    for size in sizes:
        times = gpu_ceilings.event_times(_copier(device, pinned, size), repeats)
        result["pinned"][size] = size / float(np.median(times))
        wall = []
        gpu_ceilings.event_times(_copier(device, pageable, size), repeats, wall_times=wall)
        result["pageable"][size] = size / float(np.median(wall))
    result["pinned_best"] = max(result["pinned"].values())
    return result


def _copier(device, host, size):
    """A call that queues ``cudaMemcpyAsync`` of ``size`` bytes from ``host`` to ``device`` on CuPy's stream."""
    import cupy

    stream = cupy.cuda.get_current_stream()
    return lambda: cupy.cuda.runtime.memcpyAsync(
        device.data.ptr, host.ctypes.data, size, _HOST_TO_DEVICE, stream.ptr
    )


@contextlib.contextmanager
def capped_pool(limit):
    """CuPy's memory pool limited to ``limit`` bytes inside the block: a smaller GPU, as the backend sees it."""
    import cupy

    pool = cupy.get_default_memory_pool()
    previous = pool.get_limit()
    pool.free_all_blocks()  # cached blocks count against the limit
    pool.set_limit(size=limit)
    try:
        yield
    finally:
        pool.set_limit(size=previous)


def to_device_in_slices(X, slice_bytes=256 << 20):
    """X copied to the device 256 MiB at a time (``cupy.asarray`` would pin a staging buffer as large as X)."""
    import cupy

    X_device = cupy.empty(X.shape, X.dtype)
    step = max(1, slice_bytes // max(1, X[:1].nbytes))
    for lo in range(0, len(X), step):
        X_device[lo : lo + step].set(X[lo : lo + step])
    return X_device


# -- the passes ---------------------------------------------------------------------------------
def timed_passes(objective, params, repeats):
    """Wall times of ``repeats`` passes after a warm-up one, and the last pass's result on the host.

    ``loss_grad`` returns the loss as a Python float, which waits for the pass's kernels
    (all on one stream), so a wall time covers the whole pass.
    """
    backend = objective.backend
    start = time.perf_counter()
    objective.loss_grad(params)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss, (dW, db) = objective.loss_grad(params)
        times.append(time.perf_counter() - start)
    return {"first_pass_s": first, "times_s": times, **gpu_pass.summarize(times)}, (
        loss,
        backend.to_host(dW),
        backend.to_host(db),
    )


def measure_workload(backend, X, y, W, b, repeats, cap, to_device, is_pinned):
    """The pass over X streamed from the host (page-locked, then pageable), then resident on the device.

    Parameters
    ----------
    backend : Backend
    X : ndarray of shape (n_samples, n_features), float32, in pageable host memory
    y, W, b : host arrays
    repeats : int
    cap : callable
        Returns the context manager inside which X must stay on the host
        (:func:`capped_pool`).
    to_device : callable
        ``X -> `` X on the device, for the resident pass (:func:`to_device_in_slices`).
    is_pinned : callable
        ``host array -> bool``: whether its pages are locked.

    Returns
    -------
    dict
        ``streamed`` (X as ``backend.resident`` keeps it), ``staged`` (X as given) and
        ``resident``: times (``place_s``: of putting X where the pass reads it, which
        for ``streamed`` is locking its pages), rows per piece, pieces, whether X was on
        the host and pinned;
        for the first two, ``loss_rel_err``, ``dW_max_rel_err`` and ``db_max_rel_err``
        against the resident pass.
    """
    from fastsoftmax import SoftmaxObjective

    n_classes = W.shape[1]
    args = (backend.asarray(y), backend.asarray(np.ones(len(y), np.float32)), n_classes)
    params = (backend.asarray(W), backend.asarray(b))
    runs, results = {}, {}
    for name, place, context in (
        ("streamed", backend.resident, cap),
        ("staged", lambda X: X, cap),
        ("resident", to_device, contextlib.nullcontext),
    ):
        with context():
            start = time.perf_counter()
            X_placed = place(X)
            place_s = time.perf_counter() - start
            objective = SoftmaxObjective(backend, X_placed, *args)
            objective.chunk_rows = rows = backend.max_chunk_rows(X_placed, n_classes) or len(X)
            runs[name], results[name] = timed_passes(objective, params, repeats)
            on_host = isinstance(X_placed, np.ndarray)
            runs[name].update(
                place_s=place_s,
                rows_per_piece=rows,
                pieces=math.ceil(len(X) / rows),
                on_host=on_host,
                pinned=on_host and bool(is_pinned(X_placed)),
            )
            del X_placed, objective
    loss_ref, dW_ref, db_ref = results["resident"]
    for name in ("streamed", "staged"):
        loss, dW, db = results[name]
        runs[name].update(
            loss_rel_err=abs(loss - loss_ref) / abs(loss_ref),
            dW_max_rel_err=gpu_pass.max_rel_err(dW, dW_ref),
            db_max_rel_err=gpu_pass.max_rel_err(db, db_ref),
        )
    return runs


def workload_row(measured, n_samples, n_features, n_classes, pool_limit, pinned_bandwidth):
    """One result row: the measurements, the rates derived from them, and the check."""
    nbytes = 4 * n_samples * n_features
    resident_s = measured["resident"]["median_s"]
    copy_s = nbytes / pinned_bandwidth
    row = {
        "n_samples": n_samples,
        "n_features": n_features,
        "n_classes": n_classes,
        "dataset_bytes": nbytes,
        "pool_limit_bytes": pool_limit,
        **measured,
        "copy_s": copy_s,
        "pinned_h2d_gb_per_s": pinned_bandwidth / 1e9,
        "copy_bound": copy_s >= resident_s,
        "target": TARGET,
    }
    for name in ("streamed", "staged"):
        run = row[name]
        run["effective_h2d_gb_per_s"] = nbytes / run["median_s"] / 1e9
        run["ratio_to_pinned"] = nbytes / run["median_s"] / pinned_bandwidth
        run["overlap"] = max(copy_s, resident_s) / run["median_s"]
    row["meets_target"] = row["streamed"]["ratio_to_pinned"] >= TARGET
    problems = []
    for name in ("streamed", "staged"):
        run = row[name]
        if not run["on_host"]:
            problems.append(f"{name}: X was on the device under the pool limit, so nothing streamed")
        errors = [run["loss_rel_err"], run["dW_max_rel_err"], run["db_max_rel_err"]]
        if not all(e <= RTOL for e in errors):  # a NaN error is not <=
            worst = np.max(errors)  # NaN if any is
            problems.append(
                f"{name}: result differs from the resident one by {worst:.2e} (tolerance {RTOL:g})"
            )
    if measured["resident"]["on_host"]:
        problems.append("resident: X was on the host without the pool limit")
    if problems:
        row["check_failed"] = "; ".join(problems)
    return row


# -- reporting ----------------------------------------------------------------------------------
def _log(message):
    log(message, source="gpu_stream")


def print_bandwidths(bandwidth):
    for kind in ("pinned", "pageable"):
        rates = ", ".join(f"{size >> 20} MiB {rate / 1e9:.1f}" for size, rate in bandwidth[kind].items())
        print(f"host-to-device {kind}: {rates} GB/s")


def print_table(rows):
    print(
        f"{'D':>5}{'C':>6}{'N':>10}{'pieces':>7}{'locked ms':>10}{'staged ms':>10}{'resident ms':>12}"
        f"{'copy ms':>9}{'GB/s':>6}{'x pinned':>9}{'staged x':>9}{'overlap':>8}  check"
    )
    for r in rows:
        streamed, staged = r["streamed"], r["staged"]
        if r["copy_bound"]:
            verdict = f"copy-bound, {'meets' if r['meets_target'] else 'MISSES'} target {r['target']:.2f}"
        else:
            verdict = "compute-bound"
        if not streamed["pinned"]:
            verdict += ", X not page-locked"
        print(
            f"{r['n_features']:>5}{r['n_classes']:>6}{r['n_samples']:>10}{streamed['pieces']:>7}"
            f"{streamed['median_s'] * 1e3:>10.1f}{staged['median_s'] * 1e3:>10.1f}"
            f"{r['resident']['median_s'] * 1e3:>12.1f}{r['copy_s'] * 1e3:>9.1f}"
            f"{streamed['effective_h2d_gb_per_s']:>6.1f}{streamed['ratio_to_pinned']:>9.2f}"
            f"{staged['ratio_to_pinned']:>9.2f}{streamed['overlap']:>8.2f}  {r.get('check_failed', 'ok')}; {verdict}"
        )


def _write_json(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)


def require_gpu():
    """Exit with a message naming what is missing, before any device time is spent."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # noqa: BLE001 (ImportError, or CUDA libraries that fail to load)
        raise SystemExit(
            f"bench.gpu_stream needs CuPy, which did not import ({type(exc).__name__}: {exc}); "
            "pip install cupy-cuda13x and run on a machine with an NVIDIA GPU"
        ) from None
    from fastsoftmax.backends import cuda_simulated, cuda_unavailable_reason

    reason = "Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM)" if cuda_simulated() else None
    reason = reason or cuda_unavailable_reason()
    if reason:
        raise SystemExit(f"bench.gpu_stream needs fastsoftmax's CUDA backend on a GPU: {reason}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_stream", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", help="write results as JSON to this path (rewritten after every workload)"
    )
    parser.add_argument("--dataset-gib", type=float, default=8.0, help="size of X in host memory")
    parser.add_argument(
        "--pool-limit-gib", type=float, default=2.0, help="CuPy pool limit of the streamed passes"
    )
    parser.add_argument("--features", type=int, nargs="+", default=[256, 1024], help="values of D")
    parser.add_argument("--classes", type=int, nargs="+", default=[20, 1000], help="values of C")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if min(args.classes) < 2 or min(args.features) < 1:
        parser.error("--classes must be at least 2 and --features at least 1")
    if not 0 < args.pool_limit_gib < args.dataset_gib:
        parser.error("--pool-limit-gib must be positive and below --dataset-gib, or nothing streams")
    return args


def main(argv=None):
    """Run the benchmark; return 0, or 1 when a check failed (the reasons are printed)."""
    args = parse_args(argv)
    require_gpu()
    import cupy

    from fastsoftmax.backends.cuda import CudaBackend

    description = machine.describe(machine.module_command("bench.gpu_stream", argv))
    dataset_bytes = int(args.dataset_gib * GIB) // 4 * 4
    pool_limit = int(args.pool_limit_gib * GIB)
    payload = {
        "machine": description,
        "gpu": machine.describe_gpu(),
        "settings": {
            "dtype": "float32",
            "dataset_bytes": dataset_bytes,
            "pool_limit_bytes": pool_limit,
            "repeats": args.repeats,
            "bandwidth_repeats": BANDWIDTH_REPEATS,
            "target": TARGET,
            "rtol": RTOL,
            "seed": args.seed,
        },
    }
    gpu = payload["gpu"]
    print(
        f"device: {gpu['name']}, CUDA driver {gpu['driver_cuda_version']}, runtime {gpu['runtime_cuda_version']}, "
        f"CuPy {gpu['versions']['cupy']}, numba-cuda {gpu['versions']['numba-cuda']}"
    )
    _log("host-to-device bandwidth")
    payload["bandwidth"] = bandwidth = h2d_bandwidths()
    gpu_ceilings.free_device_memory()
    _write_json(args.output, payload)
    _log(f"generating {dataset_bytes / GIB:.1f} GiB of X in host memory")
    X_flat = host_dataset(dataset_bytes, args.seed)

    payload["results"] = rows = []
    backend = CudaBackend()
    for n_features in args.features:
        for n_classes in args.classes:
            X, y, W, b = make_workload(X_flat, n_features, n_classes, args.seed)
            _log(f"D={n_features} C={n_classes} N={len(X)}")
            measured = measure_workload(
                backend,
                X,
                y,
                W,
                b,
                args.repeats,
                cap=lambda: capped_pool(pool_limit),
                to_device=to_device_in_slices,
                is_pinned=lambda a: cupy.cuda.pinned_memory.is_memory_pinned(a.ctypes.data),
            )
            rows.append(
                workload_row(measured, len(X), n_features, n_classes, pool_limit, bandwidth["pinned_best"])
            )
            gpu_ceilings.free_device_memory()
            _write_json(args.output, payload)

    print_bandwidths(bandwidth)
    print_table(rows)
    if args.output:
        print(f"wrote {args.output}")
    failed = [r for r in rows if "check_failed" in r]
    for r in failed:
        print(f"FAILED D={r['n_features']} C={r['n_classes']}: {r['check_failed']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
