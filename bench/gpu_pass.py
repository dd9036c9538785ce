"""One full-batch loss-and-gradient pass on the GPU: fastsoftmax against its peers.

The GPU half of ``python -m bench gpu`` (``bench.suite``), which needs a CUDA device, CuPy,
numba-cuda and, for the PyTorch peers, a CUDA build of PyTorch.  Named workloads (float32;
the suite also takes ``NxDxC`` specs):

    W1  N = 1,281,167   D = 768    C = 1,000    ImageNet-1k's training-set size
    W2  N = 10,000,000  D = 128    C = 10       many rows, few classes: bound by reading X
    W3  N = 1,000,000   D = 1,024  C = 10,000   X is 4.1 GB and its logits 40 GB

Every implementation (``bench.gpu_peers``) gets the same problem, generated on the device,
so no timed pass includes a host-to-device copy.  fastsoftmax is checked first against a
float64 textbook pass on the first ``REFERENCE_ROWS`` rows, then every peer against
fastsoftmax on all rows; dW and the loss must agree to a max relative error of ``RTOL``
(1e-3: float32 GEMMs over a million rows typically round at 1e-6 to 1e-5 relative, so
1e-3 is far above rounding and far below any real mistake).  An implementation that fails
its check is reported and not timed.  One that runs out of device memory is reported as
such, with the bytes it asked for.  Times come from CUDA events
(``bench.gpu_ceilings.event_times``): median, min and max over the repeats, after a
warm-up pass and the checked pass.  The flop and byte counts and the floor are
``bench.workloads``'s, with ``gemm_fp32_best`` and ``hbm_bandwidth`` from
``bench.gpu_ceilings`` measured in the same run.

Separately, :func:`run_kernel` times the fused softmax-gradient kernel alone
(``fastsoftmax.kernels.cuda.softmax_xent_grad_``) on a W1-shaped chunk of logits against
the measured copy bandwidth: it reads and writes the logits once, as a copy does; the
target is at least 80 %.
"""

import os
import re
import statistics
import sys
import time
import traceback

from . import gpu_ceilings, gpu_peers, peers
from .report import log
from .workloads import ITEMSIZE, add_rates, add_speedups, failure

WORKLOADS = {
    "W1": (1_281_167, 768, 1000),
    "W2": (10_000_000, 128, 10),
    "W3": (1_000_000, 1024, 10_000),
}
LABEL_ITEMSIZE = 8  # int64 labels
RTOL = 1e-3
REFERENCE_ROWS = 65_536
KERNEL_TARGET = 0.8  # fraction of the measured copy bandwidth

KERNEL_BYTE_MODEL = (
    "rows * (2*C*itemsize + label_itemsize + 2*itemsize): logits read and written, labels, scales, row losses"
)


def kernel_bytes(rows, c, itemsize=ITEMSIZE, label_itemsize=LABEL_ITEMSIZE):
    """Bytes the fused row kernel must move: logits read and written, labels, scales, row losses.

    Examples
    --------
    >>> kernel_bytes(262_144, WORKLOADS["W1"][2])  # 262,144 rows x (8,000 + 16) bytes
    2101346304
    """
    return rows * (2 * c * itemsize + label_itemsize + 2 * itemsize)


