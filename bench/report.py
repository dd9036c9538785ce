"""The tables ``python -m bench`` prints: ceilings, passes, the fused kernel.

(The time-to-accuracy table is ``bench.accuracy.format_table``.)
"""

import sys
import time

from .workloads import failure


def log(message, source="bench"):
    """A timestamped progress line on stderr (the tables go to stdout)."""
    print(f"[{source} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _rate(value, scale, digits=1):
    return f"{value / scale:.{digits}f}" if value else "n/a"


def ceilings_line(platform, ceiling):
    """One line naming every ceiling measured, and which the floor uses."""
    if platform == "cpu":
        return (
            f"ceilings: SGEMM {_rate(ceiling['sgemm_numpy'], 1e9, 0)} GFLOP/s (NumPy BLAS), "
            f"{_rate(ceiling['sgemm_torch'], 1e9, 0)} GFLOP/s (PyTorch); "
            f"read {ceiling['read_bandwidth'] / 1e9:.1f} GB/s. "
            f"Floor from {ceiling['gemm_best'] / 1e9:.0f} GFLOP/s and {ceiling['read_bandwidth'] / 1e9:.1f} GB/s"
        )
    line = (
        f"ceilings: FP32 GEMM {_rate(ceiling['gemm_fp32_cupy'], 1e12)} TFLOP/s (CuPy/cuBLAS), "
        f"{_rate(ceiling['gemm_fp32_torch'], 1e12)} (PyTorch); "
        f"TF32 GEMM {_rate(ceiling['gemm_tf32_torch'], 1e12)} (PyTorch, not used); "
        f"copy {ceiling['copy_bandwidth'] / 1e9:.0f} GB/s (read + written), "
        f"read {ceiling['read_bandwidth'] / 1e9:.0f} GB/s; "
        f"pinned host-to-device {ceiling['h2d_pinned_bandwidth'] / 1e9:.1f} GB/s"
    )
    if ceiling.get("torch_unavailable"):
        line += f"\n  no PyTorch ceilings: {ceiling['torch_unavailable']}"
    return line


def pass_table(rows):
    """Lines of the pass table: time per pass (median and spread), throughputs, floor, speed-up.

    ``fs speed-up`` is the row's median over fastsoftmax's on the same workload: how many
    times faster fastsoftmax is than that implementation.
    """
    width = max([10] + [len(r["workload"]) + 2 for r in rows])
    extra = any("peak_device_bytes" in r for r in rows)
    header = (
        f"{'workload':<{width}}{'implementation':<16}{'median ms':>10}{'spread ms':>11}{'Mrows/s':>9}"
        f"{'GB/s':>8}{'TFLOP/s':>9}{'floor ms':>10}{'x floor':>8}{'fs speed-up':>12}"
    )
    if extra:
        header += f"{'peak GB':>8}{'1st call s':>11}"
    lines = [header]
    for r in rows:
        why = failure(r)
        if why:
            if r.get("tried_bytes"):
                why += f" (tried {r['tried_bytes'] / 1e9:.2f} GB)"
            lines.append(f"{r['workload']:<{width}}{r['implementation']:<16}{why}")
            continue
        line = (
            f"{r['workload']:<{width}}{r['implementation']:<16}{r['median_s'] * 1e3:>10.2f}"
            f"{(r['max_s'] - r['min_s']) * 1e3:>11.2f}{r['rows_per_s'] / 1e6:>9.2f}{r['gb_per_s']:>8.1f}"
            f"{r['tflops']:>9.3f}{r['floor_s'] * 1e3:>10.2f}{r['ratio_to_floor']:>8.2f}"
            f"{r.get('fastsoftmax_speedup', float('nan')):>12.2f}"
        )
        if extra:
            line += f"{r.get('peak_device_bytes', 0) / 1e9:>8.2f}{r.get('first_call_s', float('nan')):>11.1f}"
        lines.append(line)
    return lines


def kernel_line(k):
    """One line on the fused kernel's timing against the copy bandwidth."""
    head = f"fused kernel, {k['rows']} x {k['n_classes']} logits"
    why = failure(k)
    if why:
        return f"{head}: FAILED: {why}"
    return (
        f"{head}: median {k['median_s'] * 1e3:.3f} ms, {k['gb_per_s']:.0f} GB/s = "
        f"{k['fraction_of_copy_bandwidth']:.0%} of copy bandwidth (target {k['target_fraction']:.0%}: "
        f"{'met' if k['meets_target'] else 'NOT MET'})"
    )
