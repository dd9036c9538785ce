"""One Dask loss-and-gradient pass on 1 and 2 workers against the in-memory pass, its bytes, a model.

Run from the repository root::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.dask_scaling

For 1 and 2 workers (``distributed.LocalCluster``: processes, one thread each,
``FASTSOFTMAX_NUM_THREADS=1``, checked on the workers) it generates a float32 problem
of N x D with C classes in P partitions *on the workers* (``dask.array`` random; the
client never holds X), persists it, and times ``DaskObjective.loss_grad`` (one L-BFGS
evaluation: graph, tasks, tree reduction, result on the client).  The same data,
generated in this process, gives the in-memory baseline: ``fastsoftmax.loss_and_grad``
on the CPU backend with 1 and with 2 threads; k workers are compared with k threads.
Tiny passes (64 rows per partition, 1 to 4P partitions) measure the overhead of a pass,
fitted as ``fixed + per_task * tasks + per_level * depth``.

Bytes per pass are computed from the pickled sizes (an upper bound: every edge of the
reduction tree counted as a transfer) and measured from the workers'
``transfer_outgoing_log`` and ``transfer_incoming_log`` (distributed's records of
every transfer between workers, and from a worker to the scheduler for the client).

The scaling model (64 CPU workers, 8 GPUs) combines these measurements with an
assumed network bandwidth (``--bandwidth``) and, for GPUs, the H100 resident passes
of ``bench/results/gpu_h100_2026-11-26/gpu_stream.json``: it is a model, not a
measurement.  Writes ``results.json`` and ``report.txt`` to ``--output`` (default
``bench/results/dask_<date>/``).
"""

import argparse
import itertools
import json
import logging
import os
import pickle
import statistics
import sys
from pathlib import Path

import dask
import dask.array as da
import distributed
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from fastsoftmax import get_backend, loss_and_grad
from fastsoftmax.backends.cpu import NumpyBackend
from fastsoftmax.dask import DaskObjective
from fastsoftmax.dask.objective import SPLIT_EVERY, partition_sums

from . import machine
from .cpu_pass import RTOL, time_runs
from .suite import _Recorder, default_directory
from .workloads import Workload

WORKERS = (1, 2)
TINY_ROWS = 64  # rows per partition of a tiny pass: its compute is negligible beside its overhead
TINY_REPEATS = 10
H100_PASSES = Path(__file__).parent / "results" / "gpu_h100_2026-11-26" / "gpu_stream.json"
# Shapes of the model's table besides the measured one: those the H100 passes measured.
MODEL_SHAPES = ((256, 20), (1024, 20), (256, 1000), (1024, 1000))
TARGETS = (("64 CPU workers", "cpu", 64), ("8 GPUs", "gpu", 8))


