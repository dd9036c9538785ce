"""One full-batch loss-and-gradient pass, as each implementation computes it.

Every ``make_*`` function takes the same float32 problem and returns a zero-argument
callable that runs one pass and returns ``(loss, dW)`` with dW of shape
(n_features, n_classes), so results can be checked against each other before timing.
The scale is the plain mean cross-entropy (unit weights, alpha = 0), with an intercept.
"""

import numpy as np


def make_problem(n_samples, n_features, n_classes, seed=0):
    """Random float32 data, labels and small weights (non-trivial softmax)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    y = rng.integers(0, n_classes, n_samples)
    W = (rng.standard_normal((n_features, n_classes)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(n_classes) * 0.1).astype(np.float32)
    return X, y, W, b


def textbook_softmax_grad_(xp, Z, y):
    """Rows of logits to ``softmax - onehot`` in place; return ``lse(z_i) - z_i[y_i]`` per row.

    The stable textbook formula in whatever array module ``xp`` is: shared by the plain
    NumPy and CuPy peers, the float64 references and the SciPy fitter of ``bench.accuracy``.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``, matching Z.
    Z : array of shape (n_rows, n_classes)
        Logits (bias included) on entry, ``P - Y`` on exit.
    y : integer array of shape (n_rows,)

    Returns
    -------
    array of shape (n_rows,)
    """
    rows = xp.arange(Z.shape[0])
    Z -= Z.max(axis=1, keepdims=True)  # the row max keeps exp() finite
    z_y = Z[rows, y]  # read before the row is overwritten
    xp.exp(Z, out=Z)
    d = Z.sum(axis=1, keepdims=True)
    Z /= d
    Z[rows, y] -= 1
    return xp.log(d[:, 0]) - z_y


def make_fastsoftmax(X, y, W, b, backend="cpu"):
    """fastsoftmax's objective on a backend (``bench.gpu_peers`` uses it with "cuda")."""
    from fastsoftmax import SoftmaxObjective, get_backend

    be = get_backend(backend)
    sample_weight = be.asarray(np.ones(len(y), dtype=X.dtype))
    objective = SoftmaxObjective(be, be.asarray(X), be.asarray(y), sample_weight, W.shape[1])

    def run():
        loss, (dW, _) = objective.loss_grad((W, b))
        return loss, dW

    return run


def make_sklearn(X, y, W, b):
    """scikit-learn's own objective: LinearModelLoss with HalfMultinomialLoss."""
    import os

    from sklearn._loss.loss import HalfMultinomialLoss
    from sklearn.linear_model._linear_loss import LinearModelLoss

    n_classes = W.shape[1]
    loss_fn = LinearModelLoss(base_loss=HalfMultinomialLoss(n_classes=n_classes), fit_intercept=True)
    coef = np.ascontiguousarray(np.hstack([W.T, b[:, None]]))  # (n_classes, n_features + 1)
    y_float = y.astype(X.dtype)
    n_threads = len(os.sched_getaffinity(0))

    def run():
        loss, grad = loss_fn.loss_gradient(coef, X, y_float, l2_reg_strength=0.0, n_threads=n_threads)
        return loss, grad[:, :-1].T

    return run


def make_torch(X, y, W, b):
    """PyTorch CPU eager: nn.Linear, cross_entropy, backward."""
    import torch

    X_t = torch.from_numpy(X)
    y_t = torch.from_numpy(y.astype(np.int64))
    linear = torch.nn.Linear(W.shape[0], W.shape[1])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(W.T.copy()))
        linear.bias.copy_(torch.from_numpy(b))

    def run():
        linear.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(linear(X_t), y_t)
        loss.backward()
        return loss.item(), linear.weight.grad.numpy().T

    return run


def make_numpy(X, y, W, b):
    """The textbook NumPy version: logits, stable softmax, one-hot subtraction, X.T @ G."""
    n = X.shape[0]

    def run():
        Z = X @ W + b
        loss = float(textbook_softmax_grad_(np, Z, y).mean())
        dW = X.T @ Z
        dW /= n  # on the (D, C) product: N / D times fewer divisions than scaling G
        return loss, dW

    return run


PEERS = {
    "fastsoftmax": make_fastsoftmax,
    "sklearn": make_sklearn,
    "torch": make_torch,
    "numpy": make_numpy,
}


def available(name):
    """None when the peer can run here, else why not."""
    module = {"sklearn": "sklearn", "torch": "torch"}.get(name)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as exc:
        return f"{module} not installed ({exc})"
    return None
