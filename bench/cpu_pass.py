"""One full-batch loss-and-gradient pass on the CPU: fastsoftmax against its peers.

Run from the repository root::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.cpu_pass --output bench/results/cpu_pass.json

Every implementation gets the same float32 problem in the same run, is checked
against a float64 reference before it is timed, and is reported with the ratio of its
time to the floor ``max(4 N D C / best SGEMM rate, 4 N D bytes / read bandwidth)``,
both ceilings measured in this run (``bench.ceilings``).
"""

import argparse
import json
import statistics
import time

import numpy as np

from . import ceilings, machine, peers

DEFAULT_WORKLOADS = ("200000x256x20", "200000x256x1000")


def reference_grad(X, y, W, b):
    """Float64 dW of the mean cross-entropy."""
    Z = X.astype(np.float64) @ W + b
    Z -= Z.max(axis=1, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(len(y)), y] -= 1
    return X.T.astype(np.float64) @ P / len(y)


def time_runs(fn, repeats):
    fn()  # warm-up: JIT compilation, thread pools, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_workload(spec, repeats, ceiling, names):
    n, d, c = (int(v) for v in spec.split("x"))
    X, y, W, b = peers.make_problem(n, d, c)
    flops = 4 * n * d * c
    x_bytes = X.nbytes
    floor = max(flops / ceiling["sgemm_best"], x_bytes / ceiling["read_bandwidth"])
    ref = reference_grad(X, y, W, b)
    rows = []
    for name in names:
        why_not = peers.available(name)
        if why_not:
            rows.append({"workload": spec, "implementation": name, "skipped": why_not})
            continue
        fn = peers.PEERS[name](X, y, W, b)
        _, dW = fn()
        err = float(np.abs(np.asarray(dW, dtype=np.float64) - ref).max() / np.abs(ref).max())
        if err > 1e-3:
            raise AssertionError(f"{name} disagrees with the float64 reference on {spec}: rel err {err:.2e}")
        times = time_runs(fn, repeats)
        median = statistics.median(times)
        rows.append(
            {
                "workload": spec,
                "implementation": name,
                "median_s": median,
                "min_s": min(times),
                "max_s": max(times),
                "rows_per_s": n / median,
                "gb_per_s": x_bytes / median / 1e9,
                "tflops": flops / median / 1e12,
                "floor_s": floor,
                "ratio_to_floor": median / floor,
                "max_rel_err": err,
            }
        )
    ours = next(r for r in rows if r["implementation"] == "fastsoftmax")
    for r in rows:
        if "median_s" in r:
            r["fastsoftmax_speedup"] = r["median_s"] / ours["median_s"]
    return rows


def print_table(rows, ceiling):
    print(
        f"ceilings: SGEMM numpy {ceiling['sgemm_numpy'] / 1e9:.0f} GFLOP/s, "
        f"torch {ceiling['sgemm_torch'] / 1e9 if ceiling['sgemm_torch'] else float('nan'):.0f} GFLOP/s, "
        f"read {ceiling['read_bandwidth'] / 1e9:.1f} GB/s"
    )
    header = (
        f"{'workload':<18}{'impl':<13}{'median ms':>10}{'spread ms':>12}{'Mrows/s':>9}{'GB/s':>7}"
        f"{'GFLOP/s':>9}{'floor ms':>9}{'x floor':>8}{'fs speedup':>11}"
    )
    print(header)
    for r in rows:
        if "skipped" in r:
            print(f"{r['workload']:<18}{r['implementation']:<13}skipped: {r['skipped']}")
            continue
        print(
            f"{r['workload']:<18}{r['implementation']:<13}{r['median_s'] * 1e3:>10.1f}"
            f"{(r['max_s'] - r['min_s']) * 1e3:>12.1f}{r['rows_per_s'] / 1e6:>9.2f}{r['gb_per_s']:>7.1f}"
            f"{r['tflops'] * 1e3:>9.0f}{r['floor_s'] * 1e3:>9.1f}{r['ratio_to_floor']:>8.2f}"
            f"{r['fastsoftmax_speedup']:>11.2f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(DEFAULT_WORKLOADS), help="N x D x C specs")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--peers", nargs="+", default=list(peers.PEERS), choices=list(peers.PEERS))
    parser.add_argument("--output", help="write results as JSON to this path")
    args = parser.parse_args(argv)
    ceiling = ceilings.measure()
    rows = [row for spec in args.workloads for row in run_workload(spec, args.repeats, ceiling, args.peers)]
    print_table(rows, ceiling)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {"machine": machine.describe("bench.cpu_pass"), "ceilings": ceiling, "results": rows},
                f,
                indent=2,
            )
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