def make_problem(n, d, c, partitions, seed=0):
    """Lazy float32 X, int64 labels and unit weights in ``partitions`` row chunks, generated where computed."""
    rows = -(-n // partitions)
    X = da.random.default_rng(seed).standard_normal((n, d), chunks=(rows, d), dtype=np.float32)
    y = da.random.default_rng(seed + 1).integers(0, c, n, chunks=rows)
    return X, y, da.ones(n, chunks=rows, dtype=np.float32)


def make_params(d, c):
    rng = np.random.default_rng(2)
    return (0.01 * rng.standard_normal((d, c))).astype(np.float32), np.zeros(c, np.float32)


def stepping(params):
    """A function returning ``params`` with the bias moved a little further at each call.

    A pass's task keys hash its parameters: passes at equal parameters would share keys,
    and Dask may hand back the previous pass's result, still held, instead of computing.
    """
    W, b = params
    steps = itertools.count(1)
    return lambda: (W, b + np.float32(1e-6) * next(steps))


def tree_shape(partitions, split_every=SPLIT_EVERY):
    """``(adds, depth)``: internal nodes and levels of :func:`fastsoftmax.dask.objective.tree_sum`."""
    adds = depth = 0
    while partitions > 1:
        partitions = -(-partitions // split_every)
        adds += partitions
        depth += 1
    return adds, depth


def n_tasks(partitions):
    """Tasks of one pass: the parameters, one per partition, the adds."""
    return 1 + partitions + tree_shape(partitions)[0]


def message_sizes(d, c):
    """Pickled bytes of the parameters and of one partition's ``(loss, dW, db, weight)``."""
    params = make_params(d, c)
    part = (np.zeros((1, d), np.float32), np.zeros(1, np.int64), np.ones(1, np.float32))
    partial = partition_sums(part, params, c, True, "cpu")
    return len(pickle.dumps(params, protocol=5)), len(pickle.dumps(partial, protocol=5))


def computed_volume(d, c, partitions, workers):
    """Bytes per pass from the sizes: each worker receives the parameters once; every tree edge moves."""
    params_bytes, partial_bytes = message_sizes(d, c)
    edges = partitions + tree_shape(partitions)[0]  # each partition and each add sends its sums up once
    return {
        "params_bytes": params_bytes,
        "partial_bytes": partial_bytes,
        "workers": workers,
        "edges": edges,
        "broadcast_bytes": params_bytes * workers,
        "reduction_bytes_upper": partial_bytes * edges,
        "total_bytes_upper": params_bytes * workers + partial_bytes * edges,
    }


def summary(times):
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
    }


# -- in memory ------------------------------------------------------------------------------
def in_memory_passes(args, params):
    """The pass on the whole array in this process, with 1 and 2 threads; the 2-thread result for checks."""
    X, y, sw = dask.compute(
        *make_problem(args.rows, args.features, args.classes, args.partitions), scheduler="threads"
    )
    W, b = params
    rows = []
    for threads in WORKERS:
        backend = NumpyBackend(n_threads=threads)
        # One thread means BLAS too: the backend leaves BLAS alone when it runs unthreaded.
        with threadpool_limits(1 if threads == 1 else None, user_api="blas"):
            times = time_runs(
                lambda be=backend: loss_and_grad(X, y, W, b, sample_weight=sw, backend=be), args.repeats
            )
        rows.append(
            {"threads": threads, **summary(times), "rows_per_s": args.rows / statistics.median(times)}
        )
    loss, dW, db = loss_and_grad(X, y, W, b, sample_weight=sw, backend=NumpyBackend(n_threads=max(WORKERS)))
    return rows, (loss, dW, db)


# -- on a cluster ---------------------------------------------------------------------------
def _worker_threads():
    """Threads a pass may use on this worker: fastsoftmax's CPU backend and BLAS."""
    return {
        "fastsoftmax": get_backend("cpu").n_threads,
        "blas": sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}),
    }


def _log_mark(dask_worker):
    # The clock the transfer logs use: the worker's, shifted to the scheduler's.
    return distributed.metrics.time() + dask_worker.scheduler_delay


def _key_kind(key):
    if isinstance(key, tuple) or key.startswith("bundle-"):  # a partition's data, moved to balance the work
        return "data partitions"
    return "partial sums" if key.startswith(("partition_sums-", "_add-")) else "parameters"


def _transfers_since(dask_worker, mark):
    """This worker's transfers that started after ``mark``, from distributed's transfer logs."""
    since = mark[dask_worker.address]
    outgoing = [e for e in dask_worker.transfer_outgoing_log if e["start"] >= since]
    return {
        "outgoing": [
            (e["who"], [(_key_kind(k), n) for k, n in e["keys"].items()], e["compressed"]) for e in outgoing
        ],
        "incoming_bytes": sum(e["total"] for e in dask_worker.transfer_incoming_log if e["start"] >= since),
        "outgoing_bytes_total": dask_worker.transfer_outgoing_bytes_total,
    }


def measured_volume(client, run_passes, passes):
    """Bytes moved per pass by ``run_passes()``, from the workers' transfer logs.

    Per route (to another worker; to the scheduler, which fetches the result for the
    client), the bytes of each kind of value (Dask's ``sizeof`` estimates), the bytes
    the TCP comm wrote (``wire_bytes``: serialised frames and headers) and the transfers.
    """
    addresses = set(client.scheduler_info()["workers"])
    counters = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
    mark = client.run(_log_mark)
    run_passes()
    logs = client.run(_transfers_since, mark=mark)
    routes = {}
    for log in logs.values():
        for who, values, wire in log["outgoing"]:
            route = routes.setdefault(
                "worker->worker" if who in addresses else "worker->client (via the scheduler)",
                {"wire_bytes": 0, "transfers": 0},
            )
            for kind, nbytes in values:
                route[kind] = route.get(kind, 0) + nbytes
            route["wire_bytes"] += wire
            route["transfers"] += 1
    grown = sum(log["outgoing_bytes_total"] - counters[a] for a, log in logs.items())
    return {
        "per_pass": {name: {k: v / passes for k, v in row.items()} for name, row in sorted(routes.items())},
        "incoming_bytes_per_pass": sum(log["incoming_bytes"] for log in logs.values()) / passes,
        "outgoing_bytes_total_per_pass": grown / passes,
        "passes": passes,
    }


