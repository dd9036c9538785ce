"""The fitters of the time-to-accuracy benchmark (``bench.accuracy``): one per implementation.

A fitter is a factory ``(X_train, y_train, alpha) -> fit`` that does the untimed setup
(copies to the device, a tiny warm-up fit that compiles kernels) and returns ``fit(k)``:
a complete, deterministic fit from zero capped at ``k`` iterations with every tolerance
off, returning ``(coef (C, D) float64, intercept (C,) float64, n_iter)`` on the host.

Implementations (all on the same float32 data, from zero, L-BFGS with 10 curvature pairs):

    fastsoftmax           SoftmaxClassifier(dtype="float32", backend="cpu")
    fastsoftmax float64   SoftmaxClassifier(dtype="float64", backend="cpu")
    fastsoftmax cuda      SoftmaxClassifier(dtype="float32", backend="cuda"), data already on the device
    sklearn               LogisticRegression(solver="lbfgs") on the float32 data as a user passes it
    torch                 torch.optim.LBFGS (strong Wolfe) on F.linear + F.cross_entropy, CPU float32
    torch cuda            the same on a CUDA device, TF32 off
    numpy+scipy           scipy.optimize.minimize(method="L-BFGS-B") over a textbook NumPy float32 pass

With every tolerance off, each runs exactly ``k`` iterations until it can make no more
progress in its precision, and then stops by itself (checked on 20000x64x10 and
200000x256x20, where every one stops between 1e-7 and 1e-14 above ``f*``, inside the
target): fastsoftmax float32 when its line search finds no decrease, fastsoftmax float64
and scikit-learn when the relative decrease falls below 64 eps of float64, numpy+scipy when
the objective stops changing, PyTorch when the step or the change in its float32 loss is
exactly zero.  The objective stays non-increasing in ``k``, and :func:`search_iterations`
takes such a stop as the end of the search.

CuPy, PyTorch, SciPy and scikit-learn are imported inside functions, so this module imports
without them.
"""

import warnings

import numpy as np

# Rows of the warm-up fit each factory runs before returning ``fit``.
_WARMUP_ROWS = 256


def _n_classes(y):
    return int(y.max()) + 1


