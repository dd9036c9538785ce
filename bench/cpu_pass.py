"""One full-batch loss-and-gradient pass on the CPU: fastsoftmax against its peers.

Every implementation (``bench.peers``) gets the same float32 problem in the same run, is
checked against a float64 reference before it is timed, and is reported with the ratio of
its time to the floor of ``bench.workloads``, from the ceilings of ``bench.ceilings``
measured in the same run.  ``python -m bench quick`` and ``python -m bench cpu`` run it.
"""

import statistics
import time
import traceback

import numpy as np

from . import peers
from .workloads import add_rates, add_speedups

RTOL = 1e-3  # float32 GEMMs over N rows round near 1e-6 relative: far below this, far above a bug


def reference_grad(X, y, W, b):
    """Float64 dW of the mean cross-entropy."""
    Z = X.astype(np.float64) @ W + b
    Z -= Z.max(axis=1, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(len(y)), y] -= 1
    return X.T.astype(np.float64) @ P / len(y)


def time_runs(fn, repeats):
    """Wall seconds of ``repeats`` calls of ``fn()``, after one untimed warm-up call."""
    fn()  # warm-up: JIT compilation, thread pools, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _measure(name, problem, ref, repeats):
    fn = peers.PEERS[name](*problem)
    _, dW = fn()
    err = float(np.abs(np.asarray(dW, dtype=np.float64) - ref).max() / np.abs(ref).max())
    if err > RTOL:
        return {"check_failed": f"dW max rel err {err:.2e} against float64 (tolerance {RTOL:g})"}
    times = time_runs(fn, repeats)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "max_rel_err": err,
    }


def run_workload(workload, names, repeats, ceiling):
    """Rows of results, one per implementation, for one :class:`~bench.workloads.Workload`.

    A peer that cannot run here is a ``skipped`` row with the reason; one that raises or
    disagrees with the reference is an ``error`` or ``check_failed`` row.  None stops the
    others.
    """
    problem = peers.make_problem(workload.n, workload.d, workload.c)
    ref = reference_grad(*problem)
    floor_s = workload.floor_s(ceiling["gemm_best"], ceiling["read_bandwidth"])
    rows = []
    for name in names:
        row = {**workload.fields(), "implementation": name}
        why_not = peers.available(name)
        if why_not:
            row["skipped"] = why_not
        else:
            try:
                row.update(_measure(name, problem, ref, repeats))
            except Exception as exc:  # noqa: BLE001 (one implementation's failure is its row's finding)
                traceback.print_exc()
                row["error"] = f"{type(exc).__name__}: {exc}"
        if "median_s" in row:
            add_rates(row, floor_s)
        rows.append(row)
    add_speedups(rows)
    return rows