def persisted_objective(n, d, c, partitions):
    """The objective over a problem generated on the cluster's workers (it persists the partitions)."""
    objective = DaskObjective(*make_problem(n, d, c, partitions), c, 0.0, True, np.float32, "cpu")
    distributed.wait(objective.partitions)
    return objective


def fit_overhead(tiny):
    """Least squares ``seconds = fixed + per_task * tasks + per_level * depth`` over the tiny passes."""
    A = np.array([[1.0, t["tasks"], t["depth"]] for t in tiny])
    coef, *_ = np.linalg.lstsq(A, np.array([t["median_s"] for t in tiny]), rcond=None)
    return dict(zip(("fixed_s", "per_task_s", "per_level_s"), coef.tolist()))


def replicas(client, data):
    """Copies of the persisted partitions on the workers: one each until the scheduler copies some."""
    return sum(len(holders) for holders in client.who_has(distributed.futures_of(data)).values())


def cluster_run(workers, args, params, reference):
    """Every measurement on a cluster of ``workers`` single-threaded worker processes."""
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env={"FASTSOFTMAX_NUM_THREADS": "1"},
    )
    with cluster, distributed.Client(cluster) as client:
        threads = client.run(_worker_threads)
        moved = stepping(params)
        objective = persisted_objective(args.rows, args.features, args.classes, args.partitions)
        partitions = len(objective.partitions)
        copies = [replicas(client, objective.partitions)]
        times = []
        volume = measured_volume(
            client,
            lambda: times.extend(time_runs(lambda: objective.loss_grad(moved()), args.repeats)),
            passes=args.repeats + 1,  # time_runs's warm-up moves the same bytes as a timed pass
        )
        copies.append(replicas(client, objective.partitions))
        result = objective.graph(moved()).compute()
        loss, (dW, _) = objective.loss_grad(params)
        tiny = []
        for p in sorted({1, 2, SPLIT_EVERY, partitions, 4 * partitions}):
            small = persisted_objective(TINY_ROWS * p, args.features, args.classes, p)
            tiny_times = time_runs(lambda o=small: o.loss_grad(moved()), TINY_REPEATS)
            tiny.append(
                {"partitions": p, "tasks": n_tasks(p), "depth": tree_shape(p)[1], **summary(tiny_times)}
            )
    ref_loss, ref_dW, _ = reference
    adds, depth = tree_shape(partitions)
    return {
        "workers": workers,
        "partitions": partitions,
        "tree": {"adds": adds, "depth": depth, "tasks": n_tasks(partitions)},
        "worker_threads": list(threads.values()),
        **summary(times),
        "rows_per_s": args.rows / statistics.median(times),
        "check": {
            "loss_rel_err": abs(loss - ref_loss) / abs(ref_loss),
            "dW_max_rel_err": float(np.abs(dW - ref_dW).max() / np.abs(ref_dW).max()),
        },
        "volume_computed": computed_volume(args.features, args.classes, partitions, workers),
        "volume_measured": volume,
        "data_copies": {"partitions": partitions, "before": copies[0], "after": copies[1]},
        "client_result_bytes": len(pickle.dumps(result, protocol=5)),
        "tiny_passes": tiny,
        "overhead_fit": fit_overhead(tiny),
    }


# -- the model ------------------------------------------------------------------------------
def gpu_seconds_per_row():
    """``{(D, C): seconds per row}`` of the H100's resident single-GPU passes, or a reason there are none."""
    try:
        results = json.loads(H100_PASSES.read_text())["results"]
    except (OSError, KeyError, ValueError) as exc:
        return f"no H100 passes ({H100_PASSES.name}: {exc})"
    return {(r["n_features"], r["n_classes"]): r["resident"]["median_s"] / r["n_samples"] for r in results}


