"""Full-batch L-BFGS on the backend's own arrays (NumPy or CuPy).

Parameters, gradients and the curvature history stay where the backend keeps them;
the only values that cross to the host are scalars: the objective's value, the
directional derivative for the line search and the largest gradient entry for the
stopping test.  One implementation serves every backend, so a CPU fit and a GPU fit
take the same steps.

Algorithm: the two-loop recursion (Nocedal and Wright, *Numerical Optimization*,
Alg. 7.4) with ``history_size`` pairs and the initial inverse Hessian
``gamma * diag(P)``, where P is a diagonal preconditioner (each feature's inverse
mean square, :mod:`fastsoftmax.scaling`; the identity without one) and
``gamma = s.y / y.P.y``, and a line search for the strong Wolfe conditions (Alg. 3.5
and 3.6, cubic interpolation, ``c1 = 1e-4``, ``c2 = 0.9``) in which a trial step
whose objective overflows counts as infinitely bad.  Curvature pairs are kept when
``s.y > eps * (-t g.d)``, SciPy's scale-free test.  Stopping follows SciPy's
L-BFGS-B as scikit-learn configures it: every gradient entry at most ``tol``
(converged), or a relative decrease ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1)`` at
most ``64 eps`` of float64 (converged), or ``max_iter`` iterations, or a line search
that finds no decrease (the objective's precision is reached: not converged).  The
objective sums its loss in float64 even for float32 data, which is what lets float32
fits get within a few 1e-4 of the float64 optimum before that happens.
"""

import functools
import math

import numpy as np

from ..checkpoint import expect_array, reading
from ..progress import Progress
from .result import SolverResult

_C1, _C2 = 1e-4, 0.9
# Objective evaluations per line search at most (SciPy's default maxls is 20).
_MAX_LINE_SEARCH_EVALS = 20
# A bracket narrower than this, relative to the step, cannot tell points apart in the
# objective's precision any more: the search gives up instead of bisecting on.
_MIN_RELATIVE_WIDTH = 1e-6


def _dot(u, v):
    """Sum of elementwise products over a tuple of arrays, as a backend scalar."""
    return sum((a * b).sum() for a, b in zip(u, v))


def _axpy(alpha, x, y):
    """``y + alpha * x`` for tuples of arrays (new arrays)."""
    return tuple(yi + alpha * xi for xi, yi in zip(x, y))


def _max_abs(u):
    return max(float(abs(a).max()) for a in u)


def _two_loop_direction(grads, history, precondition):
    """``-H grads`` with H the L-BFGS inverse-Hessian estimate from ``history``.

    The estimate starts from ``gamma * diag(precondition)`` rather than ``gamma * I``,
    with ``gamma = s.y / y.P.y`` from the newest pair (Nocedal and Wright, eq. 7.20,
    in the metric of P).
    """
    q = grads
    alphas = []
    for s, y, rho in reversed(history):
        a = rho * _dot(s, q)
        q = _axpy(-a, y, q)
        alphas.append(a)
    q = tuple(p * qi for p, qi in zip(precondition, q))
    if history:
        s, y, _ = history[-1]
        py = tuple(p * yi for p, yi in zip(precondition, y))
        q = tuple(_dot(s, y) / _dot(y, py) * qi for qi in q)
    for (s, y, rho), a in zip(history, reversed(alphas)):
        beta = rho * _dot(y, q)
        q = _axpy(a - beta, s, q)
    return tuple(-qi for qi in q)


def _cubic_minimiser(t1, f1, d1, t2, f2, d2):
    """Minimiser of the cubic through two points with slopes, or None (N&W eq. 3.59)."""
    e1 = d1 + d2 - 3 * (f1 - f2) / (t1 - t2)
    radicand = e1 * e1 - d1 * d2
    if radicand < 0:
        return None
    e2 = math.copysign(math.sqrt(radicand), t2 - t1)
    denominator = d2 - d1 + 2 * e2
    if denominator == 0:
        return None
    return t2 - (t2 - t1) * (d2 + e2 - e1) / denominator


def _strong_wolfe(phi, f0, slope0, t):
    """Step length satisfying the strong Wolfe conditions, or None.

    ``phi(t)`` returns ``(f, slope, params, grads)`` at ``params0 + t d``.  At most
    ``_MAX_LINE_SEARCH_EVALS`` evaluations in all, bracketing and zoom together.
    """
    budget = [_MAX_LINE_SEARCH_EVALS]

    def counted(t):
        budget[0] -= 1
        return phi(t)

    return _bracket(counted, f0, slope0, t, budget)


