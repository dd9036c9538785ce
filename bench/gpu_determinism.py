"""What ``CudaBackend(deterministic=True)`` costs: one full-batch pass timed with it and without it.

The ``determinism`` stage of ``python -m bench gpu`` (``bench.suite``).  With
``deterministic=True``, the default, a pass is cut into chunks sized from the device's
capacity (rows rounded down to a power of two), so that runs sum in the same order;
with ``deterministic=False`` into the largest chunks the memory free at the time allows.
Nothing else differs between the two (no reduction of a pass uses atomics either way),
so they cost the same until the chunks differ.  The workload is therefore sized from
the device: ``N = CHUNKS`` times the deterministic chunk's rows, at ``D = FEATURES`` and
``C = CLASSES``: three deterministic chunks (two whole, one half), against as few as the
free memory allows (one or two on an idle device).  The problem is generated on the
device (``bench.gpu_peers.make_device_problem``: no host-to-device copy is timed).

Checks: the two backends' losses and gradients agree to ``bench.gpu_pass.RTOL`` (they sum
in different orders), and the deterministic pass, run twice, gives the same bits.  Times
come from CUDA events (``bench.gpu_ceilings.event_times``): median, min and max of the
repeats after a warm-up pass.  ``ratio`` is the deterministic median over the other's.

CuPy is imported inside :func:`run`, so the module imports without it.
"""

import math

from . import gpu_ceilings, gpu_pass, gpu_peers, peers
from .workloads import Workload, failure

FEATURES = 128
CLASSES = 1000
CHUNKS = 2.5
MODES = ("deterministic", "free_memory")


def workload_rows(chunk_rows):
    """Rows of the workload: ``CHUNKS`` deterministic chunks.

    Examples
    --------
    >>> workload_rows(2**21)  # an 80 GB H100 at D = 128, C = 1000
    5242880
    """
    return int(CHUNKS * chunk_rows)


def measure(backends, problem, repeats, timer):
    """Check, then time, one pass of each backend over ``problem``.

    Parameters
    ----------
    backends : dict
        ``{"deterministic": CudaBackend(), "free_memory": CudaBackend(deterministic=False)}``.
    problem : tuple (X, y, W, b) of backend arrays
    repeats : int
    timer : callable
        ``(fn, repeats) ->`` seconds of each of ``repeats`` calls of ``fn`` (after any warm-up).

    Returns
    -------
    dict
        Per mode: ``chunk_rows`` (as sized just before timing), ``chunks``, ``median_s``,
        ``min_s``, ``max_s``; then ``ratio``, ``max_rel_err`` and ``loss_rel_err`` between
        the modes, ``bit_identical`` (the deterministic pass run twice), and
        ``check_failed`` when a check failed (then nothing is timed).
    """
    X, y, W, b = problem
    n_samples, n_classes = X.shape[0], W.shape[1]
    passes, results, out = {}, {}, {}
    for mode in MODES:
        backend = backends[mode]
        passes[mode] = peers.make_fastsoftmax(X, y, W, b, backend=backend)
        rows = backend.max_chunk_rows(X, n_classes)
        out[mode] = {"chunk_rows": rows, "chunks": math.ceil(n_samples / rows)}
        loss, dW = passes[mode]()
        results[mode] = float(loss), backend.to_host(dW)
    loss_again, dW_again = passes["deterministic"]()
    (loss, dW), (other_loss, other_dW) = results["deterministic"], results["free_memory"]
    out["bit_identical"] = float(loss_again) == loss and bool(
        (backends["deterministic"].to_host(dW_again) == dW).all()
    )
    out["max_rel_err"] = gpu_pass.max_rel_err(other_dW, dW)
    out["loss_rel_err"] = abs(other_loss - loss) / abs(loss)
    problems = []
    if not out["bit_identical"]:
        problems.append("deterministic=True gave different bits on a second pass")
    if not (out["max_rel_err"] <= gpu_pass.RTOL and out["loss_rel_err"] <= gpu_pass.RTOL):
        problems.append(
            f"the two modes disagree: dW max rel err {out['max_rel_err']:.2e}, loss rel err "
            f"{out['loss_rel_err']:.2e} (tolerance {gpu_pass.RTOL:g})"
        )
    if problems:
        out["check_failed"] = "; ".join(problems)
        return out
    for mode in MODES:
        out[mode].update(gpu_pass.summarize(timer(passes[mode], repeats)))
    out["ratio"] = out["deterministic"]["median_s"] / out["free_memory"]["median_s"]
    return out


def run(repeats, seed=0):
    """The stage on this machine's GPU: size the workload, generate it, :func:`measure` it.

    Returns
    -------
    dict
        :func:`measure`'s fields with the workload's (``n_samples``, ``n_features``,
        ``n_classes``, ...); or ``out_of_memory`` when the problem does not fit.
    """
    import cupy

    from fastsoftmax.backends.cuda import CudaBackend

    backends = {"deterministic": CudaBackend(), "free_memory": CudaBackend(deterministic=False)}
    # A chunk's rows depend on X's width and placement, not on its length.
    probe = cupy.empty((1, FEATURES), cupy.float32)
    n_samples = workload_rows(backends["deterministic"].max_chunk_rows(probe, CLASSES))
    workload = Workload(f"{n_samples}x{FEATURES}x{CLASSES}", n_samples, FEATURES, CLASSES)
    result = workload.fields()
    try:
        problem = gpu_peers.make_device_problem(n_samples, FEATURES, CLASSES, seed)
        result.update(measure(backends, problem, repeats, _event_timer))
        del problem
    except gpu_pass.oom_errors() as exc:
        message = str(exc).strip().splitlines()[0]
        result.update(out_of_memory=message, tried_bytes=gpu_pass.oom_tried_bytes(message))
    gpu_ceilings.free_device_memory()
    return result


def _event_timer(fn, repeats):
    return gpu_ceilings.event_times(fn, repeats, warmup=1)


def report_lines(result):
    """The stage's lines in ``report.txt``: both passes, their chunks and the ratio."""
    head = "deterministic=True against deterministic=False, one pass"
    if "n_samples" in result:
        head += f" over {result['n_samples']} x {result['n_features']} x {result['n_classes']}"
    why = failure(result)
    if why:
        return [f"{head}: FAILED: {why}"]
    lines = [f"{head} (median of repeats):"]
    for mode, label in zip(MODES, ("deterministic=True ", "deterministic=False")):
        r = result[mode]
        lines.append(
            f"  {label}  {r['median_s'] * 1e3:9.2f} ms (spread {(r['max_s'] - r['min_s']) * 1e3:.2f} ms)"
            f"  {r['chunks']} chunks of {r['chunk_rows']} rows"
        )
    lines.append(
        f"  ratio {result['ratio']:.3f}; bit-identical on a second pass: {result['bit_identical']}; "
        f"the modes differ by {result['max_rel_err']:.1e} in dW"
    )
    return lines