def scaling_model(args, cpu_seconds, overhead, bandwidth):
    """Projected pass times for the targets of ``TARGETS``, one row per target and shape.

    time = compute(N / workers) + fixed + per_task * tasks + per_level * depth + volume / bandwidth

    CPU compute: the measured one-thread in-memory pass, scaled by flops (4 N D C).  GPU
    compute: the H100's resident pass at that shape, scaled by rows (shapes it did not
    measure have none).  Volume: the computed upper bound.  Overhead coefficients below
    zero (noise) count as zero.
    """
    per_flop = cpu_seconds / Workload("", args.rows, args.features, args.classes).flops
    gpu_rows = gpu_seconds_per_row()
    shapes = [(args.features, args.classes)] + [s for s in MODEL_SHAPES if s != (args.features, args.classes)]
    coef = {k: max(0.0, v) for k, v in overhead.items()}
    rows = []
    for target, kind, workers in TARGETS:
        depth = tree_shape(workers)[1]
        overhead_s = coef["fixed_s"] + coef["per_task_s"] * n_tasks(workers) + coef["per_level_s"] * depth
        for d, c in shapes:
            volume = computed_volume(d, c, workers, workers)["total_bytes_upper"]
            transfer = volume / bandwidth
            communication = overhead_s + transfer
            if kind == "cpu":
                per_row = per_flop * 4 * d * c
            else:
                per_row = gpu_rows.get((d, c)) if isinstance(gpu_rows, dict) else None
            row = {
                "target": target,
                "workers": workers,
                "depth": depth,
                "tasks": n_tasks(workers),
                "features": d,
                "classes": c,
                "overhead_s": overhead_s,
                "volume_bytes": volume,
                "transfer_s": transfer,
            }
            if per_row is None:
                row["compute_s"] = None
            else:
                compute = per_row * args.rows / workers
                row.update(
                    compute_s=compute,
                    total_s=compute + communication,
                    communication_share=communication / (compute + communication),
                    crossover_rows_per_worker=communication / per_row,
                )
            rows.append(row)
    return {
        "assumed_bandwidth_bytes_per_s": bandwidth,
        "overhead_used": coef,
        "gpu_source": str(H100_PASSES.relative_to(Path(__file__).parent.parent)),
        "gpu_note": gpu_rows if isinstance(gpu_rows, str) else None,
        "rows": rows,
    }


# -- the report -----------------------------------------------------------------------------
def _ms(seconds):
    return f"{seconds * 1e3:.2f}"


def _volume_lines(runs):
    first = runs[0]["volume_computed"]
    lines = [
        "bytes per pass, computed (an upper bound: every edge of the reduction tree counted as a transfer):",
        f"  (W, b) pickled: {first['params_bytes']:,} B, received once by each worker",
        f"  (loss, dW, db, weight) pickled: {first['partial_bytes']:,} B (dW in float64, whatever the fit's dtype), "
        f"sent up each of {first['edges']} edges (partitions + adds)",
    ]
    for run in runs:
        v = run["volume_computed"]
        lines.append(
            f"  {run['workers']} worker(s): {v['broadcast_bytes']:,} + {v['reduction_bytes_upper']:,} = "
            f"{v['total_bytes_upper']:,} B"
        )
    lines.append(
        "bytes per pass, measured (the workers' transfer_outgoing_log: Dask's sizeof of each kind of value; "
        "bytes on the wire; transfers):"
    )
    for run in runs:
        measured = run["volume_measured"]
        for route, row in measured["per_pass"].items():
            kinds = ", ".join(
                f"{k} {v:,.0f} B" for k, v in row.items() if k not in ("wire_bytes", "transfers")
            )
            lines.append(
                f"  {run['workers']} worker(s), {route}: {kinds}; {row['wire_bytes']:,.0f} B on the wire in "
                f"{row['transfers']:.2f} transfers"
            )
        lines.append(
            f"  {run['workers']} worker(s): transfer_outgoing_bytes_total grew "
            f"{measured['outgoing_bytes_total_per_pass']:,.0f} B per pass, transfer_incoming_log "
            f"{measured['incoming_bytes_per_pass']:,.0f} B; the client receives {run['client_result_bytes']:,} B "
            "(the result, pickled)"
        )
        copies = run["data_copies"]  # the scheduler copies a partition to run its task elsewhere
        lines.append(
            f"  {run['workers']} worker(s): copies of the {copies['partitions']} persisted partitions (X, y and "
            f"the weights, bundled) on the workers: {copies['before']} before the passes, {copies['after']} after"
        )
    lines.append(
        "  (data partitions: a partition copied to another worker to run its task there, as Dask's work "
        "stealing balances the load; the computed volume and the model leave them out)"
    )
    lines.append(
        "  (the parameters reach their first worker inside the graph the client sends the scheduler; "
        "no worker counter records that copy)"
    )
    return lines


