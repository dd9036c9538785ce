"""A full L-BFGS fit on the CPU: fastsoftmax against scikit-learn's LogisticRegression.

Run from the repository root::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.cpu_fit --output bench/results/cpu_fit.json

Both fit the same penalised objective (``C = 1 / (alpha * n_samples)``) on the same
float32 data from ``bench.peers.make_problem`` plus a learnable signal, with the
same stopping rule (every gradient entry at most ``tol``).  Reported: wall time,
iterations, the final objective evaluated by one float64 reference for both models,
and held-out accuracy.
"""

import argparse
import json
import time
import warnings

import numpy as np

from . import machine


def make_classification(n_samples, n_features, n_classes, seed=0):
    """Float32 data whose labels come from a random linear model, so the fit has signal."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    W_true = rng.standard_normal((n_features, n_classes)) / np.sqrt(n_features) * 3
    logits = X @ W_true
    P = np.exp(logits - logits.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) > rng.random((n_samples, 1))).argmax(axis=1)
    return X, y


def objective(X, y, coef, intercept, alpha):
    """The penalised mean cross-entropy in float64, for both fitted models alike."""
    Z = X.astype(np.float64) @ coef.T.astype(np.float64) + intercept
    m = Z.max(axis=1)
    lse = m + np.log(np.exp(Z - m[:, None]).sum(axis=1))
    return float(np.mean(lse - Z[np.arange(len(y)), y]) + 0.5 * alpha * np.sum(coef.astype(np.float64) ** 2))


def run(spec, alpha, tol, max_iter):
    from sklearn.linear_model import LogisticRegression

    from fastsoftmax import SoftmaxClassifier

    n, d, c = (int(v) for v in spec.split("x"))
    X, y = make_classification(n + n // 4, d, c)
    X_train, y_train, X_test, y_test = X[:n], y[:n], X[n:], y[n:]
    models = {
        "fastsoftmax (float32)": SoftmaxClassifier(alpha=alpha, tol=tol, max_iter=max_iter, backend="cpu"),
        "fastsoftmax (float64)": SoftmaxClassifier(
            alpha=alpha, tol=tol, max_iter=max_iter, backend="cpu", dtype="float64"
        ),
        "sklearn LogisticRegression": LogisticRegression(C=1 / (alpha * n), tol=tol, max_iter=max_iter),
    }
    # Load and warm the kernels outside the timing, as a long-running process would.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two iterations do not converge; they only warm up
        SoftmaxClassifier(max_iter=2).fit(X_train[:1000], y_train[:1000])
    rows = []
    for name, model in models.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            model.fit(X_train, y_train)
            seconds = time.perf_counter() - start
        n_iter = int(np.max(model.n_iter_))
        rows.append(
            {
                "workload": spec,
                "implementation": name,
                "fit_s": seconds,
                "n_iter": n_iter,
                "objective": objective(X_train, y_train, model.coef_, model.intercept_, alpha),
                "test_accuracy": float(model.score(X_test, y_test)),
                "warnings": [str(w.message)[:160] for w in caught],
            }
        )
    best = min(r["objective"] for r in rows)
    for r in rows:
        r["objective_rel_gap"] = (r["objective"] - best) / best
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["200000x256x20"], help="N x D x C specs")
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--output", help="write results as JSON to this path")
    args = parser.parse_args(argv)
    rows = [r for spec in args.workloads for r in run(spec, args.alpha, args.tol, args.max_iter)]
    print(
        f"{'workload':<16}{'implementation':<30}{'fit s':>8}{'iters':>7}{'objective':>14}{'rel gap':>10}{'test acc':>9}"
    )
    for r in rows:
        print(
            f"{r['workload']:<16}{r['implementation']:<30}{r['fit_s']:>8.2f}{r['n_iter']:>7}"
            f"{r['objective']:>14.8f}{r['objective_rel_gap']:>10.1e}{r['test_accuracy']:>9.4f}"
        )
        for w in r["warnings"]:
            print(f"    warning: {w}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {"machine": machine.describe("bench.cpu_fit"), "args": vars(args), "results": rows},
                f,
                indent=2,
            )
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
