"""The diagonal preconditioner of L-BFGS: how steeply the objective rises along each weight.

Along weight ``W[j, k]`` the objective's curvature is at most about the weighted mean
of ``x_ij^2`` (times ``p (1 - p) <= 1/4``) plus ``alpha``; along the intercept, about
1.  Features of very different scales (counts in the millions beside flags, or every
feature near 1e6) make these differ by many orders of magnitude, and L-BFGS started
from a multiple of the identity then wastes its line searches (in float32 it stalls:
the objective cannot resolve the steps the badly scaled directions need).  Scaling the
starting inverse Hessian by ``1 / (mean x_j^2 + alpha)`` per feature is the same as
fitting on features divided by their root mean square -- without copying X -- and
leaves the optimum unchanged.

The mean squares are estimated from at most ``SAMPLE_ROWS`` rows (drawn at random, or
the first chunks of a data source): a preconditioner within a factor of two does its
job, and a full pass over a large data set would cost as much as an iteration.
"""

import numpy as np
import scipy.sparse as sp

from .streaming import SourceFeatures
from .validation import is_device_array, is_device_sparse, to_host

SAMPLE_ROWS = 1 << 16
# Rows converted to float64 and squared at once: a few MB of temporaries, not a copy of X.
_BLOCK_ROWS = 1024
# Spread of curvatures from which the preconditioner is used.  Raw pixels (0..16, with
# rare ones near 0) span about 1e5 and fit as well without it, along scikit-learn's
# path; features of 1e3 beside the intercept span 1e6, and float32 fits of such data
# stall without it.
SPREAD_LIMIT = 2.0**20


def feature_preconditioner(X, sample_weight, alpha, dtype, fit_intercept=True):
    """``1 / (weighted mean of x_j^2 + alpha)`` per feature j, or None where scaling is fine.

    Parameters
    ----------
    X : array, sparse matrix (SciPy or CuPy) or SourceFeatures
    sample_weight : ndarray of shape (n_samples,)
    alpha : float
    dtype : np.float32 or np.float64
        The fit's precision: the result is clipped to the square root of its range.
    fit_intercept : bool, default=True
        Whether the intercept's curvature (1) counts in the spread.

    Returns
    -------
    ndarray of shape (n_features,), float64, on the host, or None
        Powers of two.  None when the curvatures of the features that are not zero
        and of the intercept span less than ``SPREAD_LIMIT``: L-BFGS's own scalar
        scaling copes with that, and without a preconditioner the fit takes the
        path scikit-learn's takes.
    """
    squares, total = _weighted_squares(X, np.asarray(to_host(sample_weight), np.float64))
    if total <= 0:
        return None
    return preconditioner_from_mean_squares(squares / total, alpha, dtype, fit_intercept)


def preconditioner_from_mean_squares(mean_squares, alpha, dtype, fit_intercept=True):
    """:func:`feature_preconditioner` from each feature's weighted mean square, however obtained.

    Parameters
    ----------
    mean_squares : ndarray of shape (n_features,)
    alpha : float
    dtype : np.float32 or np.float64
    fit_intercept : bool, default=True

    Returns
    -------
    ndarray of shape (n_features,), or None
    """
    # A feature that is zero in every sampled row moves only the penalty: leave it be.
    present = mean_squares > 0
    curvature = mean_squares[present] + alpha
    if fit_intercept:
        curvature = np.append(curvature, 1.0)  # the intercept's
    if curvature.size == 0:
        return None
    if curvature.max() < SPREAD_LIMIT * curvature.min():
        return None
    limit = np.sqrt(np.finfo(dtype).max)
    inverse = np.ones_like(mean_squares)
    inverse[present] = np.clip(1.0 / (mean_squares[present] + alpha), 1 / limit, limit)
    # Powers of two: scaling by them is exact, and the same rows summed in another
    # order (in memory or from a source, up to SAMPLE_ROWS rows) get the same
    # preconditioner, hence the same fit.
    return np.exp2(np.round(np.log2(inverse)))


def _weighted_squares(X, weights):
    """``sum_i w_i x_ij^2`` over the sampled rows, and ``sum_i w_i`` over them."""
    squares, total = np.zeros(X.shape[1]), 0.0
    if isinstance(X, SourceFeatures):
        source, seen = X.source, 0
        # The first chunks, one at a time: no read-ahead past what is needed.
        for index, chunk in source.iter_features(range(source.n_chunks), X.dtype, prefetch=False):
            lo, hi = source.bounds[index]
            squares += column_squares(chunk, weights[lo:hi])
            total += weights[lo:hi].sum()
            seen += hi - lo
            if seen >= SAMPLE_ROWS:
                break
        return squares, total
    n_samples = X.shape[0]
    if n_samples <= SAMPLE_ROWS:
        rows = np.arange(n_samples)
    else:
        # Random rows, from a fixed seed (a fit's own generator must not move): evenly
        # spaced ones would alias with periodic data, such as interleaved classes.
        rows = np.unique(np.random.RandomState(0).randint(0, n_samples, SAMPLE_ROWS))
    device = is_device_array(X) or is_device_sparse(X)
    for start in range(0, len(rows), _BLOCK_ROWS):
        block = rows[start : start + _BLOCK_ROWS]
        if device:
            import cupy

            squares += to_host(column_squares(X[cupy.asarray(block)], cupy.asarray(weights[block])))
        else:
            squares += column_squares(X[block], weights[block])
    return squares, weights[rows].sum()


def column_squares(X, w):
    """``X.T**2 @ w`` in float64, for dense or CSR X (NumPy or CuPy), a block of rows at a time."""
    if X.shape[0] == 0:
        return np.zeros(X.shape[1])
    total = 0
    for start in range(0, X.shape[0], _BLOCK_ROWS):
        block = X[start : start + _BLOCK_ROWS].astype(np.float64)
        squared = block.multiply(block) if sp.issparse(block) or is_device_sparse(block) else block * block
        total = total + squared.T @ w[start : start + _BLOCK_ROWS]
    return total
