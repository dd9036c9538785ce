"""Workloads, their flop and byte counts, and the floor a pass cannot beat.

A workload is one full-batch loss-and-gradient pass over N rows of D float32 features
with C classes.  The model, the same on every device:

flops = 4 N D C
    The two GEMMs, ``Z = X W`` and ``dW = X^T G``.  The softmax (O(N C)) and db are left
    out: the count is the same for every implementation, so TFLOP/s reads as "useful GEMM
    work per second".
x_bytes = 4 N D
    X read once.  The logits need not reach memory (a fused implementation can keep them
    on chip), so only X must cross the memory bus; labels, W, b and dW are small beside it.
floor = max(flops / gemm_rate, x_bytes / read_rate)
    The GEMMs at the best float32 GEMM rate measured in the same run, or X read once at
    the measured read rate, whichever is slower.  ``ratio_to_floor`` is time / floor: 1.0
    would be a perfect implementation.
"""

from dataclasses import dataclass

ITEMSIZE = 4  # float32 throughout
FLOP_MODEL = "4*N*D*C"  # the two GEMMs (softmax and db left out)
BYTE_MODEL = "4*N*D"  # X read once (the logits can stay on chip)


@dataclass(frozen=True)
class Workload:
    """One pass: ``n`` rows, ``d`` features, ``c`` classes, under a display ``label``."""

    label: str
    n: int
    d: int
    c: int

    @property
    def flops(self):
        return 4 * self.n * self.d * self.c

    @property
    def x_bytes(self):
        return ITEMSIZE * self.n * self.d

    def floor_s(self, gemm_rate, read_rate):
        """Seconds of the floor, given FLOP/s and bytes/s ceilings."""
        return max(self.flops / gemm_rate, self.x_bytes / read_rate)

    def fields(self):
        """The workload's columns in a result row."""
        return {
            "workload": self.label,
            "n_samples": self.n,
            "n_features": self.d,
            "n_classes": self.c,
            "flops": self.flops,
            "x_bytes": self.x_bytes,
        }


def parse(spec, named=None):
    """A :class:`Workload` from ``"NxDxC"`` (``"200000x256x20"``) or a key of ``named``.

    Parameters
    ----------
    spec : str
    named : dict of str to (int, int, int), optional
        Named workloads (``{"W1": (1281167, 768, 1000)}``).

    Raises
    ------
    ValueError
        When ``spec`` is neither a name nor three positive integers joined by ``x``.

    Examples
    --------
    >>> parse("1000x64x10")
    Workload(label='1000x64x10', n=1000, d=64, c=10)
    >>> parse("1000x64x1")
    Traceback (most recent call last):
    ...
    ValueError: workload '1000x64x1': need N x D x C with N, D >= 1 and C >= 2
    """
    if named and spec in named:
        return Workload(spec, *named[spec])
    parts = spec.lower().split("x")
    try:
        n, d, c = (int(p) for p in parts)
    except ValueError:
        known = f" or one of {', '.join(named)}" if named else ""
        raise ValueError(f"workload {spec!r}: expected N x D x C like 200000x256x20{known}") from None
    if n < 1 or d < 1 or c < 2:
        raise ValueError(f"workload {spec!r}: need N x D x C with N, D >= 1 and C >= 2")
    return Workload(spec, n, d, c)


def add_rates(row, floor_s):
    """Add throughputs and the ratio to the floor to a row that has ``median_s``."""
    seconds = row["median_s"]
    row.update(
        rows_per_s=row["n_samples"] / seconds,
        gb_per_s=row["x_bytes"] / seconds / 1e9,
        tflops=row["flops"] / seconds / 1e12,
        floor_s=floor_s,
        ratio_to_floor=seconds / floor_s,
    )


def add_speedups(rows, reference="fastsoftmax"):
    """Give every timed row ``fastsoftmax_speedup``: its median over the reference's.

    Above 1, fastsoftmax is that many times faster than the row's implementation.
    """
    ours = next((r for r in rows if r["implementation"] == reference and "median_s" in r), None)
    for r in rows:
        if ours is not None and "median_s" in r:
            r["fastsoftmax_speedup"] = r["median_s"] / ours["median_s"]


def failure(row):
    """Why a result row holds no measurement (skipped, error, failed check, out of memory), or None."""
    for key in ("skipped", "error", "check_failed", "out_of_memory"):
        if key in row:
            return f"{key.replace('_', ' ')}: {row[key]}"
    return None
