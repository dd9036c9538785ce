"""Time to accuracy: how long a full fit takes to reach scikit-learn's optimum.

Definition
----------
For one training set, the *time to accuracy* of an implementation is the wall time of a
complete fit, from the user's call to fitted coefficients on the host, that ends with the
objective

    f(W, b) = mean_i (logsumexp(z_i) - z_i[y_i]) + alpha / 2 * ||W||_F^2,   z_i = x_i W^T + b

within ``TARGET_REL`` (1e-6) relative of scikit-learn's optimum ``f*``: ``f <= f* + 1e-6 |f*|``.
Reported with it: the iterations that took, the signed relative gap ``(f - f*) / |f*|``
and the accuracy on held-out rows.

Method
------
1. ``f*`` is the optimum of ``LogisticRegression(C=1 / (alpha * n_samples), tol=1e-10)``
   fitted on float64 copies of the data (:func:`reference_optimum`); its remaining
   gradient is recorded so that a reader can judge how converged it is.
2. Each implementation is a *fitter* (``bench.fitters.FITTERS``): a factory that does the untimed
   setup (copies to the device, a tiny warm-up fit that compiles kernels) and returns
   ``fit(k)``, a complete, deterministic fit from zero capped at ``k`` iterations with
   every tolerance off.  The first ``k`` iterations of a line-search L-BFGS do not depend
   on the cap and every accepted step decreases the objective, so the objective after
   ``fit(k)`` is non-increasing in ``k``.
3. :func:`search_iterations` finds the smallest ``k`` whose fit reaches the target:
   ``k = 1, 2, 4, ...`` up to ``max_iter``, then bisection between the last miss and the
   first hit.
4. ``repeats`` complete fits at that ``k`` are timed: median, min and max wall time.
   GPU fitters return host NumPy coefficients, which waits for the device.
5. Every fit is judged by the same float64 evaluator on the host (:func:`objective`,
   :func:`accuracy`), reading the float32 data in row chunks so memory stays bounded.

An implementation that never reaches the target within ``max_iter`` iterations (or that
stops early, e.g. when a float32 objective can no longer tell two points apart) is
reported with its best gap and ``reached=False``, and is not timed.  One that ends below
``f*`` by more than ``1e-7`` relative carries a warning: then the reference, not the
implementation, is the one that had not converged.

The implementations and how each stops are ``bench.fitters``'s.

CuPy, PyTorch and scikit-learn are imported inside functions, so this module imports
without them.  ``python -m bench`` runs it as the suites' "accuracy" stage.
"""

import math
import statistics
import time
import traceback
import warnings

import numpy as np

from . import gpu_ceilings
from .fitters import FITTERS, available
from .workloads import parse

TARGET_REL = 1e-6
# Below f* by more than this (relative), the reference is the one that had not converged.
BELOW_REFERENCE_REL = 1e-7
REFERENCE_TOL = 1e-10
REFERENCE_MAX_ITER = 100_000
# Row chunks of the float64 evaluator: about this many bytes of float64 data and logits.
_EVAL_CHUNK_BYTES = 32 << 20