def _bracket(phi, f0, slope0, t, budget):
    prev = (0.0, f0, slope0, None, None)
    for i in range(_MAX_LINE_SEARCH_EVALS):
        if budget[0] <= 0:
            return None
        point = (t, *phi(t))
        _, f, slope, _, _ = point
        if f > f0 + _C1 * t * slope0 or (i > 0 and f >= prev[1]):
            return _zoom(phi, f0, slope0, prev, point, budget)
        if abs(slope) <= -_C2 * slope0:
            return point
        if slope >= 0:
            return _zoom(phi, f0, slope0, point, prev, budget)
        prev, t = point, 2.0 * t
    return None


def _zoom(phi, f0, slope0, lo, hi, budget):
    while budget[0] > 0:
        t_lo, f_lo, d_lo = lo[:3]
        t_hi, f_hi, d_hi = hi[:3]
        width = t_hi - t_lo
        if abs(width) <= _MIN_RELATIVE_WIDTH * max(abs(t_lo), abs(t_hi)):
            break
        t = _cubic_minimiser(t_lo, f_lo, d_lo, t_hi, f_hi, d_hi)
        # Keep the trial inside the interval, away from its ends; bisect otherwise.
        low, high = min(t_lo, t_hi), max(t_lo, t_hi)
        margin = 0.1 * abs(width)
        if t is None or not (low + margin <= t <= high - margin):
            t = t_lo + 0.5 * width
        if t == t_lo or t == t_hi:
            break
        point = (t, *phi(t))
        _, f, slope, _, _ = point
        if f > f0 + _C1 * t * slope0 or f >= f_lo:
            hi = point
        else:
            if abs(slope) <= -_C2 * slope0:
                return point
            if slope * width >= 0:
                hi = lo
            lo = point
    # No point met the curvature condition; a sufficient decrease still moves on.
    if lo[3] is not None and lo[1] < f0:
        return lo
    return None


def _snapshot(params, grads, f, history, loss_curve, n_iter, stopped):
    """Checkpoint entries of an L-BFGS run (see :mod:`fastsoftmax.checkpoint`)."""
    entries = {
        "solver": "lbfgs",
        "W": params[0],
        "b": params[1],
        "dW": grads[0],
        "db": grads[1],
        "f": f,
        "loss_curve": loss_curve,
        "steps": n_iter,
        "stopped": stopped,
        "history_size": len(history),
    }
    for i, (s, y, rho) in enumerate(history):
        entries.update({f"s{i}_W": s[0], f"s{i}_b": s[1], f"y{i}_W": y[0], f"y{i}_b": y[1], f"rho{i}": rho})
    return entries


def _restore(saved, asarray, shapes, max_iter):
    """``params, grads, f, history, loss_curve, n_iter, stopped`` from a checkpoint's state.

    ``shapes`` are those of (W, b); every array is checked against its own.  Raises
    ValueError for anything else than what :func:`_snapshot` writes.
    """
    if saved["solver"] != "lbfgs":
        raise ValueError(f"the checkpoint is of solver={saved['solver']!r}, not 'lbfgs'")
    stopped, n_iter = saved["stopped"], int(saved["steps"])
    if not (stopped is None or isinstance(stopped, str)):
        raise ValueError(f"stopped must be null or a message, got {stopped!r}")
    if not 0 <= n_iter <= max_iter:
        raise ValueError(f"the checkpoint is at iteration {n_iter}, beyond max_iter={max_iter}")
    history_size = int(saved["history_size"])
    if not 0 <= history_size <= n_iter:
        raise ValueError(f"history_size={history_size} for {n_iter} iterations")

    def pair(w, b):
        return asarray(expect_array(saved, w, shapes[0])), asarray(expect_array(saved, b, shapes[1]))

    history = [
        # rho is a backend scalar, as the running solver keeps it.
        (
            pair(f"s{i}_W", f"s{i}_b"),
            pair(f"y{i}_W", f"y{i}_b"),
            asarray(expect_array(saved, f"rho{i}", ()))[()],
        )
        for i in range(history_size)
    ]
    return (
        pair("W", "b"),
        pair("dW", "db"),
        float(saved["f"]),
        history,
        [float(v) for v in saved["loss_curve"]],
        n_iter,
        stopped,
    )


