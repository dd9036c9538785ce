"""One full-batch loss-and-gradient pass on the GPU, as each implementation computes it.

The device twin of ``bench.peers``.  Every ``make_*`` function takes the same float32
problem, already on the device (:func:`make_device_problem`: CuPy arrays, which PyTorch
shares through DLPack without a copy), and returns a zero-argument callable that runs one
pass and returns ``(loss, dW)`` with dW of shape (n_features, n_classes) on the device.
The callables do not synchronise: the timer (``bench.gpu_ceilings.event_times``) does.
fastsoftmax's ``loss_grad`` returns the loss as a Python float, which waits for its own
kernels; that wait is part of its pass, as it is for its solvers.

The scale is the plain mean cross-entropy (unit weights, alpha = 0), with an intercept.
Every implementation computes in float32 with float32 GEMMs: CuPy's GEMMs are full float32
unless ``CUPY_TF32`` is set (``bench.gpu_pass`` refuses to run then), and the PyTorch peers
set ``torch.set_float32_matmul_precision("highest")`` (no TF32).

CuPy and PyTorch are imported inside the functions, so this module imports without them.
"""

from . import peers


def make_device_problem(n_samples, n_features, n_classes, seed=0):
    """Random float32 data, int64 labels and small weights, generated on the device.

    Nothing crosses the host-device link: the data never needs a copy that a timed pass
    could include.  Labels are int64 because ``torch.nn.functional.cross_entropy`` takes
    no other integer type, and fastsoftmax's estimator hands its backend int64 too.

    Returns
    -------
    X : cupy.ndarray of shape (n_samples, n_features), float32
    y : cupy.ndarray of shape (n_samples,), int64
    W : cupy.ndarray of shape (n_features, n_classes), float32
    b : cupy.ndarray of shape (n_classes,), float32
    """
    import cupy

    rs = cupy.random.RandomState(seed)
    X = rs.standard_normal((n_samples, n_features), dtype=cupy.float32)
    y = rs.randint(0, n_classes, size=n_samples, dtype=cupy.int64)
    W = (rs.standard_normal((n_features, n_classes), dtype=cupy.float32) * 0.05).astype(cupy.float32)
    b = (rs.standard_normal(n_classes, dtype=cupy.float32) * 0.1).astype(cupy.float32)
    return X, y, W, b


def make_fastsoftmax(X, y, W, b, backend="cuda"):
    """fastsoftmax's objective on its CUDA backend (``backend`` is a parameter for the CPU tests)."""
    return peers.make_fastsoftmax(X, y, W, b, backend=backend)


def make_cupy(X, y, W, b):
    """The textbook CuPy version: logits, stable softmax, one-hot subtraction, ``X.T @ G / N``."""
    import cupy

    n = X.shape[0]

    def run():
        Z = X @ W
        Z += b
        row_loss = peers.textbook_softmax_grad_(cupy, Z, y)
        dW = X.T @ Z
        dW /= n  # on the (D, C) product: N / D times fewer divisions than scaling G
        return row_loss.mean(), dW

    return run


def _check_torch_shares_cupy_stream():
    import cupy
    import torch

    torch_stream = torch.cuda.current_stream().cuda_stream
    cupy_stream = cupy.cuda.get_current_stream().ptr
    if torch_stream != cupy_stream:
        raise RuntimeError(
            f"PyTorch's current stream ({torch_stream:#x}) is not CuPy's ({cupy_stream:#x}): CUDA events "
            "recorded on CuPy's stream would not time PyTorch's kernels. Unset "
            "CUPY_CUDA_PER_THREAD_DEFAULT_STREAM, or run without PyTorch streams of your own."
        )


def _make_torch(X, y, W, b, compile_):
    """PyTorch: ``F.linear`` with nn.Linear's (n_classes, n_features) weight, ``cross_entropy``, backward."""
    import torch
    import torch.nn.functional as F

    _check_torch_shares_cupy_stream()
    torch.set_float32_matmul_precision("highest")
    X_t, y_t = torch.from_dlpack(X), torch.from_dlpack(y)
    weight = torch.from_dlpack(W).T.contiguous().requires_grad_()
    bias = torch.from_dlpack(b).clone().requires_grad_()

    def loss_fn(X_t, y_t, weight, bias):
        return F.cross_entropy(F.linear(X_t, weight, bias), y_t)

    if compile_:
        # A fresh compile per workload: with the cache of the previous shape still there,
        # dynamo would recompile with dynamic shapes instead of specialising.
        torch.compiler.reset()
        loss_fn = torch.compile(loss_fn, dynamic=False)

    def run():
        weight.grad = None
        bias.grad = None
        loss = loss_fn(X_t, y_t, weight, bias)
        loss.backward()
        return loss.detach(), weight.grad.T

    return run


def make_torch(X, y, W, b):
    """PyTorch eager, TF32 off."""
    return _make_torch(X, y, W, b, compile_=False)


def make_torch_compile(X, y, W, b):
    """``torch.compile`` of the eager function (forward and, through AOTAutograd, backward).

    Compilation happens in the first call, which ``bench.gpu_pass`` times separately.
    """
    return _make_torch(X, y, W, b, compile_=True)


PEERS = {
    "fastsoftmax": make_fastsoftmax,
    "torch": make_torch,
    "torch.compile": make_torch_compile,
    "cupy": make_cupy,
}


def available(name):
    """None when the implementation can run here, else why not (CuPy itself is assumed)."""
    if name == "fastsoftmax":
        from fastsoftmax import BackendUnavailableError, get_backend

        try:
            get_backend("cuda")
        except BackendUnavailableError as exc:
            return str(exc)
        return None
    if name in ("torch", "torch.compile"):
        from .gpu_ceilings import torch_unavailable_reason

        return torch_unavailable_reason()
    return None