def _ignoring_convergence_warnings(fit_model):
    """Run ``fit_model()`` with ConvergenceWarning silenced: a cap of k iterations is the point."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_model()


def _fastsoftmax_factory(dtype, backend):
    def factory(X, y, alpha):
        from fastsoftmax import SoftmaxClassifier
        from fastsoftmax.backends import cuda_simulated

        def model(k):
            return SoftmaxClassifier(
                alpha=alpha, solver="lbfgs", max_iter=k, tol=0, backend=backend, dtype=dtype
            )

        if backend == "cuda" and not cuda_simulated():
            import cupy

            # The data starts on the device, as for a user whose pipeline is on the GPU;
            # the estimator takes y to the host for np.unique, which is part of its fit.
            X, y = cupy.asarray(X), cupy.asarray(y)
            cupy.cuda.get_current_stream().synchronize()
        # Compile the Numba kernels (and create the BLAS handles) outside the timing.
        _ignoring_convergence_warnings(lambda: model(1).fit(X[:_WARMUP_ROWS], y[:_WARMUP_ROWS]))

        def fit(k):
            m = _ignoring_convergence_warnings(lambda: model(k).fit(X, y))
            # coef_ is a host NumPy array on every backend: the fit has synchronised.
            return m.coef_.astype(np.float64), m.intercept_.astype(np.float64), int(m.n_iter_)

        return fit

    return factory


def _sklearn_factory(X, y, alpha):
    from sklearn.linear_model import LogisticRegression

    C = 1 / (alpha * X.shape[0])

    def fit(k):
        # scikit-learn computes in float32 for float32 X: its starting coefficients are
        # float32 and SciPy hands ``fun`` x in x0's dtype, so the logits, gradient and loss
        # sum are float32 (L-BFGS-B's own arithmetic is float64).  tol=0 turns off the
        # gradient test; its ftol = 64 eps and a failed line search can still stop it early.
        m = _ignoring_convergence_warnings(
            lambda: LogisticRegression(C=C, solver="lbfgs", tol=0, max_iter=k).fit(X, y)
        )
        return m.coef_.astype(np.float64), m.intercept_.astype(np.float64), int(np.max(m.n_iter_))

    return fit


def _torch_factory(device):
    def factory(X, y, alpha):
        import torch
        import torch.nn.functional as F

        if device == "cuda":
            torch.set_float32_matmul_precision("highest")  # full float32 GEMMs, no TF32
        X_t = torch.from_numpy(np.ascontiguousarray(X)).to(device)
        y_t = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
        n_classes = _n_classes(y)

        def fit(k):
            # F.linear with nn.Linear's (C, D) weight, started at zero like the others
            # (nn.Linear's random initialisation would start each fit elsewhere).
            weight = torch.zeros((n_classes, X_t.shape[1]), device=device, requires_grad=True)
            bias = torch.zeros(n_classes, device=device, requires_grad=True)
            optimizer = torch.optim.LBFGS(
                [weight, bias],
                lr=1,
                max_iter=k,
                # At most 25 line-search evaluations per iteration: this never binds, so the
                # cap on iterations is the only cap, as for the other fitters.
                max_eval=30 * k + 10,
                tolerance_grad=0,
                tolerance_change=0,
                history_size=10,
                line_search_fn="strong_wolfe",
            )

            def closure():
                optimizer.zero_grad()
                loss = F.cross_entropy(F.linear(X_t, weight, bias), y_t) + 0.5 * alpha * weight.square().sum()
                loss.backward()
                return loss

            optimizer.step(closure)
            n_iter = int(optimizer.state[weight].get("n_iter", 0))
            # .cpu() waits for the device.
            coef = weight.detach().cpu().numpy().astype(np.float64)
            return coef, bias.detach().cpu().numpy().astype(np.float64), n_iter

        fit(2)  # warm-up: allocator, BLAS and autograd set up outside the timing
        return fit

    return factory


def _numpy_scipy_factory(X, y, alpha):
    from scipy.optimize import minimize

    from .peers import textbook_softmax_grad_

    n, d = X.shape
    c = _n_classes(y)

    def loss_grad(theta):
        # theta = [W (D, C) row-major, b (C)] in float64, as L-BFGS-B keeps it; the pass
        # runs in float32 like the textbook NumPy version in bench.peers.
        W64 = theta[: d * c]
        W = W64.reshape(d, c).astype(np.float32)
        Z = X @ W
        Z += theta[d * c :].astype(np.float32)
        row_loss = textbook_softmax_grad_(np, Z, y)  # Z becomes softmax - onehot
        dW = X.T @ Z
        dW /= n
        db = Z.sum(axis=0) / n
        # A float32 mean, as in the textbook version: it rounds at about 1e-7 relative, yet
        # L-BFGS-B still ends within 1e-8 of f* (7.5e-9 on 200000x256x20), so it does not
        # decide whether the 1e-6 target is reached.
        loss = float(row_loss.mean()) + 0.5 * alpha * float(W64 @ W64)
        return loss, np.concatenate([dW.ravel() + alpha * W64, db])

    def fit(k):
        result = minimize(
            loss_grad,
            np.zeros(d * c + c),
            jac=True,
            method="L-BFGS-B",
            # maxfun far above 20 line-search evaluations per iteration: never the binding cap.
            options={"maxiter": k, "gtol": 0, "ftol": 0, "maxcor": 10, "maxfun": 50 * k + 100},
        )
        theta = result.x
        return theta[: d * c].reshape(d, c).T.copy(), theta[d * c :].copy(), int(result.nit)

    return fit


FITTERS = {
    "fastsoftmax": _fastsoftmax_factory("float32", "cpu"),
    "fastsoftmax float64": _fastsoftmax_factory("float64", "cpu"),
    "fastsoftmax cuda": _fastsoftmax_factory("float32", "cuda"),
    "sklearn": _sklearn_factory,
    "torch": _torch_factory("cpu"),
    "torch cuda": _torch_factory("cuda"),
    "numpy+scipy": _numpy_scipy_factory,
}
"""Name to factory ``(X_train, y_train, alpha) -> fit``; ``fit(k)`` returns
``(coef (C, D) float64, intercept (C,) float64, n_iter)`` on the host."""


def available(name):
    """None when the implementation can run here, else why not.

    Parameters
    ----------
    name : str
        A key of :data:`FITTERS`.

    Returns
    -------
    str or None
    """
    if name not in FITTERS:
        raise KeyError(f"unknown implementation {name!r}; choose from {list(FITTERS)}")
    if name == "fastsoftmax cuda":
        from fastsoftmax import BackendUnavailableError, get_backend
        from fastsoftmax.backends import cuda_simulated

        try:
            get_backend("cuda")
        except BackendUnavailableError as exc:
            return f"no CUDA backend: {exc}"
        if cuda_simulated():
            return None  # Numba's simulator runs the backend on NumPy arrays: no CuPy needed
        try:
            import cupy  # noqa: F401
        except ImportError as exc:
            return f"cupy not installed ({exc})"
        return None
    if name in ("torch", "torch cuda"):
        try:
            import torch
        except ImportError as exc:
            return f"torch not installed ({exc})"
        if name == "torch cuda" and not torch.cuda.is_available():
            return f"no CUDA GPU: PyTorch {torch.__version__} sees no CUDA device"
    if name in ("sklearn", "numpy+scipy"):
        module = "sklearn" if name == "sklearn" else "scipy"
        try:
            __import__(module)
        except ImportError as exc:
            return f"{module} not installed ({exc})"
    return None