def lbfgs(
    objective,
    params0,
    *,
    max_iter,
    tol,
    verbose=0,
    history_size=10,
    preconditioner=None,
    checkpoint=None,
    resume=None,
    **_unused,
):
    """Minimise ``objective`` from ``params0`` with L-BFGS.

    Parameters
    ----------
    objective : SoftmaxObjective
    params0 : tuple (W, b) of backend arrays (not modified)
    max_iter : int
    tol : float
        Converged when every gradient entry is at most ``tol`` in magnitude.
    verbose : int
    history_size : int, default=10
        Curvature pairs kept (SciPy's and scikit-learn's default).
    preconditioner : ndarray of shape (n_features,), optional
        Diagonal of the starting inverse Hessian for each feature's row of W (the
        intercept's is 1); see :mod:`fastsoftmax.scaling`.  None: the identity.
    checkpoint : CheckpointWriter, optional
        Told of every iteration, and written to when the run ends.
    resume : SavedFit, optional
        A checkpoint to continue from; ``params0`` is then unused.

    Returns
    -------
    SolverResult

    Raises
    ------
    FloatingPointError
        When the objective is not finite at the starting point.
    """
    ftol = 64 * np.finfo(np.float64).eps
    precondition = (1.0, 1.0)  # for W's rows and for b
    if preconditioner is not None:
        rows = np.reshape(preconditioner, (-1, 1))
        precondition = (objective.backend.asarray(rows, params0[0].dtype), 1.0)
    if resume is None:
        params = tuple(p.copy() for p in params0)
        f, grads = objective.loss_grad(params)
        history, loss_curve, n_iter, stopped = [], [], 0, None
        if not math.isfinite(f):
            raise FloatingPointError(
                f"the objective is {f} at the starting point; the features or the starting "
                "parameters are too large for the dtype"
            )
    else:
        with reading(resume):
            shapes = (params0[0].shape, params0[1].shape)
            params, grads, f, history, loss_curve, n_iter, stopped = _restore(
                resume.state, objective.backend.asarray, shapes, max_iter
            )
    converged, message = stopped is not None and not stopped.startswith("the line search"), stopped
    with Progress(max_iter, "lbfgs", verbose > 0) as progress:
        while stopped is None:
            if _max_abs(grads) <= tol:
                converged, message = True, f"every gradient entry is at most tol={tol}"
                break
            if n_iter >= max_iter:
                message = f"reached max_iter={max_iter}"
                break
            direction = _two_loop_direction(grads, history, precondition)
            slope0 = float(_dot(grads, direction))
            if not slope0 < 0:  # lost positive definiteness: restart from the preconditioned gradient
                history.clear()
                direction = _two_loop_direction(grads, history, precondition)
                slope0 = float(_dot(grads, direction))
            # The first step is scaled to unit length, later ones start at the full step.
            t0 = 1.0 if history else min(1.0, 1.0 / math.sqrt(-slope0))

            def phi(t, params=params, direction=direction):
                trial = _axpy(t, direction, params)
                f_t, g_t = objective.loss_grad(trial)
                if not math.isfinite(f_t):
                    # Overflow at a step too long: infinitely bad, so the search shortens it.
                    return math.inf, math.nan, trial, g_t
                return f_t, float(_dot(g_t, direction)), trial, g_t

            found = _strong_wolfe(phi, f, slope0, t0)
            if found is None:
                stopped = message = (
                    f"the line search found no decrease: the objective is at the precision of "
                    f"{np.dtype(objective.dtype).name} (dtype='float64' reaches a tighter optimum)"
                )
                break
            t, f_new, _, new_params, new_grads = found
            s = tuple(t * d for d in direction)
            y = tuple(gn - g for gn, g in zip(new_grads, grads))
            sy = _dot(s, y)
            # SciPy's L-BFGS-B test: keep the pair when the curvature is positive
            # relative to the step's predicted decrease -t g.d.  Both sides scale alike
            # with the features; a test against y.y does not, and rejected every pair
            # for features of 1e6 in float32 (the fit stalled on steepest descent).
            if float(sy) > np.finfo(objective.dtype).eps * (-t * slope0):
                history.append((s, y, 1.0 / sy))
                del history[:-history_size]
            decrease = (f - f_new) / max(abs(f), abs(f_new), 1.0)
            params, grads, f = new_params, new_grads, f_new
            n_iter += 1
            loss_curve.append(f)
            progress.step(f)
            if decrease <= ftol:
                converged = True
                stopped = message = f"relative decrease of the objective below {ftol:.2g}"
                break
            if checkpoint is not None:
                checkpoint.step(
                    functools.partial(_snapshot, params, grads, f, history, loss_curve, n_iter, None)
                )
    if checkpoint is not None:
        checkpoint.write(_snapshot(params, grads, f, history, loss_curve, n_iter, stopped))
    return SolverResult(
        params=params, n_iter=n_iter, converged=converged, loss_curve=loss_curve, message=message
    )