def _model_lines(model):
    bandwidth = model["assumed_bandwidth_bytes_per_s"]
    coef = model["overhead_used"]
    lines = [
        "scaling model (NOT a measurement): time = compute(N / workers) + overhead + volume / bandwidth",
        f"  overhead = {_ms(coef['fixed_s'])} ms + {_ms(coef['per_task_s'])} ms x tasks + "
        f"{_ms(coef['per_level_s'])} ms x depth (fitted to the 2-worker tiny passes on this 2-core machine, "
        "where client, scheduler and workers share the cores; per task counts every task as serial)",
        f"  volume: the computed upper bound, at an ASSUMED network bandwidth of {bandwidth / 1e9:g} GB/s",
        "  CPU workers: one core each, compute = the 1-thread in-memory pass scaled by flops (4 N D C)",
        f"  GPUs: compute = the single-GPU resident pass (H100, {model['gpu_source']}) scaled by rows, at the "
        "shapes it measured; none elsewhere",
        f"  {'target':<16}{'D x C':>12}{'compute ms':>12}{'overhead ms':>13}{'transfer ms':>13}{'volume MB':>11}"
        f"{'total ms':>10}{'comm share':>12}{'rows/worker at parity':>23}",
    ]
    if model["gpu_note"]:
        lines.insert(5, f"  ({model['gpu_note']})")
    for r in model["rows"]:
        head = (
            f"  {r['target']:<16}{r['features']:>6} x {r['classes']:<5}"
            f"{'n/a' if r['compute_s'] is None else _ms(r['compute_s']):>12}{_ms(r['overhead_s']):>13}"
            f"{_ms(r['transfer_s']):>13}{r['volume_bytes'] / 1e6:>11.2f}"
        )
        if r["compute_s"] is not None:
            head += (
                f"{_ms(r['total_s']):>10}{r['communication_share']:>12.2f}"
                f"{r['crossover_rows_per_worker']:>23,.0f}"
            )
        lines.append(head)
    for target, *_ in TARGETS:
        rows = [r for r in model["rows"] if r["target"] == target and r["compute_s"] is not None]
        dominated = [f"{r['features']} x {r['classes']}" for r in rows if r["communication_share"] > 0.5]
        lines.append(
            f"  {target}: communication (overhead + transfer) dominates at {', '.join(dominated) or 'none'} "
            f"of the {len(rows)} shapes with a compute time; at any shape, below 'rows/worker at parity'"
        )
    return lines