def summarize(times):
    """Median, min and max of a list of seconds."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def max_rel_err(got, ref):
    """``max |got - ref| / max |ref|`` in float64; both NumPy, or both CuPy."""
    got, ref = got.astype("float64"), ref.astype("float64")
    return float(abs(got - ref).max() / abs(ref).max())


_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def oom_tried_bytes(message):
    """Bytes an out-of-memory error says were asked for (CuPy's or PyTorch's wording), or None."""
    found = re.search(r"allocating ([\d,]+) bytes", message)
    if found:
        return int(found.group(1).replace(",", ""))
    found = re.search(r"Tried to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB)", message)
    if found:
        return round(float(found.group(1)) * _UNITS[found.group(2)])
    return None


# -- the environment ------------------------------------------------------------------------
def require_gpu():
    """Exit with a message naming what is missing, before any device time is spent.

    Peers are not required: one that cannot run is a skipped row with its reason.

    Raises
    ------
    SystemExit
        Without CuPy, without a visible device, with ``CUPY_TF32`` set, or when
        fastsoftmax's CUDA backend or its fused kernel cannot run.
    """
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 (ImportError, or CUDA libraries that fail to load)
        raise SystemExit(
            f"the gpu suite needs CuPy, which did not import ({type(exc).__name__}: {exc}). "
            "Install the CuPy wheel for this machine's CUDA, e.g. pip install cupy-cuda13x "
            "(or pip install -e '.[cuda13]'), and run on a machine with an NVIDIA GPU."
        ) from None
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 (CUDARuntimeError, or a driver library that fails to load)
        raise SystemExit(
            f"CuPy {cupy.__version__} imported but sees no CUDA driver ({type(exc).__name__}: {exc})"
        ) from None
    if n_devices == 0:
        raise SystemExit(f"CuPy {cupy.__version__} imported but sees no CUDA device")
    if os.environ.get("CUPY_TF32", "0").strip() not in ("", "0"):
        raise SystemExit(
            f"CUPY_TF32={os.environ['CUPY_TF32']} makes CuPy's float32 GEMMs (fastsoftmax's included) "
            "use TF32, while the peers and the floor are full float32; unset it"
        )
    why_not = gpu_peers.available("fastsoftmax")
    if why_not:
        raise SystemExit(f"fastsoftmax's CUDA backend cannot run here: {why_not}")
    try:
        from fastsoftmax.kernels import cuda as kernels

        kernels.softmax_xent_grad_  # noqa: B018 (an AttributeError here names what is missing)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(
            f"fastsoftmax.kernels.cuda.softmax_xent_grad_ is not available ({type(exc).__name__}: {exc})"
        ) from None


# -- measuring one implementation ----------------------------------------------------------------
def to_host(a):
    """A CuPy array or a PyTorch tensor as a NumPy array."""
    if hasattr(a, "detach"):  # a torch.Tensor; torch itself is never imported here
        return a.detach().cpu().numpy()
    import cupy

    return cupy.asnumpy(a)


def _synchronize():
    import cupy

    cupy.cuda.Device().synchronize()


def oom_errors():
    """The out-of-memory errors of CuPy, fastsoftmax and (when loaded) PyTorch, for an ``except``."""
    import cupy

    from fastsoftmax.backends import DeviceMemoryError

    errors = [cupy.cuda.memory.OutOfMemoryError, DeviceMemoryError]
    if "torch" in sys.modules:
        errors.append(sys.modules["torch"].cuda.OutOfMemoryError)
    return tuple(errors)


class PeakDeviceMemory:
    """Most device memory allocated at once inside the ``with`` block, above what was live before.

    CuPy allocations are followed through a hook on CuPy's memory pool (the rounded size of
    every block handed out and given back: CuPy's "used bytes"), PyTorch's through
    ``torch.cuda.max_memory_allocated`` (reset on entry).  ``bytes`` is the sum of the two
    high-water marks; every implementation here allocates through one library only, so the
    sum is that library's peak.  Memory that Numba might allocate outside CuPy's pool is not
    seen.
    """

    def __enter__(self):
        import cupy

        class _Hook(cupy.cuda.MemoryHook):
            name = "bench.gpu_pass.PeakDeviceMemory"

            def __init__(self):
                self.live = 0
                self.peak = 0

            def malloc_postprocess(self, **kwargs):
                self.live += kwargs["mem_size"]
                self.peak = max(self.peak, self.live)

            def free_postprocess(self, **kwargs):
                self.live -= kwargs["mem_size"]

        self._hook = _Hook()
        self._hook.__enter__()
        self._torch = gpu_ceilings.initialized_torch_cuda()
        if self._torch is not None:
            self._torch.reset_peak_memory_stats()
            self._torch_base = self._torch.memory_allocated()
        return self

    def __exit__(self, *exc):
        self._hook.__exit__(*exc)
        self.cupy_bytes = self._hook.peak
        self.torch_bytes = 0
        if self._torch is not None:
            self.torch_bytes = self._torch.max_memory_allocated() - self._torch_base
        self.bytes = self.cupy_bytes + self.torch_bytes


def reference_pass(X, y, W, b):
    """Float64 loss and dW of the mean cross-entropy by the textbook formula, on the device."""
    import cupy

    f64 = cupy.float64
    loss, dW = gpu_peers.make_cupy(X.astype(f64), y, W.astype(f64), b.astype(f64))()
    return float(loss), to_host(dW)


def _check(fields, loss, dW, ref_loss, ref_dW, against):
    fields["max_rel_err"] = max_rel_err(dW, ref_dW)
    fields["loss_rel_err"] = abs(loss - ref_loss) / abs(ref_loss)
    fields["checked_against"] = against
    if fields["max_rel_err"] > RTOL or fields["loss_rel_err"] > RTOL:
        fields["check_failed"] = (
            f"disagrees with {against}: dW max rel err {fields['max_rel_err']:.2e}, "
            f"loss rel err {fields['loss_rel_err']:.2e} (tolerance {RTOL:g})"
        )


def _measure(name, problem, repeats, expected, fields):
    start = time.perf_counter()
    fn = gpu_peers.PEERS[name](*problem)
    fn()
    _synchronize()
    fields["first_call_s"] = time.perf_counter() - start  # JIT, cuBLAS heuristics, torch.compile
    if name == "torch.compile":
        fields["compile_s"] = fields["first_call_s"]  # compilation plus one pass, which is small beside it
    if name.startswith("torch"):
        # "highest", set by the peer: no TF32.
        fields["float32_matmul_precision"] = sys.modules["torch"].get_float32_matmul_precision()
    with PeakDeviceMemory() as peak:
        loss, dW = fn()
        _synchronize()
    fields["peak_device_bytes"] = peak.bytes
    loss, dW = float(loss), to_host(dW)
    if expected is None:
        X, y, W, b = problem
        k = min(REFERENCE_ROWS, len(y))
        sub_loss, sub_dW = gpu_peers.make_fastsoftmax(X[:k], y[:k], W, b)()
        ref_loss, ref_dW = reference_pass(X[:k], y[:k], W, b)
        against = f"float64 textbook pass on the first {k} rows"
        _check(fields, float(sub_loss), to_host(sub_dW), ref_loss, ref_dW, against)
    else:
        _check(fields, loss, dW, *expected, "fastsoftmax")
    if "check_failed" in fields:
        return None
    wall = []
    fields.update(summarize(gpu_ceilings.event_times(fn, repeats, warmup=0, wall_times=wall)))
    fields["wall_median_s"] = statistics.median(wall)
    if fields["wall_median_s"] > 1.5 * fields["median_s"] + 1e-3:
        log(
            f"WARNING {name}: wall time {fields['wall_median_s'] * 1e3:.2f} ms against "
            f"{fields['median_s'] * 1e3:.2f} ms from CUDA events: work outside CuPy's stream?"
        )
    return loss, dW


def measure_implementation(name, problem, repeats, expected=None):
    """Check one implementation, then time it; never raises for a failure of the implementation.

    Parameters
    ----------
    expected : tuple (loss, dW) or None
        fastsoftmax's result to check a peer against; None for fastsoftmax itself, which is
        checked against :func:`reference_pass` on the first ``REFERENCE_ROWS`` rows.

    Returns
    -------
    fields : dict
        Times, peak memory and check results; or ``out_of_memory`` (with ``tried_bytes``),
        ``check_failed`` or ``error``.
    result : tuple (loss, dW on the host) or None
        None unless the check passed.
    """
    fields = {}
    result = None
    try:
        result = _measure(name, problem, repeats, expected, fields)
    except oom_errors() as exc:
        message = str(exc).strip().splitlines()[0]
        fields.update(out_of_memory=message, tried_bytes=oom_tried_bytes(message))
    except Exception as exc:  # noqa: BLE001 (any failure of one implementation is its row's finding)
        traceback.print_exc()
        fields["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        gpu_ceilings.free_device_memory()
    return fields, result


def run_workload(workload, names, repeats, ceiling, seed=0):
    """Rows of results, one per implementation, for one :class:`~bench.workloads.Workload`.

    ``names`` must start with "fastsoftmax": every peer is checked against its result.
    """
    floor_s = workload.floor_s(ceiling["gemm_fp32_best"], ceiling["hbm_bandwidth"])
    try:
        problem = gpu_peers.make_device_problem(workload.n, workload.d, workload.c, seed)
    except oom_errors() as exc:
        gpu_ceilings.free_device_memory()
        message = f"the problem itself does not fit: {str(exc).strip().splitlines()[0]}"
        return [{**workload.fields(), "implementation": name, "out_of_memory": message} for name in names]
    rows, expected = [], None
    for name in names:
        log(f"{workload.label}: {name}")
        row = {**workload.fields(), "implementation": name}
        why_not = gpu_peers.available(name)
        if why_not:
            row["skipped"] = why_not
        elif name != "fastsoftmax" and expected is None:
            row["skipped"] = "fastsoftmax has no checked result on this workload to compare with"
        else:
            fields, result = measure_implementation(name, problem, repeats, expected)
            row.update(fields)
            if name == "fastsoftmax":
                expected = result
        if "median_s" in row:
            add_rates(row, floor_s)
        log(f"{workload.label}: {name}: " + (failure(row) or f"{row['median_s'] * 1e3:.2f} ms"))
        rows.append(row)
    del problem
    gpu_ceilings.free_device_memory()
    add_speedups(rows)
    return rows


# -- the kernel alone -----------------------------------------------------------------------
def run_kernel(rows, n_classes, repeats, ceiling, seed=0):
    """Time ``fastsoftmax.kernels.cuda.softmax_xent_grad_`` on one chunk of logits.

    The kernel writes ``G = scale * (softmax(Z + b) - onehot(y))`` over Z and
    ``scale * (lse - z_y)`` into ``row_loss``; it is launched on CuPy's current stream, as
    the CUDA backend launches it.  The logits are restored from a pristine copy before every
    call (outside the timed region), so every call sees the same input.  The result is
    checked once against the float64 textbook softmax gradient.
    """
    import cupy
    from numba import cuda

    from fastsoftmax.kernels import cuda as kernels

    rs = cupy.random.RandomState(seed)
    Z0 = (rs.standard_normal((rows, n_classes), dtype=cupy.float32) * 1.5).astype(cupy.float32)
    b = (rs.standard_normal(n_classes, dtype=cupy.float32) * 0.1).astype(cupy.float32)
    y = rs.randint(0, n_classes, size=rows, dtype=cupy.int64)
    scale = cupy.full(rows, 1.0 / rows, dtype=cupy.float32)
    row_loss = cupy.empty(rows, dtype=cupy.float32)
    Z = Z0.copy()
    nbytes = kernel_bytes(rows, n_classes)
    result = {"rows": rows, "n_classes": n_classes, "bytes": nbytes, "byte_model": KERNEL_BYTE_MODEL}

    ptr = cupy.cuda.get_current_stream().ptr
    stream = cuda.external_stream(ptr) if ptr else 0  # 0: the legacy default stream, as the backend does

    def launch():
        kernels.softmax_xent_grad_(Z, b, y, scale, row_loss, stream=stream)

    launch()
    G_ref = Z0.astype(cupy.float64) + b.astype(cupy.float64)
    loss_ref = peers.textbook_softmax_grad_(cupy, G_ref, y) * scale
    G_ref *= scale[:, None]
    result["max_rel_err_G"] = max_rel_err(Z, G_ref)
    result["max_rel_err_row_loss"] = max_rel_err(row_loss, loss_ref)
    del G_ref, loss_ref
    gpu_ceilings.free_device_memory()
    if max(result["max_rel_err_G"], result["max_rel_err_row_loss"]) > RTOL:
        result["check_failed"] = (
            "disagrees with the float64 textbook softmax gradient: "
            f"G max rel err {result['max_rel_err_G']:.2e}, "
            f"row loss max rel err {result['max_rel_err_row_loss']:.2e} (tolerance {RTOL:g})"
        )
        return result

    times = gpu_ceilings.event_times(launch, repeats, warmup=1, setup=lambda: cupy.copyto(Z, Z0))
    result.update(summarize(times))
    result["gb_per_s"] = nbytes / result["median_s"] / 1e9
    result["fraction_of_copy_bandwidth"] = nbytes / result["median_s"] / ceiling["copy_bandwidth"]
    result["target_fraction"] = KERNEL_TARGET
    result["meets_target"] = result["fraction_of_copy_bandwidth"] >= KERNEL_TARGET
    return result