# -- the problem and the evaluator -------------------------------------------------------
def make_fit_problem(n_train, n_test, n_features, n_classes, seed=0):
    """Float32 data whose labels come from a random linear model, split into train and test.

    Parameters
    ----------
    n_train, n_test, n_features, n_classes : int
        ``n_classes >= 3``: for two classes scikit-learn fits a single weight vector, a
        different parametrisation of the same model.
    seed : int, default=0

    Returns
    -------
    X_train : ndarray of shape (n_train, n_features), float32
    y_train : ndarray of shape (n_train,), int64, labels ``0 .. n_classes - 1``
    X_test : ndarray of shape (n_test, n_features), float32
    y_test : ndarray of shape (n_test,), int64

    Raises
    ------
    ValueError
        For fewer than 3 classes, or a training set that misses a class (every
        implementation must fit the same ``n_classes`` rows of coefficients).
    """
    if n_classes < 3:
        raise ValueError(f"n_classes must be at least 3, got {n_classes}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    X = rng.standard_normal((n, n_features), dtype=np.float32)
    # Logits of standard deviation about 3: classes overlap, so the optimum is interior.
    W_true = rng.standard_normal((n_features, n_classes)) / np.sqrt(n_features) * 3
    logits = X @ W_true
    P = np.exp(logits - logits.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1).astype(np.int64)
    missing = np.setdiff1d(np.arange(n_classes), y[:n_train])
    if missing.size:
        raise ValueError(f"the training rows miss classes {missing.tolist()}; use more rows")
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def _chunks(X, n_classes):
    """Row slices of about ``_EVAL_CHUNK_BYTES`` of float64 features and logits."""
    step = max(1, _EVAL_CHUNK_BYTES // (8 * (X.shape[1] + n_classes)))
    for start in range(0, X.shape[0], step):
        yield slice(start, start + step)


def _logits(X, rows, coef, intercept):
    return X[rows].astype(np.float64) @ coef.T + intercept


def _objective_and_grad(X, y, coef, intercept, alpha, grad=True):
    """The objective, and optionally its gradient ``(dW (C, D), db (C,))``, in float64."""
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64)
    n = X.shape[0]
    total = 0.0
    dW = np.zeros_like(coef) if grad else None
    db = np.zeros_like(intercept) if grad else None
    for rows in _chunks(X, coef.shape[0]):
        Z = _logits(X, rows, coef, intercept)
        idx = np.arange(Z.shape[0])
        Z -= Z.max(axis=1, keepdims=True)  # the row max keeps exp() finite
        z_y = Z[idx, y[rows]]
        np.exp(Z, out=Z)
        s = Z.sum(axis=1)
        total += float(np.sum(np.log(s) - z_y))
        if grad:
            Z /= s[:, None]
            Z[idx, y[rows]] -= 1
            dW += Z.T @ X[rows].astype(np.float64)
            db += Z.sum(axis=0)
    f = total / n + 0.5 * alpha * float(np.sum(coef * coef))
    if not grad:
        return f
    return f, (dW / n + alpha * coef, db / n)


def objective(X, y, coef, intercept, alpha):
    """The penalised mean cross-entropy in float64 on the host, the same for every implementation.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Float32 (or float64) features; converted to float64 one row chunk at a time.
    y : ndarray of shape (n_samples,)
        Integer labels ``0 .. n_classes - 1``.
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)
    alpha : float
        L2 strength on ``coef`` (the intercept is not penalised).

    Returns
    -------
    float
        ``mean_i (logsumexp(z_i) - z_i[y_i]) + alpha / 2 * ||coef||^2``.
    """
    return _objective_and_grad(X, y, coef, intercept, alpha, grad=False)


def accuracy(X, y, coef, intercept):
    """Fraction of rows whose largest float64 logit is at their label.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)

    Returns
    -------
    float
    """
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64)
    hits = 0
    for rows in _chunks(X, coef.shape[0]):
        hits += int(np.count_nonzero(_logits(X, rows, coef, intercept).argmax(axis=1) == y[rows]))
    return hits / X.shape[0]