def report_lines(payload):
    s = payload["settings"]
    m = payload["machine"]
    mem = {r["threads"]: r for r in payload["in_memory"]}
    runs = {r["workers"]: r for r in payload["dask"]}
    lines = [
        f"fastsoftmax on Dask: one loss-and-gradient pass (one L-BFGS evaluation), "
        f"{s['rows']:,} x {s['features']} x {s['classes']} float32 in {s['partitions']} partitions",
        f"machine: {m['cpu']}, {m['cpus_usable']} CPUs usable; dask {s['versions']['dask']}, "
        f"distributed {s['versions']['distributed']}",
        "workers: LocalCluster processes, one thread each; threads a pass may use, seen on each worker: "
        + "; ".join(
            f"{w} worker(s): "
            + ", ".join(f"fastsoftmax {t['fastsoftmax']} BLAS {t['blas']}" for t in r["worker_threads"])
            for w, r in runs.items()
        ),
        f"NOTE: this machine has {m['cpus_usable']} cores: 2 single-thread workers against the in-memory pass "
        "on 2 threads is the fair comparison",
        "",
        f"{'pass':<24}{'median ms':>10}{'spread ms':>11}{'Mrows/s':>9}",
    ]
    named = [(f"in memory, {t} thread(s)", r) for t, r in mem.items()]
    named += [(f"Dask, {w} worker(s)", r) for w, r in runs.items()]
    for name, r in named:
        lines.append(
            f"{name:<24}{_ms(r['median_s']):>10}{_ms(r['max_s'] - r['min_s']):>11}{r['rows_per_s'] / 1e6:>9.2f}"
        )
    sm = payload["summary"]
    lines += [
        f"speed-up of 2 workers over 1: {sm['speedup']:.2f}x (parallel efficiency {sm['speedup'] / 2:.2f})",
        "against the in-memory pass (its time / Dask's): "
        + "; ".join(f"{w} worker(s) {e:.2f} of {w} thread(s)" for w, e in sm["efficiency"].items()),
        "check against the in-memory pass: "
        + "; ".join(
            f"{w} worker(s) loss rel err {r['check']['loss_rel_err']:.1e}, dW max rel err "
            f"{r['check']['dW_max_rel_err']:.1e}"
            for w, r in runs.items()
        )
        + f" (tolerance {RTOL:g})",
        "",
        f"overhead of a pass: tiny passes ({TINY_ROWS} rows per partition), median ms",
        f"{'partitions':>12}{'tasks':>7}{'depth':>7}" + "".join(f"{f'{w} worker(s)':>14}" for w in runs),
    ]
    tiny = {w: {t["partitions"]: t for t in r["tiny_passes"]} for w, r in runs.items()}
    for p, t in tiny[WORKERS[0]].items():
        lines.append(
            f"{p:>12}{t['tasks']:>7}{t['depth']:>7}"
            + "".join(f"{_ms(tiny[w][p]['median_s']):>14}" for w in runs)
        )
    for w, r in runs.items():
        f = r["overhead_fit"]
        lines.append(
            f"fitted, {w} worker(s): {_ms(f['fixed_s'])} ms + {_ms(f['per_task_s'])} ms x tasks + "
            f"{_ms(f['per_level_s'])} ms x depth"
        )
    lines += ["", *_volume_lines(list(runs.values())), "", *_model_lines(payload["model"])]
    return lines


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench.dask_scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--classes", type=int, default=32)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes, after one warm-up")
    parser.add_argument(
        "--bandwidth", type=float, default=10.0, help="network GB/s ASSUMED by the scaling model (default 10)"
    )
    parser.add_argument("--output", default=None, help="folder (default bench/results/dask_<date>/)")
    return parser


def main(argv=None):
    """Run the benchmark; write ``results.json`` and ``report.txt``.  Returns 1 when a check fails."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    for name in ("rows", "features", "classes", "partitions", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if args.rows < args.partitions:
        raise SystemExit(f"--rows ({args.rows}) must be at least --partitions ({args.partitions})")
    directory = args.output or default_directory("dask")
    params = make_params(args.features, args.classes)
    payload = {
        "benchmark": "dask_scaling",
        "machine": machine.describe(machine.module_command("bench.dask_scaling", argv)),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "output"},
            "dtype": "float32",
            "split_every": SPLIT_EVERY,
            "tiny_rows_per_partition": TINY_ROWS,
            "tiny_repeats": TINY_REPEATS,
            "versions": {"dask": dask.__version__, "distributed": distributed.__version__},
        },
        "problems": [],
    }
    out = _Recorder(directory, payload)
    payload["in_memory"], reference = in_memory_passes(args, params)
    payload["dask"] = [cluster_run(w, args, params, reference) for w in WORKERS]
    mem = {r["threads"]: r["median_s"] for r in payload["in_memory"]}
    dask_s = {r["workers"]: r["median_s"] for r in payload["dask"]}
    payload["summary"] = {
        "speedup": dask_s[1] / dask_s[2],
        "efficiency": {w: mem[w] / dask_s[w] for w in WORKERS},
    }
    payload["model"] = scaling_model(args, mem[1], payload["dask"][-1]["overhead_fit"], args.bandwidth * 1e9)
    for run in payload["dask"]:
        if max(run["check"].values()) > RTOL:
            payload["problems"].append(
                f"{run['workers']} worker(s): the Dask pass disagrees with the in-memory one"
            )
    out.print(
        *report_lines(payload),
        *payload["problems"],
        "",
        f"wrote {os.path.join(directory, 'results.json')} and report.txt",
    )
    out.save()
    return 1 if payload["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
