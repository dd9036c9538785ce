"""One full-batch loss-and-gradient pass on the GPU: fastsoftmax against its peers.

Run from the repository root, on a machine with a CUDA device, CuPy, numba-cuda and (for
the PyTorch peers) a CUDA build of PyTorch::

    python -m bench.gpu_pass --output bench/results/gpu_pass.json --plots bench/results/gpu_pass

Workloads (float32; ``--workloads`` also takes ``NxDxC`` specs, for smoke runs):

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
(``bench.gpu_ceilings.event_times``): median, min and max over ``--repeats`` passes after
a warm-up pass and the checked pass.

The flop and byte model, and the floor (:func:`pass_flops`, :func:`pass_bytes`,
:func:`floor_seconds`), with the ceilings measured in the same run
(``bench.gpu_ceilings``):

    flops = 4 N D C
        The two GEMMs, ``Z = X W`` and ``dW = X^T G``.  The softmax (O(N C)) and db are left
        out: the count is the same for every implementation, and reported TFLOP/s is
        "useful GEMM work per second".
    pass bytes = 4 (N D + 2 N C)
        X read once, and the (N, C) logits written once and read once: the traffic of an
        implementation that materialises the logits a single time (first GEMM writes them,
        the softmax-gradient kernel turns them into G in place, the second GEMM reads G; the
        in-place rewrite is counted as part of the write, as if fused into it).  It is a
        model: an implementation that reads X once per GEMM, or makes separate max/exp/sum
        passes, moves more bytes than it is credited with.  Labels (8 N), row scales (4 N),
        W, b and dW are left out; they are under 3 % of the total on W1 to W3.
    floor = max(4 N D C / gemm_fp32_best, 4 N D / hbm_bandwidth)
        The GEMMs at the best measured float32 GEMM rate, or X read once at the measured
        memory rate, whichever is slower.  The logits are not in the floor: a fully fused
        implementation can keep them on chip, so only X must cross the memory bus.
        ``hbm_bandwidth`` is the larger of the copy bandwidth, counted as bytes read plus
        bytes written, and a read-only stream.  The copy rate is not halved: device memory's
        bandwidth is shared by reads and writes, so bytes read plus bytes written per second
        is the rate at which it moves bytes in any mix; halving it would charge reading X
        like copying X and give a floor that a good implementation could beat.
    W1 and W3 are GEMM-bound by this floor (at 50 TFLOP/s and 3 TB/s the GEMM term is 60
    and 600 times the read term), W2 is bound by reading X.

Separately, the fused softmax-gradient kernel alone (``fastsoftmax.kernels.cuda.
softmax_xent_grad_``) is timed on a W1-shaped chunk of logits against the measured copy
bandwidth (it reads and writes the logits once, as a copy does; target at least 80 %), and
a 100-iteration L-BFGS fit on W1 is timed end to end.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from importlib import metadata

from . import gpu_ceilings, gpu_peers, machine

WORKLOADS = {
    "W1": (1_281_167, 768, 1000),
    "W2": (10_000_000, 128, 10),
    "W3": (1_000_000, 1024, 10_000),
}
ITEMSIZE = 4  # float32 throughout
LABEL_ITEMSIZE = 8  # int64 labels
RTOL = 1e-3
REFERENCE_ROWS = 65_536
KERNEL_ROWS = 262_144  # a 1.05 GB chunk of W1's logits: 20 times the H100's L2
KERNEL_TARGET = 0.8  # fraction of the measured copy bandwidth
PEER_NAMES = [name for name in gpu_peers.PEERS if name != "fastsoftmax"]

BYTE_MODEL = "itemsize * (N*D + 2*N*C): X read once, logits written once and read once"
FLOOR_MODEL = (
    "max(4*N*D*C / gemm_fp32_best, itemsize*N*D / hbm_bandwidth), "
    "hbm_bandwidth = max(copy bandwidth counted as read + written bytes, read-only bandwidth)"
)
KERNEL_BYTE_MODEL = (
    "rows * (2*C*itemsize + label_itemsize + 2*itemsize): logits read and written, labels, scales, row losses"
)


# -- the model ---------------------------------------------------------------------------
def parse_workload(spec):
    """``(label, n_samples, n_features, n_classes)`` for a name in WORKLOADS or an ``NxDxC`` spec."""
    if spec in WORKLOADS:
        return (spec, *WORKLOADS[spec])
    try:
        n, d, c = (int(v) for v in spec.split("x"))
    except ValueError:
        raise ValueError(
            f"workload {spec!r} is neither one of {sorted(WORKLOADS)} nor an NxDxC spec"
        ) from None
    if min(n, d, c) < 1 or c < 2:
        raise ValueError(f"workload {spec!r} needs N, D >= 1 and C >= 2")
    return (spec, n, d, c)


def pass_flops(n, d, c):
    """Floating-point operations of the two GEMMs of one pass: ``4 N D C``.

    Examples
    --------
    >>> pass_flops(*WORKLOADS["W1"])  # 3.94 TFLOP
    3935745024000
    """
    return 4 * n * d * c


def x_bytes(n, d, itemsize=ITEMSIZE):
    """Bytes of X, the only traffic a fully fused pass cannot avoid.

    Examples
    --------
    >>> n, d, c = WORKLOADS["W1"]
    >>> x_bytes(n, d)  # 3.94 GB
    3935745024
    """
    return itemsize * n * d


def pass_bytes(n, d, c, itemsize=ITEMSIZE):
    """Modelled bytes moved by one pass: X read once, the logits written once and read once.

    ``itemsize * (N D + 2 N C)``; see the module docstring for what the model leaves out.

    Examples
    --------
    >>> pass_bytes(*WORKLOADS["W1"])  # 3.94 GB of X + 2 x 5.12 GB of logits
    14185081024
    """
    return itemsize * (n * d + 2 * n * c)


def floor_seconds(n, d, c, gemm_rate, hbm_bandwidth, itemsize=ITEMSIZE):
    """Lower bound on a pass: ``max(4 N D C / gemm_rate, itemsize N D / hbm_bandwidth)``.

    Parameters
    ----------
    gemm_rate : float
        Best measured float32 GEMM rate, FLOP/s.
    hbm_bandwidth : float
        Measured device-memory rate, bytes/s (bytes read plus bytes written for a copy).

    Examples
    --------
    With H100-like ceilings, 50 TFLOP/s and 3 TB/s, W1 is GEMM-bound (reading X once
    would take 1.3 ms) and W2 is bound by reading X:

    >>> round(floor_seconds(*WORKLOADS["W1"], gemm_rate=50e12, hbm_bandwidth=3e12) * 1e3, 3)
    78.715
    >>> round(floor_seconds(*WORKLOADS["W2"], gemm_rate=50e12, hbm_bandwidth=3e12) * 1e3, 3)
    1.707
    """
    return max(pass_flops(n, d, c) / gemm_rate, x_bytes(n, d, itemsize) / hbm_bandwidth)


def kernel_bytes(rows, c, itemsize=ITEMSIZE, label_itemsize=LABEL_ITEMSIZE):
    """Bytes the fused row kernel must move: logits read and written, labels, scales, row losses.

    Examples
    --------
    >>> kernel_bytes(KERNEL_ROWS, WORKLOADS["W1"][2])  # 262,144 rows x (8,000 + 16) bytes
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
def require_gpu_stack(peers, kernel, plots):
    """Exit with a message naming what is missing, before any device time is spent.

    Raises
    ------
    SystemExit
        Without CuPy, without a visible device, with ``CUPY_TF32`` set, when fastsoftmax's
        CUDA backend, a requested peer, the fused kernel (unless ``--no-kernel``) or
        matplotlib (with ``--plots``) cannot run.
    """
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 (ImportError, or CUDA libraries that fail to load)
        raise SystemExit(
            f"bench.gpu_pass needs CuPy, which did not import ({type(exc).__name__}: {exc}). "
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
    if int(os.environ.get("CUPY_TF32", "0")) > 0:
        raise SystemExit(
            f"CUPY_TF32={os.environ['CUPY_TF32']} makes CuPy's float32 GEMMs (fastsoftmax's included) "
            "use TF32, while the peers and the floor are full float32; unset it"
        )
    missing = {name: gpu_peers.available(name) for name in ["fastsoftmax", *peers]}
    missing = {name: why for name, why in missing.items() if why}
    if missing:
        lines = "\n".join(f"  {name}: {why}" for name, why in missing.items())
        raise SystemExit(
            f"cannot run these implementations:\n{lines}\n"
            "(choose peers with --peers; fastsoftmax always runs)"
        )
    if kernel:
        try:
            from fastsoftmax.kernels import cuda as kernels

            kernels.softmax_xent_grad_  # noqa: B018 (an AttributeError here names what is missing)
        except (ImportError, AttributeError) as exc:
            raise SystemExit(
                "fastsoftmax.kernels.cuda.softmax_xent_grad_ is not available "
                f"({type(exc).__name__}: {exc}); pass --no-kernel to skip the kernel timing"
            ) from None
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise SystemExit(
                f"--plots needs matplotlib ({exc}); pip install matplotlib, or drop --plots"
            ) from None


def _nvidia_smi():
    fields = ("name", "driver_version", "memory.total", "power.limit", "clocks.max.sm", "clocks.max.memory")
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    first = out.strip().splitlines()[0]
    return dict(zip(fields, (v.strip() for v in first.split(",")), strict=False))


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_GPU_ENV_PREFIXES = ("CUDA_", "CUPY_", "NUMBA_", "NVIDIA_", "PYTORCH_", "TORCH")


def gpu_describe():
    """Dict of the GPU, its driver and CUDA versions, the GPU libraries and CUDA-related env vars."""
    import cupy

    runtime = cupy.cuda.runtime
    device = cupy.cuda.Device()
    props = runtime.getDeviceProperties(device.id)
    name = props["name"]

    def cuda_version(v):
        return f"{v // 1000}.{v % 1000 // 10}"

    torch_cuda = sys.modules["torch"].version.cuda if "torch" in sys.modules else None
    return {
        "name": name.decode() if isinstance(name, bytes) else name,
        "device_id": device.id,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "total_memory_bytes": props["totalGlobalMem"],
        "multiprocessors": props.get("multiProcessorCount"),
        "l2_cache_bytes": props.get("l2CacheSize"),
        "memory_bus_width_bits": props.get("memoryBusWidth"),
        "driver_cuda_version": cuda_version(runtime.driverGetVersion()),
        "runtime_cuda_version": cuda_version(runtime.runtimeGetVersion()),
        "nvidia_smi": _nvidia_smi(),
        "versions": {
            "cupy": cupy.__version__,
            "torch": _version("torch"),
            "torch_cuda": torch_cuda,
            "numba-cuda": _version("numba-cuda"),
            "triton": _version("triton"),
            "matplotlib": _version("matplotlib"),
        },
        "env": {k: v for k, v in os.environ.items() if k.startswith(_GPU_ENV_PREFIXES)},
    }


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


def _oom_errors():
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
        _log(
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
    except _oom_errors() as exc:
        message = str(exc).strip().splitlines()[0]
        fields.update(out_of_memory=message, tried_bytes=oom_tried_bytes(message))
    except Exception as exc:  # noqa: BLE001 (any failure of one implementation is its row's finding)
        traceback.print_exc()
        fields["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        gpu_ceilings.free_device_memory()
    return fields, result


def failure(row):
    """Why a result row does not count as a measurement, or None."""
    for key in ("out_of_memory", "check_failed", "error", "skipped"):
        if key in row:
            return f"{key.replace('_', ' ')}: {row[key]}"
    return None


def run_workload(spec, names, repeats, ceiling, seed=0):
    """Rows of results, one per implementation, for one workload (fastsoftmax first)."""
    label, n, d, c = parse_workload(spec)
    model = {
        "flops": pass_flops(n, d, c),
        "model_bytes": pass_bytes(n, d, c),
        "x_bytes": x_bytes(n, d),
        "floor_s": floor_seconds(n, d, c, ceiling["gemm_fp32_best"], ceiling["hbm_bandwidth"]),
    }
    shape = {"n_samples": n, "n_features": d, "n_classes": c}
    problem = gpu_peers.make_device_problem(n, d, c, seed)
    rows, expected = [], None
    for name in names:
        _log(f"{label}: {name}")
        row = {"workload": label, "implementation": name, **shape, **model}
        if name != "fastsoftmax" and expected is None:
            row["skipped"] = "fastsoftmax has no checked result on this workload to compare with"
        else:
            fields, result = measure_implementation(name, problem, repeats, expected)
            row.update(fields)
            if name == "fastsoftmax":
                expected = result
        if "median_s" in row:
            row.update(
                tflops=model["flops"] / row["median_s"] / 1e12,
                gb_per_s=model["model_bytes"] / row["median_s"] / 1e9,
                ratio_to_floor=row["median_s"] / model["floor_s"],
            )
        _log(f"{label}: {name}: " + (failure(row) or f"{row['median_s'] * 1e3:.2f} ms"))
        rows.append(row)
    del problem
    gpu_ceilings.free_device_memory()
    ours = rows[0] if "median_s" in rows[0] else None
    for r in rows:
        if ours is not None and "median_s" in r:
            r["fastsoftmax_speedup"] = r["median_s"] / ours["median_s"]
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

    stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)

    def launch():
        kernels.softmax_xent_grad_(Z, b, y, scale, row_loss, stream=stream)

    launch()
    G_ref = Z0.astype(cupy.float64) + b.astype(cupy.float64)
    loss_ref = gpu_peers.textbook_softmax_grad_(cupy, G_ref, y) * scale
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


# -- a full fit ---------------------------------------------------------------------------------
def _timed(fn):
    from sklearn.exceptions import ConvergenceWarning

    _synchronize()
    with warnings.catch_warnings():
        # tol=0 asks for exactly max_iter iterations; "did not converge" is the point.
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        value = fn()
        _synchronize()
        return value, time.perf_counter() - start


def _estimator(max_iter):
    from fastsoftmax import SoftmaxClassifier

    return SoftmaxClassifier(solver="lbfgs", max_iter=max_iter, tol=0, backend="cuda")


def run_fit(spec, max_iter, from_host, seed=0):
    """Time ``max_iter`` iterations of L-BFGS (tol=0) on a workload, data already on the device.

    ``SoftmaxClassifier.fit`` is timed on CuPy arrays, after a 2-iteration fit on a slice
    that compiles the kernels.  With ``from_host``, ``fit`` on NumPy copies of the data
    is timed too (its input validation and the host-to-device copy included).
    """
    import cupy

    label, n, d, c = parse_workload(spec)
    X, y, _, _ = gpu_peers.make_device_problem(n, d, c, seed)
    base = {"workload": label, "n_samples": n, "n_features": d, "n_classes": c, "max_iter": max_iter}
    _timed(lambda: _estimator(2).fit(X[:2048], y[:2048]))
    clf, seconds = _timed(lambda: _estimator(max_iter).fit(X, y))
    rows = [
        {
            **base,
            "measure": "SoftmaxClassifier.fit on CuPy arrays",
            "seconds": seconds,
            "n_iter": clf.n_iter_,
            "final_loss": clf.loss_curve_[-1],
        }
    ]
    if from_host:
        X_host, y_host = cupy.asnumpy(X), cupy.asnumpy(y)
        del X, y
        gpu_ceilings.free_device_memory()
        clf, seconds = _timed(lambda: _estimator(max_iter).fit(X_host, y_host))
        rows.append(
            {
                **base,
                "measure": "SoftmaxClassifier.fit on NumPy arrays (validation and copy to the device included)",
                "seconds": seconds,
                "n_iter": clf.n_iter_,
                "final_loss": clf.loss_curve_[-1],
            }
        )
    for row in rows:
        row["seconds_per_iter"] = row["seconds"] / max(row["n_iter"], 1)
    gpu_ceilings.free_device_memory()
    return rows


# -- reporting ----------------------------------------------------------------------------------
def _log(message):
    print(f"[gpu_pass {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tera(v):
    return f"{v / 1e12:.1f}" if v else "n/a"


def print_ceilings(ceiling):
    print(
        f"ceilings: FP32 GEMM {_tera(ceiling['gemm_fp32_cupy'])} TFLOP/s (cupy/cuBLAS), "
        f"{_tera(ceiling['gemm_fp32_torch'])} (torch); "
        f"TF32 GEMM {_tera(ceiling['gemm_tf32_torch'])} (torch, not used); "
        f"copy {ceiling['copy_bandwidth'] / 1e9:.0f} GB/s (read + written), "
        f"read {ceiling['read_bandwidth'] / 1e9:.0f} GB/s; "
        f"pinned host-to-device {ceiling['h2d_pinned_bandwidth'] / 1e9:.1f} GB/s"
    )
    if ceiling["torch_unavailable"]:
        print(f"  no PyTorch ceilings: {ceiling['torch_unavailable']}")


def print_table(rows):
    w = max([10] + [len(r["workload"]) + 2 for r in rows])
    header = (
        f"{'workload':<{w}}{'impl':<15}{'median ms':>10}{'spread ms':>10}{'TFLOP/s':>9}{'GB/s':>7}"
        f"{'floor ms':>9}{'x floor':>9}{'fs speedup':>11}{'peak GB':>8}{'1st call s':>11}"
    )
    print(header)
    for r in rows:
        why = failure(r)
        if why:
            if r.get("tried_bytes"):
                why += f" (tried {r['tried_bytes'] / 1e9:.2f} GB)"
            print(f"{r['workload']:<{w}}{r['implementation']:<15}{why}")
            continue
        print(
            f"{r['workload']:<{w}}{r['implementation']:<15}{r['median_s'] * 1e3:>10.2f}"
            f"{(r['max_s'] - r['min_s']) * 1e3:>10.2f}{r['tflops']:>9.1f}{r['gb_per_s']:>7.0f}"
            f"{r['floor_s'] * 1e3:>9.2f}{r['ratio_to_floor']:>9.2f}{r['fastsoftmax_speedup']:>11.2f}"
            f"{r['peak_device_bytes'] / 1e9:>8.2f}{r['first_call_s']:>11.1f}"
        )


def print_kernel(k):
    head = f"fused kernel, {k['rows']} x {k['n_classes']} logits"
    if "check_failed" in k:
        print(f"{head}: CHECK FAILED: {k['check_failed']}")
        return
    print(
        f"{head}: median {k['median_s'] * 1e3:.3f} ms, {k['gb_per_s']:.0f} GB/s = "
        f"{k['fraction_of_copy_bandwidth']:.0%} of copy bandwidth (target {k['target_fraction']:.0%}: "
        f"{'met' if k['meets_target'] else 'NOT MET'})"
    )


def print_fit(fit_rows):
    for r in fit_rows:
        print(
            f"fit {r['workload']} ({r['measure']}): {r['seconds']:.2f} s, {r['n_iter']} iterations "
            f"({r['seconds_per_iter'] * 1e3:.1f} ms/iter), final loss {r['final_loss']}"
        )
        if r["n_iter"] < r["max_iter"]:
            print(f"  stopped after {r['n_iter']} of max_iter={r['max_iter']} iterations")


def write_plots(rows, directory):
    """Two PNGs: time per pass, and time over the floor, by workload and implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    names = list(dict.fromkeys(r["implementation"] for r in rows))
    by_key = {(r["workload"], r["implementation"]): r for r in rows}
    width = 0.8 / len(names)
    paths = []
    for key, scale, ylabel, filename in (
        ("median_s", 1e3, "time per pass (ms; median, whiskers min to max)", "gpu_pass_time.png"),
        ("ratio_to_floor", 1.0, "time per pass / floor", "gpu_pass_floor_ratio.png"),
    ):
        fig, ax = plt.subplots(figsize=(max(6, 2.5 * len(workloads)), 4.5))
        missing = []
        for k, name in enumerate(names):
            for i, workload in enumerate(workloads):
                x = i + (k - (len(names) - 1) / 2) * width
                r = by_key.get((workload, name))
                if r is None or key not in r:
                    missing.append((x, failure(r).split(":")[0] if r else "not run"))
                    continue
                value = r[key] * scale
                yerr = None
                if key == "median_s":
                    yerr = [[value - r["min_s"] * scale], [r["max_s"] * scale - value]]
                ax.bar(x, value, width, yerr=yerr, color=f"C{k}", label=name)
        ax.set_yscale("log")
        if key == "ratio_to_floor":
            ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="floor")
        bottom = ax.get_ylim()[0]
        for x, word in missing:
            ax.text(x, bottom, f" {word}", rotation=90, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_ylabel(ylabel)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))  # one entry per implementation, not per bar
        ax.legend(unique.values(), unique.keys(), fontsize=8)
        fig.tight_layout()
        path = os.path.join(directory, filename)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _write_json(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_pass",
        description=__doc__.splitlines()[0],
        epilog="Workloads: " + ", ".join(f"{k} = {n}x{d}x{c}" for k, (n, d, c) in WORKLOADS.items()),
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), help="names or NxDxC specs")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per implementation")
    parser.add_argument(
        "--peers",
        nargs="*",
        default=PEER_NAMES,
        choices=PEER_NAMES,
        help="peers to run besides fastsoftmax (which always runs)",
    )
    parser.add_argument("--output", help="write results as JSON to this path (rewritten after every stage)")
    parser.add_argument("--plots", metavar="DIR", help="draw PNG plots into this folder (needs matplotlib)")
    parser.add_argument(
        "--kernel-rows", type=int, default=KERNEL_ROWS, help="rows of W1-shaped logits for the kernel timing"
    )
    parser.add_argument("--no-kernel", action="store_true", help="skip the fused-kernel timing")
    parser.add_argument("--fit-workload", default="W1", help="workload of the timed fit")
    parser.add_argument("--fit-iter", type=int, default=100, help="L-BFGS iterations of the timed fit")
    parser.add_argument("--no-fit", action="store_true", help="skip the timed fit")
    parser.add_argument(
        "--fit-from-host",
        action="store_true",
        help="also time fit on NumPy copies of the data (validation and copy included)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for spec in args.workloads + [args.fit_workload]:
        try:
            parse_workload(spec)
        except ValueError as exc:
            parser.error(str(exc))
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv=None):
    """Run the benchmark; return 0, or 1 when any implementation failed (the reasons are printed)."""
    args = parse_args(argv)
    require_gpu_stack(args.peers, kernel=not args.no_kernel, plots=args.plots)
    names = ["fastsoftmax", *args.peers]

    description = machine.describe("bench.gpu_pass")
    description["command"] = " ".join(
        [os.path.basename(sys.executable), "-m", "bench.gpu_pass", *(sys.argv[1:] if argv is None else argv)]
    )
    payload = {
        "machine": description,
        "settings": {
            "dtype": "float32",
            "repeats": args.repeats,
            "rtol": RTOL,
            "reference_rows": REFERENCE_ROWS,
            "seed": args.seed,
            "byte_model": BYTE_MODEL,
            "floor": FLOOR_MODEL,
        },
    }
    _log("measuring ceilings")
    payload["ceilings"] = ceiling = gpu_ceilings.measure()
    payload["gpu"] = gpu_describe()  # after the ceilings imported PyTorch, so its CUDA version is known
    print(
        f"device: {payload['gpu']['name']}, CUDA driver {payload['gpu']['driver_cuda_version']}, "
        f"runtime {payload['gpu']['runtime_cuda_version']}, CuPy {payload['gpu']['versions']['cupy']}"
    )
    print_ceilings(ceiling)
    _write_json(args.output, payload)

    problems = []
    if not args.no_kernel:
        n_classes = WORKLOADS["W1"][2]
        _log(f"kernel: {args.kernel_rows} x {n_classes}")
        payload["kernel"] = kernel = run_kernel(args.kernel_rows, n_classes, args.repeats, ceiling, args.seed)
        gpu_ceilings.free_device_memory()
        print_kernel(kernel)
        if "check_failed" in kernel:
            problems.append(f"kernel: {kernel['check_failed']}")
        _write_json(args.output, payload)

    payload["results"] = rows = []
    for spec in args.workloads:
        rows.extend(run_workload(spec, names, args.repeats, ceiling, args.seed))
        _write_json(args.output, payload)
    print_table(rows)
    for r in rows:
        why = failure(r)
        # A peer running out of memory is a finding; fastsoftmax running out is a failure.
        if why and (r["implementation"] == "fastsoftmax" or "out_of_memory" not in r):
            problems.append(f"{r['workload']} {r['implementation']}: {why}")

    if args.plots:
        for path in write_plots(rows, args.plots):
            print(f"wrote {path}")

    if not args.no_fit:
        _log(f"fit: {args.fit_workload}, {args.fit_iter} iterations")
        payload["fit"] = fit_rows = run_fit(args.fit_workload, args.fit_iter, args.fit_from_host, args.seed)
        print_fit(fit_rows)
        _write_json(args.output, payload)

    if args.output:
        print(f"wrote {args.output}")
    if problems:
        print("FAILURES:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
