"""The naive float64 reference of the objective, the tolerance rule and random problems.

Everything numeric in the tests is checked against :func:`reference_loss_grad`, the
docstring formula of :mod:`fastsoftmax.objective` written out in NumPy and always
evaluated in float64 ("truth"), whatever the dtype of its inputs.
"""

import numpy as np


def reference_log_softmax(Z):
    """Row-wise ``log(softmax(Z))`` in float64, as ``(z - m) - log(sum(exp(z - m)))``.

    Shifting by the row max ``m`` keeps exp from overflowing; subtracting ``log(d)``
    from the shifted row rather than ``lse = m + log(d)`` from ``z`` keeps the
    absolute error at a few eps even when ``|m|`` is huge (``m + log(d)`` would
    round ``log(d)`` away next to ``m = 1e4`` or ``3e38``).
    """
    Z = np.asarray(Z, dtype=np.float64)
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def reference_loss_grad(X, y, W, b=None, sample_weight=None, alpha=0.0):
    """Loss and gradient of the penalised objective, in float64.

    ``L = (1/s) sum_i s_i (logsumexp(z_i) - z_i[y_i]) + alpha/2 ||W||^2``,
    ``dW = X^T G + alpha W``, ``db = G^T 1`` with ``G_i = (s_i/s) (p_i - e_{y_i})``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of int, shape (n_samples,)
    W : array-like of shape (n_features, n_classes)
    b : array-like of shape (n_classes,), optional
        None means no intercept: ``z = XW`` and ``db`` is zeros.
    sample_weight : array-like of shape (n_samples,), optional
    alpha : float

    Returns
    -------
    loss : float
    dW : ndarray of shape (n_features, n_classes), float64
    db : ndarray of shape (n_classes,), float64
    """
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    y = np.asarray(y)
    rows = np.arange(len(y))
    Z = X @ W
    if b is not None:
        Z = Z + np.asarray(b, dtype=np.float64)
    log_p = reference_log_softmax(Z)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    scale = sw / sw.sum()
    loss = -(scale * log_p[rows, y]).sum() + 0.5 * alpha * (W * W).sum()
    G = np.exp(log_p)
    G[rows, y] -= 1.0
    G *= scale[:, None]
    dW = X.T @ G + alpha * W
    db = G.sum(axis=0) if b is not None else np.zeros(W.shape[1])
    return float(loss), dW, db


def rtol_for(dtype, n_terms):
    """Tolerance for a reduction of n_terms values rounded in dtype (error grows like sqrt(n))."""
    return 4 * np.finfo(dtype).eps * np.sqrt(n_terms)


def max_rel_err(got, ref):
    """``max |got - ref| / max |ref|``: the error relative to the largest entry of the reference."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def make_problem(n_samples, n_features, n_classes, dtype, seed, peaked=False):
    """A random problem ``X, y, W, b`` in ``dtype`` whose labels follow the model itself.

    Logits are of order one, so every class has a fair probability; with
    ``peaked=True`` every third row of X is scaled by 30, which makes the softmax of
    those rows nearly one-hot (logit gaps of tens).  Labels are drawn from the
    model's own probabilities, so peaked rows mostly carry their most likely class
    and the loss is small there, as it is near an optimum.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype
    y : ndarray of shape (n_samples,), intp
    W : ndarray of shape (n_features, n_classes), dtype
    b : ndarray of shape (n_classes,), dtype
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    if peaked:
        X[::3] *= 30.0
    W = rng.standard_normal((n_features, n_classes)) / np.sqrt(n_features)
    b = 0.5 * rng.standard_normal(n_classes)
    X, W, b = (a.astype(dtype) for a in (X, W, b))
    P = np.exp(reference_log_softmax(X.astype(np.float64) @ W + b))
    u = rng.random((n_samples, 1))
    y = np.minimum((P.cumsum(axis=1) < u).sum(axis=1), n_classes - 1).astype(np.intp)
    return X, y, W, b


def skip_float64_in_simulator(backend, dtype):
    """Skip a float64 case on the simulated CUDA backend.

    The simulator computes the kernels mostly in Python floats (float64) whatever the
    dtype, so a float64 case there repeats the float32 one at its cost; float64 runs
    on the CPU and on a GPU.
    """
    if getattr(backend, "simulated", False) and dtype == np.float64:
        import pytest

        pytest.skip("the float32 case covers the simulated kernels; float64 runs on the CPU and a GPU")
