"""SoftmaxClassifier on Dask arrays and DataFrames: fitted by the workers, steered by the client.

- **L-BFGS** (the default) runs on the client over :class:`DaskObjective`: every
  evaluation is one pass of Dask tasks over the partitions, tree-reduced, so the
  iterates are the single-machine solver's on the same objective and the fit
  reaches the same optimum.
- **SGD and Adam** use *parameter averaging once per epoch* (local SGD): every
  partition runs one epoch of the single-machine minibatch solver from the current
  parameters, and the client averages the results, weighted by each partition's
  total sample weight.  One parameter broadcast and one reduction per epoch, where
  reducing gradients would take one per minibatch: with Dask's few milliseconds of
  scheduling per round trip and batches that take well under a millisecond, a
  per-step all-reduce would spend its time in the scheduler.  The price: the
  optimiser's momentum and moments restart every epoch, and with P partitions an
  epoch moves as far as one of P times fewer steps averaged over P replicas, so
  minibatch fits on Dask need more epochs than in memory (and do not equal them).

Labels are found with one pass over ``y`` (``da.unique``); features are validated
on the workers (NaN or inf raises ``ValueError`` naming the partition).  Nothing is
gathered on the client but parameters, gradients and per-partition scalars.
"""

import math

import dask
import dask.array as da
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ..estimator import SoftmaxClassifier, _all_or_nothing
from ..params import validate_params
from ..progress import Progress
from ..scaling import preconditioner_from_mean_squares
from ..solvers import UPDATE_RULES, MinibatchConfig, lbfgs
from ..solvers.minibatch import MinibatchRun, MinibatchState, end_epoch, learning_rate_at, minibatch
from ..validation import check_dtype
from .objective import DaskObjective, partition_objective, partition_sums, tree_sum


def _as_dask_array(a, name):
    """A Dask array from a Dask array, DataFrame or Series (row chunks of known size)."""
    if isinstance(a, da.Array):
        return a
    if hasattr(a, "to_dask_array"):  # dask DataFrame or Series
        return a.to_dask_array(lengths=True)
    raise TypeError(
        f"{name} must be a dask array, DataFrame or Series for fastsoftmax.dask, got {type(a).__name__}; "
        "use fastsoftmax.SoftmaxClassifier for in-memory data"
    )


def _finite(X):
    """A partition of X, checked on its worker: ValueError when it holds NaN or inf."""
    if not np.all(np.isfinite(X)):
        raise ValueError("Input X contains NaN or infinity.")
    return X


def _apply(model, method, X):
    return getattr(model, method)(X)


def _class_indices(y, classes):
    return np.searchsorted(classes, y).astype(np.int64)


def _per_row(index, values):
    return values[index]


def partition_epoch(part, params, n_classes, options, seed):
    """One local epoch of the minibatch solver on one partition.

    Returns ``(loss * weight, W * weight, b * weight, weight)`` so that the reduction
    tree of :func:`tree_sum` averages the parameters, weighted by partition weight.
    """
    W, b = params
    weight = float(np.sum(part[2]))
    if part[0].shape[0] == 0 or weight == 0:
        return 0.0, np.zeros(W.shape), np.zeros(b.shape), 0.0
    objective = partition_objective(
        part, W.dtype, n_classes, options["alpha"], options["fit_intercept"], options["backend"]
    )
    be = objective.backend
    state = MinibatchState(
        solver=options["solver"],
        backend=be.name,
        update=UPDATE_RULES[options["solver"]](**options["update"]),
        rng=np.random.RandomState(seed),
    )
    config = MinibatchConfig(
        batch_size=options["batch_size"],
        learning_rate="constant",
        learning_rate_init=options["lr"],
        power_t=0.5,
        n_iter_no_change=1,
        shuffle=options["shuffle"],
    )
    result = minibatch(
        objective,
        (be.asarray(W), be.asarray(b)),
        max_iter=1,
        tol=0.0,
        config=config,
        state=state,
        stop_early=False,
    )
    W_new, b_new = (be.to_host(p) for p in result.params)
    # float64: the tree adds many partials.
    W_new, b_new = W_new.astype(np.float64), b_new.astype(np.float64)
    return result.loss_curve[0] * weight, W_new * weight, b_new * weight, weight


