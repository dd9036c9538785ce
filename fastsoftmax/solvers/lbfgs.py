"""Full-batch L-BFGS through SciPy, on flattened float64 parameters.

The objective is evaluated on the backend in its own dtype; SciPy's L-BFGS-B sees
the float64 concatenation ``[W.ravel(), b]`` (b only with an intercept), as
scikit-learn's LogisticRegression does.  Stopping follows scikit-learn too:
``gtol=tol`` on the largest gradient entry, ``ftol = 64 eps``, ``maxls=50``.
"""
import numpy as np
from scipy.optimize import minimize

from ..progress import Progress
from .result import SolverResult


def lbfgs(objective, params0, *, max_iter, tol, verbose=0, **_unused):
    """Minimise ``objective`` from ``params0`` with L-BFGS-B.

    Parameters
    ----------
    objective : SoftmaxObjective
    params0 : tuple (W, b) of backend arrays
    max_iter : int
    tol : float
        Stop when every gradient entry is at most ``tol`` in magnitude.
    verbose : int

    Returns
    -------
    SolverResult
    """
    backend = objective.backend
    W0, b0 = (backend.to_host(p) for p in params0)
    n_w = W0.size
    with_bias = objective.fit_intercept
    dtype = objective.dtype

    def unpack(theta):
        W = backend.asarray(theta[:n_w].reshape(W0.shape), dtype)
        b = backend.asarray(theta[n_w:], dtype) if with_bias else backend.zeros(b0.shape, dtype)
        return W, b

    def fun(theta):
        loss, (dW, db) = objective.loss_grad(unpack(theta))
        grad = backend.to_host(dW).ravel()
        if with_bias:
            grad = np.concatenate([grad, backend.to_host(db)])
        return loss, grad.astype(np.float64)

    theta0 = W0.ravel().astype(np.float64)
    if with_bias:
        theta0 = np.concatenate([theta0, b0.astype(np.float64)])
    loss_curve = []
    with Progress(max_iter, "lbfgs", verbose > 0) as progress:

        def callback(intermediate_result):
            loss_curve.append(float(intermediate_result.fun))
            progress.step(loss_curve[-1])

        result = minimize(
            fun,
            theta0,
            method="L-BFGS-B",
            jac=True,
            callback=callback,
            options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
        )
    return SolverResult(
        params=unpack(result.x),
        n_iter=int(result.nit),
        converged=bool(result.success),
        loss_curve=loss_curve,
        message=str(result.message),
    )
