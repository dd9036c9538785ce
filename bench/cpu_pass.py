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


def reference_pass(X, y, W, b):
    """Float64 loss and dW of the mean cross-entropy, by the textbook formula."""
    X64 = X.astype(np.float64)
    Z = X64 @ W.astype(np.float64) + b.astype(np.float64)
    loss = float(peers.textbook_softmax_grad_(np, Z, y).mean())
    return loss, X64.T @ Z / len(y)


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
    ref_loss, ref_dW = ref
    fn = peers.PEERS[name](*problem)
    loss, dW = fn()
    err = float(np.abs(np.asarray(dW, dtype=np.float64) - ref_dW).max() / np.abs(ref_dW).max())
    loss_err = abs(float(loss) - ref_loss) / abs(ref_loss)
    if err > RTOL or loss_err > RTOL:
        return {
            "check_failed": f"dW max rel err {err:.2e}, loss rel err {loss_err:.2e} against float64 "
            f"(tolerance {RTOL:g})"
        }
    times = time_runs(fn, repeats)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "max_rel_err": err,
        "loss_rel_err": loss_err,
    }


def run_workload(workload, names, repeats, ceiling):
    """Rows of results, one per implementation, for one :class:`~bench.workloads.Workload`.

    A peer that cannot run here is a ``skipped`` row with the reason; one that raises or
    disagrees with the reference is an ``error`` or ``check_failed`` row.  None stops the
    others.
    """
    try:
        problem = peers.make_problem(workload.n, workload.d, workload.c)
        ref = reference_pass(*problem)
    except MemoryError as exc:
        message = f"the problem and its float64 reference do not fit in memory ({exc})"
        return [{**workload.fields(), "implementation": name, "out_of_memory": message} for name in names]
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