def reference_optimum(X, y, alpha):
    """scikit-learn's optimum of the objective, fitted in float64 to a tight tolerance.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Copied to float64 for the fit.
    y : ndarray of shape (n_samples,)
    alpha : float

    Returns
    -------
    dict
        ``objective`` (by :func:`objective`), ``seconds`` (the fit's wall time),
        ``n_iter``, ``tol``, ``grad_max_abs`` (the largest entry of the float64 gradient
        at the optimum: how far from stationary it is), ``warnings`` (scikit-learn's, e.g.
        a line search that gave up), and ``coef`` (n_classes, n_features) and
        ``intercept`` (n_classes,) as float64 arrays; :func:`json_safe` drops the arrays.
    """
    from sklearn.linear_model import LogisticRegression

    X64 = np.ascontiguousarray(X, dtype=np.float64)
    model = LogisticRegression(
        C=1 / (alpha * X.shape[0]), solver="lbfgs", tol=REFERENCE_TOL, max_iter=REFERENCE_MAX_ITER
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        model.fit(X64, y)
        seconds = time.perf_counter() - start
    del X64
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    f, (dW, db) = _objective_and_grad(X, y, coef, intercept, alpha)
    return {
        "objective": f,
        "seconds": seconds,
        "n_iter": int(np.max(model.n_iter_)),
        "tol": REFERENCE_TOL,
        "grad_max_abs": float(max(np.abs(dW).max(), np.abs(db).max())),
        "warnings": [str(w.message)[:200] for w in caught],
        "coef": coef,
        "intercept": intercept,
    }


def json_safe(reference):
    """The reference without its coefficient arrays, for a JSON file.

    Parameters
    ----------
    reference : dict
        As :func:`reference_optimum` returns it.

    Returns
    -------
    dict
    """
    return {key: value for key, value in reference.items() if not isinstance(value, np.ndarray)}


# -- the search ----------------------------------------------------------------------------
def search_iterations(fit, evaluate, target, max_iter):
    """The smallest iteration cap whose fit reaches ``target``.

    Doubles ``k = 1, 2, 4, ...`` (the last step clipped to ``max_iter``) until
    ``evaluate(fit(k)) <= target``, then bisects between the last cap that missed and the
    first that hit.  Assumes the objective is non-increasing in ``k``; if it is not (a
    non-deterministic fit), the ``k`` returned still reaches the target but may not be
    the smallest.  A fit that stops before its cap (``n_iter < k``) without reaching the
    target ends the search: a deterministic fit with a larger cap stops at the same place.

    Parameters
    ----------
    fit : callable
        ``fit(k) -> (coef, intercept, n_iter)``.
    evaluate : callable
        ``evaluate(coef, intercept) -> float``, the objective.
    target : float
        Reached when the objective is at most this.
    max_iter : int
        The largest cap tried.

    Returns
    -------
    dict
        ``reached`` (bool); ``k``, the smallest cap that reaches the target, or the cap
        with the lowest objective seen when none does; ``n_iter`` as the fit at ``k``
        reported it; ``objective``, ``seconds`` (the fit's wall time, without the
        evaluation), ``coef`` and ``intercept`` of the fit at ``k``; ``fits``, how many
        fits the search ran; ``history``, one ``{"k", "n_iter", "objective", "seconds"}``
        per fit in the order run.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    runs = {}
    history = []

    def run(k):
        if k not in runs:
            start = time.perf_counter()
            coef, intercept, n_iter = fit(k)
            seconds = time.perf_counter() - start
            value = float(evaluate(coef, intercept))
            if not math.isfinite(value):
                value = math.inf  # a diverged fit misses the target and is never "best"
            entry = {"k": k, "n_iter": int(n_iter), "objective": value, "seconds": seconds}
            history.append(entry)
            runs[k] = {**entry, "coef": coef, "intercept": intercept}
        return runs[k]

    missed, hit = 0, None  # k = 0 (the start point) is never assumed to reach the target
    k = 1
    while True:
        r = run(k)
        if r["objective"] <= target:
            hit = k
            break
        missed = k
        if r["n_iter"] < k or k >= max_iter:
            break
        k = min(2 * k, max_iter)
    if hit is None:
        best = min(runs.values(), key=lambda r: (r["objective"], r["k"]))
        return {**best, "reached": False, "fits": len(runs), "history": history}
    while hit - missed > 1:
        mid = (missed + hit) // 2
        if run(mid)["objective"] <= target:
            hit = mid
        else:
            missed = mid
    return {**runs[hit], "reached": True, "fits": len(runs), "history": history}


# -- the benchmark -------------------------------------------------------------------------
def parse_spec(spec):
    """``(n_train, n_features, n_classes)`` from an ``"NxDxC"`` spec, with at least 3 classes.

    With 2 classes scikit-learn's ``LogisticRegression`` fits one binary model, whose
    objective is not the multinomial one the others minimise.

    Examples
    --------
    >>> parse_spec("20000x64x10")
    (20000, 64, 10)
    """
    workload = parse(spec)
    if workload.c < 3:
        raise ValueError(
            f"workload {spec!r}: time to accuracy needs C >= 3 (with 2, scikit-learn fits a binary model)"
        )
    return workload.n, workload.d, workload.c


def _rel_gap(value, reference):
    return (value - reference) / abs(reference)


def _measure(fit, data, alpha, target, reference, max_iter, repeats):
    """One implementation's row fields, after the factory has returned ``fit``."""
    X_train, y_train, X_test, y_test = data
    start = time.perf_counter()
    found = search_iterations(
        fit, lambda coef, b: objective(X_train, y_train, coef, b, alpha), target, max_iter
    )
    row = {
        "reached": found["reached"],
        "k": found["k"],
        "n_iter": found["n_iter"],
        "median_s": None,
        "min_s": None,
        "max_s": None,
        "objective": found["objective"],
        "rel_gap": _rel_gap(found["objective"], reference),
        "test_accuracy": accuracy(X_test, y_test, found["coef"], found["intercept"]),
        "fits_searched": found["fits"],
        "search_s": time.perf_counter() - start,
        "history": [
            [h["k"], h["n_iter"], _rel_gap(h["objective"], reference), h["seconds"]] for h in found["history"]
        ],
    }
    notes = []
    if found["reached"]:
        seconds, n_iters = [], set()
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, _, n_iter = fit(found["k"])
            seconds.append(time.perf_counter() - t0)
            n_iters.add(n_iter)
        row.update(median_s=statistics.median(seconds), min_s=min(seconds), max_s=max(seconds))
        if n_iters != {found["n_iter"]}:
            notes.append(
                f"not deterministic: timed fits ran {sorted(n_iters)} iterations, the search's {found['n_iter']}"
            )
    else:
        stopped = found["n_iter"] < found["k"]
        notes.append(
            f"did not reach rel gap {TARGET_REL:g} within max_iter={max_iter}: best {row['rel_gap']:.2e} "
            f"after {found['n_iter']} iterations" + (" (the fit stopped by itself)" if stopped else "")
        )
    if row["rel_gap"] < -BELOW_REFERENCE_REL:
        notes.append(
            f"objective below scikit-learn's by {-row['rel_gap']:.2e} relative: the reference was not converged"
        )
    if notes:
        row["warning"] = "; ".join(notes)
    return row


def run_time_to_accuracy(
    spec, names, alpha, max_iter, repeats, seed=0, log=print, speedup_over="fastsoftmax"
):
    """Time to accuracy of each implementation on one workload.

    Parameters
    ----------
    spec : str
        ``"NxDxC"``: N training rows (and ``N // 4`` held-out rows), D features, C classes.
    names : iterable of str
        Keys of :data:`FITTERS`.
    alpha : float
    max_iter : int
        The largest iteration cap the search tries.
    repeats : int
        Timed fits at the cap found.
    seed : int, default=0
    log : callable, default=print
        Receives one line per stage.
    speedup_over : str, default="fastsoftmax"
        The implementation every speed-up is relative to ("fastsoftmax cuda" on a GPU).

    Returns
    -------
    dict
        ``workload``, ``alpha``, ``target_rel``, ``max_iter``, ``repeats``, ``seconds``
        (the whole run), ``reference`` (:func:`reference_optimum` without its arrays) and
        ``rows``: one dict per implementation with ``workload`` and ``implementation``,
        and ``skipped`` (why it cannot run here), or ``error`` (its exception), or the
        measurement: ``reached``, ``k``, ``n_iter``, ``median_s``, ``min_s``, ``max_s``
        (None when not reached), ``objective``, ``rel_gap``, ``test_accuracy``,
        ``fits_searched``, ``search_s``, ``history`` (``[k, n_iter, rel_gap, seconds]``
        per search fit), ``fastsoftmax_speedup`` (this row's median over the
        ``speedup_over`` row's; None unless both reached) and, when something is off,
        ``warning``.  ``speedup_over`` names the implementation the speed-ups compare with.
    """
    started = time.perf_counter()
    n, d, c = parse_spec(spec)
    names = list(names)
    unknown = [name for name in names if name not in FITTERS]
    if unknown:  # before the reference fit, which can take a while
        raise ValueError(f"unknown implementations {unknown}; choose from {list(FITTERS)}")
    data = make_fit_problem(n, n // 4, d, c, seed=seed)
    X_train, y_train = data[0], data[1]
    log(f"{spec}: reference optimum (scikit-learn, float64, tol={REFERENCE_TOL:g})")
    reference = reference_optimum(X_train, y_train, alpha)
    f_star = reference["objective"]
    target = f_star + TARGET_REL * abs(f_star)
    log(
        f"{spec}: f* = {f_star:.12g} after {reference['n_iter']} iterations in {reference['seconds']:.2f} s, "
        f"gradient max {reference['grad_max_abs']:.1e}"
    )
    rows = []
    for name in names:
        row = {"workload": spec, "implementation": name}
        rows.append(row)
        why_not = available(name)
        if why_not is not None:
            row["skipped"] = why_not
            log(f"{spec}: {name}: skipped ({why_not})")
            continue
        try:
            fit = FITTERS[name](X_train, y_train, alpha)
            row.update(_measure(fit, data, alpha, target, f_star, max_iter, repeats))
        except Exception as exc:  # one implementation failing must not stop the others
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{spec}: {name}: error\n{traceback.format_exc()}")
            continue
        finally:
            fit = None
            gpu_ceilings.free_device_memory()
        log(f"{spec}: {name}: " + _format_row(row))
    base = next((r for r in rows if r["implementation"] == speedup_over and r.get("median_s")), None)
    for row in rows:
        if "reached" in row:
            both = base is not None and row["median_s"] is not None
            row["fastsoftmax_speedup"] = row["median_s"] / base["median_s"] if both else None
    return {
        "workload": spec,
        "alpha": alpha,
        "target_rel": TARGET_REL,
        "max_iter": max_iter,
        "repeats": repeats,
        "speedup_over": speedup_over,
        "seconds": time.perf_counter() - started,
        "reference": json_safe(reference),
        "rows": rows,
    }


# -- reporting -----------------------------------------------------------------------------
def _format_row(row):
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"error: {row['error']}"
    time_s = (
        f"{row['median_s']:.3f} s [{row['min_s']:.3f}, {row['max_s']:.3f}]"
        if row["reached"]
        else "not reached"
    )
    text = (
        f"{time_s}, {row['n_iter']} iterations, rel gap {row['rel_gap']:+.2e}, "
        f"test accuracy {row['test_accuracy']:.4f}, {row['fits_searched']} fits searched in {row['search_s']:.1f} s"
    )
    return text + (f"; WARNING {row['warning']}" if "warning" in row else "")


def format_table(result):
    """A plain-text table of :func:`run_time_to_accuracy`'s result.

    Parameters
    ----------
    result : dict

    Returns
    -------
    str
    """
    lines = [
        f"{result['workload']}, alpha={result['alpha']:g}: f* = {result['reference']['objective']:.10g}, "
        f"target rel gap {result['target_rel']:g}, run {result['seconds']:.1f} s",
        f"{'implementation':<22}{'median s':>10}{'min s':>9}{'max s':>9}{'iters':>7}{'rel gap':>11}"
        f"{'test acc':>10}{'x ' + result['speedup_over']:>20}{'fits':>6}",
    ]
    for r in result["rows"]:
        if "reached" not in r:
            status = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}"
            lines.append(f"{r['implementation']:<22}{status}")
            continue

        def num(value, fmt):
            return format(value, fmt) if value is not None else "-"

        lines.append(
            f"{r['implementation']:<22}{num(r['median_s'], '10.3f')}{num(r['min_s'], '9.3f')}"
            f"{num(r['max_s'], '9.3f')}{r['n_iter']:>7}{r['rel_gap']:>+11.2e}{r['test_accuracy']:>10.4f}"
            f"{num(r['fastsoftmax_speedup'], '20.2f')}{r['fits_searched']:>6}"
        )
        if "warning" in r:
            lines.append(f"    warning: {r['warning']}")
    return "\n".join(lines)