class DaskSoftmaxClassifier(SoftmaxClassifier):
    """:class:`fastsoftmax.SoftmaxClassifier` for Dask collections on a Dask cluster.

    Takes the same hyper-parameters.  ``fit`` takes a Dask array or DataFrame ``X``
    and a Dask array or Series ``y`` (and ``sample_weight``) partitioned alike by
    rows; ``predict``, ``predict_proba``, ``predict_log_proba`` and
    ``decision_function`` return Dask arrays, computed where the partitions live.
    With ``solver="lbfgs"`` and ``dtype="float64"`` the fit reaches the optimum of
    the in-memory estimator on the same rows.  Not supported on Dask:
    ``early_stopping``, ``warm_start``, ``partial_fit``, checkpoints.

    ``backend`` names the backend of each worker ("auto": CUDA on workers with a
    GPU, as dask-cuda runs them; the CPU elsewhere); the client's share of the
    work (the L-BFGS update, averaging) runs on NumPy.

    Examples
    --------
    >>> import dask.array as da
    >>> from fastsoftmax.dask import SoftmaxClassifier
    >>> X = da.random.default_rng(0).standard_normal((1000, 5), chunks=250)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> clf = SoftmaxClassifier(alpha=1e-2, dtype="float64").fit(X, y)
    >>> clf.predict(X[:3]).compute().shape
    (3,)
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    @property
    def partial_fit(self):
        raise AttributeError("partial_fit is not available on Dask; fit runs minibatch epochs on the workers")

    @_all_or_nothing
    def fit(self, X, y, sample_weight=None):
        """Fit on Dask collections; see :class:`DaskSoftmaxClassifier`.

        Parameters
        ----------
        X : dask.array.Array or dask.dataframe.DataFrame of shape (n_samples, n_features)
        y : dask.array.Array or dask.dataframe.Series of shape (n_samples,)
        sample_weight : dask.array.Array or Series, optional

        Returns
        -------
        self
        """
        validate_params(self.get_params(deep=False))
        for option in ("early_stopping", "warm_start"):
            if getattr(self, option):
                raise ValueError(f"{option}=True is not supported by fastsoftmax.dask")
        dtype = check_dtype(self.dtype)
        self._record_feature_names(X)
        if hasattr(X, "columns"):
            X = X.astype(dtype)  # bool and nullable pandas columns too, as in memory
        X, y, sample_weight = self._dask_training_data(X, y, sample_weight, dtype)
        classes = np.unique(da.unique(y).compute())
        check_classification_targets(classes)  # continuous or NaN labels are refused, as in memory
        if len(classes) < 2:
            raise ValueError(
                f"y holds only one class, {classes.tolist()[0]!r}; SoftmaxClassifier needs samples of at least 2 classes"
            )
        y_idx = y.map_blocks(_class_indices, classes=classes, dtype=np.int64)
        sw = self._dask_weights(sample_weight, y_idx, classes, X, dtype)
        # The partitions are persisted on the workers, in bundles, for every pass.
        objective = DaskObjective(
            X,
            y_idx,
            sw,
            len(classes),
            float(self.alpha),
            bool(self.fit_intercept),
            dtype,
            self._worker_backend(),
        )
        if self.solver == "lbfgs":
            result = self._fit_lbfgs(objective)
            params, n_iter, loss_curve = result.params, result.n_iter, result.loss_curve
            converged, message = result.converged, result.message
        else:
            params, n_iter, loss_curve, converged, message = self._fit_averaged(objective)
        self._warn_if_unconverged(converged, message, stacklevel=3)
        W, b = params
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            raise FloatingPointError("the fit produced non-finite parameters; lower learning_rate_init")
        self.classes_ = classes
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = b.copy()
        self.n_iter_ = n_iter
        self.loss_curve_ = list(loss_curve)
        self.n_features_in_ = X.shape[1]
        self._minibatch_state = None
        return self

    # -- fitting --------------------------------------------------------------------
    def _dask_training_data(self, X, y, sample_weight, dtype):
        X = _as_dask_array(X, "X")
        y = _as_dask_array(y, "y")
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got an array of shape {X.shape} instead")
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {y.shape}")
        if np.isnan(X.shape[0]) or np.isnan(y.shape[0]):
            raise ValueError("X and y need known partition lengths (use to_dask_array(lengths=True))")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
        # One chunk of columns; y and the weights chunked as X's rows.
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X of shape {X.shape} is empty; need at least one sample and one feature")
        # One chunk of columns; y and the weights cut exactly as X's rows, however uneven
        # (a filtered DataFrame's partitions are).
        X = X.rechunk({1: -1}).astype(dtype)
        y = y.rechunk({0: X.chunks[0]})
        X = X.map_blocks(_finite, dtype=dtype)
        if sample_weight is not None:
            sample_weight = _as_dask_array(sample_weight, "sample_weight")
            if sample_weight.shape != (X.shape[0],):
                raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {sample_weight.shape}")
            sample_weight = sample_weight.rechunk({0: X.chunks[0]})
        self.n_features_in_ = X.shape[1]
        return X, y, sample_weight

    def _dask_weights(self, sample_weight, y_idx, classes, X, dtype):
        """Sample weight times class weight, per row, as a Dask array (checked on the workers)."""
        if sample_weight is None:
            sw = da.ones(X.shape[0], chunks=X.chunks[0], dtype=np.float64)
        else:
            sw = sample_weight.astype(np.float64)
            low, total, finite = dask.compute(sw.min(), sw.sum(), da.isfinite(sw).all())
            if not finite:
                raise ValueError("sample_weight contains NaN or infinity")
            if low < 0:
                raise ValueError("sample_weight must be non-negative")
            if total <= 0:
                raise ValueError("sample_weight sums to zero; at least one sample must carry weight")
        if self.class_weight is not None:
            per_class = self._per_class_weight(
                classes, lambda: da.bincount(y_idx, weights=sw, minlength=len(classes)).compute()
            )
            sw = sw * y_idx.map_blocks(_per_row, values=per_class, dtype=np.float64)
            if not sw.sum().compute() > 0:
                raise ValueError("sample_weight times class_weight sums to zero; no sample carries weight")
        return sw.astype(dtype)

    def _fit_lbfgs(self, objective):
        # The preconditioner from every row's mean square (one pass on the workers).
        mean_squares = objective.mean_squares()
        preconditioner = None
        if mean_squares is not None:
            preconditioner = preconditioner_from_mean_squares(
                mean_squares, float(self.alpha), objective.dtype, bool(self.fit_intercept)
            )
        return lbfgs(
            objective,
            objective.init_params(),
            max_iter=self.max_iter,
            tol=self.tol,
            verbose=self.verbose,
            preconditioner=preconditioner,
        )

    def _fit_averaged(self, objective):
        """Minibatch epochs on every partition, parameters averaged after each."""
        partitions, dtype = objective.partitions, objective.dtype
        config = self._minibatch_config()
        update = (
            {"momentum": self.momentum, "nesterov": self.nesterov}
            if self.solver == "sgd"
            else {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
        )
        rng = check_random_state(self.random_state)
        state = MinibatchState(solver=self.solver, backend="dask", update=None, rng=rng)
        run = MinibatchRun(params=objective.init_params(), loss_curve=[], validation_curve=[])
        with Progress(self.max_iter, "epoch", self.verbose > 0) as progress:
            while run.stopped is None and run.epochs_run < self.max_iter:
                lr = learning_rate_at(config, state, self.max_iter)
                options = {
                    "backend": self._worker_backend(),
                    "alpha": float(self.alpha),
                    "fit_intercept": bool(self.fit_intercept),
                    "solver": self.solver,
                    "update": update,
                    "batch_size": self.batch_size,
                    "lr": lr,
                    "shuffle": self.shuffle,
                }
                shared = dask.delayed(run.params, pure=True)
                seeds = rng.randint(0, 2**31 - 1, size=len(partitions))
                tasks = [
                    dask.delayed(partition_epoch, pure=True)(
                        part, shared, objective.n_classes, options, int(seed)
                    )
                    for part, seed in zip(partitions, seeds)
                ]
                loss, W, b, weight = tree_sum(tasks).compute()
                run.params = ((W / weight).astype(dtype), (b / weight).astype(dtype))
                if run.first_loss is None:
                    run.first_loss = math.log(objective.n_classes)  # the zero start's loss, as in memory
                end_epoch(run, state, config, loss / weight, None, lr, self.tol, True, progress)
        converged = run.stopped is not None
        message = run.stopped or f"reached max_iter={self.max_iter}"
        return run.params, run.epochs_run, run.loss_curve, converged, message

    def _record_feature_names(self, X):
        columns = getattr(X, "columns", None)
        if columns is not None and len(columns) and all(isinstance(c, str) for c in columns):
            self.feature_names_in_ = np.asarray(list(columns), dtype=object)
        else:
            self.__dict__.pop("feature_names_in_", None)

    def _check_feature_names(self, X):
        fitted = getattr(self, "feature_names_in_", None)
        columns = getattr(X, "columns", None)
        if fitted is not None and columns is not None and list(columns) != fitted.tolist():
            raise ValueError(
                f"X has columns {list(columns)}, but the model was fitted with {fitted.tolist()}; "
                "the feature names must match those seen in fit, in order"
            )

    def _worker_backend(self):
        return self.backend if isinstance(self.backend, str) else "auto"

    # -- prediction -----------------------------------------------------------------
    def _map_partitions(self, X, method, width, dtype):
        """``method`` of an in-memory copy of this model, on every partition of ``X``."""
        check_is_fitted(self, "coef_")
        self._check_feature_names(X)
        if hasattr(X, "columns"):
            X = X.astype(self.coef_.dtype)
        X = _as_dask_array(X, "X")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}, but SoftmaxClassifier is expecting {self.n_features_in_} features as input."
            )
        local = SoftmaxClassifier(**self.get_params(deep=False))
        for name in ("classes_", "coef_", "intercept_", "n_features_in_"):
            setattr(local, name, getattr(self, name))
        local.backend = self._worker_backend()
        model = dask.delayed(local, pure=True)  # one task: each worker fetches the model once
        X = X.rechunk({1: -1})
        blocks = [
            da.from_delayed(
                dask.delayed(_apply, pure=True)(model, method, block),
                shape=(rows,) if width is None else (rows, width),
                dtype=dtype,
            )
            for block, rows in zip(X.to_delayed().ravel(), X.chunks[0])
        ]
        return da.concatenate(blocks)

    def predict(self, X):
        """Labels, as a Dask array computed on the workers."""
        return self._map_partitions(X, "predict", None, self.classes_.dtype)

    def predict_proba(self, X):
        """Class probabilities, as a Dask array of shape (n_samples, n_classes)."""
        return self._map_partitions(X, "predict_proba", len(self.classes_), self.coef_.dtype)

    def predict_log_proba(self, X):
        """Log-probabilities, as a Dask array of shape (n_samples, n_classes)."""
        return self._map_partitions(X, "predict_log_proba", len(self.classes_), self.coef_.dtype)

    def decision_function(self, X):
        """Logits (or, for two classes, the margin), as a Dask array."""
        width = None if len(self.classes_) == 2 else len(self.classes_)
        return self._map_partitions(X, "decision_function", width, self.coef_.dtype)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy, computed on the workers."""
        y = _as_dask_array(y, "y")
        hits = (self.predict(X) == y).astype(np.float64)
        if sample_weight is None:
            return float(hits.mean().compute())
        w = _as_dask_array(sample_weight, "sample_weight")
        return float(((hits * w).sum() / w.sum()).compute())


__all__ = ["DaskSoftmaxClassifier", "partition_epoch", "partition_sums"]
