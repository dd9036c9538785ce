"""SoftmaxClassifier: the scikit-learn estimator around the objective and solvers."""

import copy
import functools
import numbers
import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .backends import auto_cpu_reason, get_backend
from .checkpoint import (
    CheckpointWriter,
    as_checkpoint,
    check_context,
    data_layout,
    fit_context,
    load_checkpoint,
    reading,
    restore_rng,
    rng_state,
)
from .objective import SoftmaxObjective
from .params import validate_params
from .persistence import params_as_json
from .scaling import feature_preconditioner
from .solvers import UPDATE_RULES, MinibatchConfig, get_solver
from .solvers.minibatch import MinibatchState
from .sources import DataSourceError, is_source_like, open_source
from .streaming import SourceFeatures, map_row_chunks
from .validation import check_dtype, check_sample_weight, is_device_array, to_host

MINIBATCH_SOLVERS = ("sgd", "adam")


def _streams(X):
    """True for data read chunk by chunk: sources, paths, specs and memory maps."""
    return is_source_like(X) or isinstance(X, np.memmap)


def _all_or_nothing(method):
    """Restore the estimator's attributes if ``method`` raises: no half-updated model."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    return wrapper


def _has_minibatch_solver(model):
    # As in scikit-learn's MLPClassifier: partial_fit exists only for solvers that
    # can take one epoch at a time, so that duck-typing callers see the truth.
    if model.solver not in MINIBATCH_SOLVERS:
        raise AttributeError(
            f"partial_fit needs solver in {MINIBATCH_SOLVERS}; this model has solver={model.solver!r}"
        )
    return True


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """Softmax regression (multinomial logistic regression) with an L2 penalty.

    Minimises the weighted mean cross-entropy plus ``alpha / 2 * ||coef_||^2``::

        L(W, b) = (1/s) sum_i s_i (logsumexp(z_i) - z_i[y_i]) + (alpha/2) ||W||_F^2

    where ``z_i = x_i W + b``, ``s_i`` is the sample weight times the class weight of
    ``y_i`` and ``s = sum_i s_i``.  The intercept is not penalised.  With
    ``solver="lbfgs"`` and ``dtype="float64"`` the optimum is scikit-learn's
    ``LogisticRegression(C=1 / (alpha * s))`` for three or more classes; for two
    classes LogisticRegression fits one weight vector ``w = coef_[1] - coef_[0]``,
    which is the same model at ``C = 2 / (alpha * s)``.

    ``X`` may be a NumPy array, a pandas DataFrame, a SciPy sparse matrix (kept CSR:
    sparse GEMMs on the CPU, cuSPARSE on the GPU), a CuPy array (CUDA backend, where
    it stays on the device), or a data source read chunk by chunk (see :meth:`fit`).

    Parameters
    ----------
    alpha : float, default=1e-4
        L2 strength on the weights.
    fit_intercept : bool, default=True
    solver : {"lbfgs", "sgd", "adam"}, default="lbfgs"
        "lbfgs" is full-batch and converges to the exact optimum; "sgd" and "adam"
        take minibatch steps and suit data too large for many full passes.
    max_iter : int, default=100
        Iterations (lbfgs) or epochs (sgd, adam).
    tol : float, default=1e-4
        lbfgs stops when every gradient entry is at most ``tol``; the minibatch
        solvers stop when the loss fails to improve by ``tol`` for
        ``n_iter_no_change`` epochs.
    batch_size : int, default=1024
        Minibatch rows (sgd, adam).
    learning_rate : {"constant", "invscaling", "adaptive", "cosine"}, default="constant"
        Schedule of the step size over epochs: ``learning_rate_init`` throughout;
        divided by ``(epoch + 1) ** power_t``; divided by 5 whenever the loss stalls
        for ``n_iter_no_change`` epochs; or cosine-annealed to zero at ``max_iter``.
    learning_rate_init : float, default=0.01
    power_t : float, default=0.5
        Exponent of the "invscaling" schedule.
    momentum : float, default=0.9
        SGD momentum.
    nesterov : bool, default=True
        Nesterov momentum for SGD.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's moment decay rates and denominator guard.
    class_weight : None, "balanced" or dict, default=None
        Weight per class, multiplied into the sample weights; "balanced" uses
        ``n_samples / (n_classes * bincount(y))``.
    backend : {"auto", "cpu", "cuda"}, default="auto"
    dtype : {"float32", "float64"}, default="float32"
        Precision of data and parameters during fitting and prediction.
    random_state : int, RandomState or None, default=None
        Seeds minibatch shuffling and the validation split.
    verbose : int, default=0
        1 shows a progress bar per iteration or epoch with the current loss, and with
        ``backend="auto"`` on the CPU, why CUDA was not chosen (no CuPy, no driver, ...).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop
        when its loss stalls, and keep the best parameters seen on it (sgd, adam).
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    shuffle : bool, default=True
        Reshuffle the rows every epoch (sgd, adam).
    warm_start : bool, default=False
        Start ``fit`` from the previous solution (same classes and features).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (n_classes, n_features)
    intercept_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Iterations or epochs of the last fit (summed over ``partial_fit`` calls).
    loss_curve_ : list of float
        Objective after each iteration (lbfgs) or epoch mean (sgd, adam).
    validation_loss_curve_ : list of float
        Validation loss per epoch, with ``early_stopping``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X had string column names (a DataFrame).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastsoftmax import SoftmaxClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = SoftmaxClassifier(alpha=1e-2, dtype="float64").fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    >>> clf.score(X, y) > 0.95
    True
    """

    def __init__(
        self,
        alpha=1e-4,
        *,
        fit_intercept=True,
        solver="lbfgs",
        max_iter=100,
        tol=1e-4,
        batch_size=1024,
        learning_rate="constant",
        learning_rate_init=0.01,
        power_t=0.5,
        momentum=0.9,
        nesterov=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        class_weight=None,
        backend="auto",
        dtype="float32",
        random_state=None,
        verbose=0,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        shuffle=True,
        warm_start=False,
    ):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.momentum = momentum
        self.nesterov = nesterov
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.class_weight = class_weight
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.shuffle = shuffle
        self.warm_start = warm_start

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR X, on either backend
        return tags

    # -- fitting --------------------------------------------------------------------
    @_all_or_nothing
    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, resume_from=None):
        """Fit the model to ``X, y``, replacing any previous fit (unless warm_start).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a data source
            In-memory data, or data read chunk by chunk and never loaded whole: a
            :class:`~fastsoftmax.sources.DataSource`, a path (``.npy``, ``.h5``,
            ``.zarr``, ``.parquet``, ``.svm``), a list of paths, a spec dict (see
            :func:`~fastsoftmax.sources.open_source`), or an ``np.memmap``.
        y : array-like of shape (n_samples,), optional
            Labels of any hashable, sortable type (ints, strings, ...).  Optional
            only for sources that hold their labels.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights.
        checkpoint : str, os.PathLike or Checkpoint, optional
            Save the fit's state there while it runs (given a path: every 60
            seconds; see :class:`~fastsoftmax.Checkpoint` for other intervals) and
            when it ends.  Each write replaces the file atomically.
        resume_from : str or os.PathLike, optional
            A checkpoint of this fit -- the same data, labels, weights and
            hyper-parameters, though ``max_iter``, ``tol``, ``verbose``, ``backend``
            and ``warm_start`` may change -- to continue from where it was written,
            mid-epoch included.  On the CPU backend the result is bit-identical to
            the fit that was never interrupted.

        Returns
        -------
        self

        Raises
        ------
        CheckpointError
            When ``resume_from`` is not a valid checkpoint, or one of another fit.
        """
        validate_params(self.get_params(deep=False))
        checkpoint = as_checkpoint(checkpoint)
        saved = None if resume_from is None else load_checkpoint(resume_from)
        if self.early_stopping and self.solver not in MINIBATCH_SOLVERS:
            raise ValueError(
                f"early_stopping=True needs a minibatch solver {MINIBATCH_SOLVERS}, not solver={self.solver!r}"
            )
        previous = self._fitted_params_if_warm()
        dtype = check_dtype(self.dtype)
        X, y, sample_weight = self._training_data(X, y, sample_weight, dtype, reset=True)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y holds only one class, {classes.tolist()[0]!r}; SoftmaxClassifier needs samples of at least 2 classes"
            )
        sw = self._combined_weight(sample_weight, classes, y_idx, X.shape[0], dtype)
        backend = self._training_backend()
        if previous is not None and previous[0].shape[0] != X.shape[1]:
            raise ValueError(
                f"warm_start=True but X has {X.shape[1]} features while the model has {previous[0].shape[0]}"
            )
        if previous is not None and not np.array_equal(previous[2], classes):
            raise ValueError(
                f"warm_start=True but y has classes {classes.tolist()} while the model has {previous[2].tolist()}"
            )
        rng = check_random_state(self.random_state)
        writer = None
        if checkpoint is not None or saved is not None:
            context = fit_context(params_as_json(self), X.shape[1], classes, dtype, y_idx, sw, data_layout(X))
            if saved is not None:
                check_context(saved.path, saved.context, context)
                if self.random_state is None:
                    rng = np.random.RandomState()  # restored below; NumPy's global one stays put
                with reading(saved):
                    restore_rng(rng, saved.state, "initial_")  # the same validation split
            if checkpoint is not None:
                writer = CheckpointWriter(checkpoint, context, backend.to_host, rng_state(rng, "initial_"))
        train, validation = self._objectives(backend, X, y_idx, sw, len(classes), rng)
        params0 = train.init_params() if previous is None else previous[:2]
        extra = {}
        if self.solver == "lbfgs":
            extra["preconditioner"] = feature_preconditioner(
                X, sw, float(self.alpha), dtype, bool(self.fit_intercept)
            )
        result = self._run_solver(
            train,
            params0,
            validation,
            self._new_minibatch_state(rng),
            stop_early=True,
            checkpoint=writer,
            resume=saved,
            **extra,
        )
        self._store(backend, result, classes)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = list(result.loss_curve)
        if self.early_stopping:
            self.validation_loss_curve_ = list(result.validation_loss_curve)
        else:
            self.__dict__.pop("validation_loss_curve_", None)
        return self

    @available_if(_has_minibatch_solver)
    @_all_or_nothing
    def partial_fit(self, X, y=None, classes=None, sample_weight=None):
        """Run one epoch of the minibatch solver on ``X, y``, continuing the fit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a data source
            As for :meth:`fit`; a source is read chunk by chunk, in a shuffled
            chunk order.
        y : array-like of shape (n_samples,), optional (sources hold their labels)
        classes : array-like of shape (n_classes,), optional
            Every label the model will ever see; required on the first call.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        validate_params(self.get_params(deep=False))
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' needs the whole data set; pass a dict to use partial_fit"
            )
        first_call = not hasattr(self, "classes_")
        if first_call and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        dtype = check_dtype(self.dtype) if first_call else self.coef_.dtype.type
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if len(classes) < 2:
                raise ValueError(f"classes must hold at least 2 labels, got {classes.tolist()}")
            if not first_call and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"classes={classes.tolist()} differs from the first call's {self.classes_.tolist()}"
                )
        else:
            classes = self.classes_
        X, y, sample_weight = self._training_data(X, y, sample_weight, dtype, reset=first_call)
        check_classification_targets(y)
        unknown = np.setdiff1d(np.unique(y), classes)
        if unknown.size:
            raise ValueError(f"y holds labels {unknown.tolist()} that are not in classes {classes.tolist()}")
        y_idx = np.searchsorted(classes, y)
        sw = self._combined_weight(sample_weight, classes, y_idx, X.shape[0], dtype)
        backend = self._training_backend()
        state = None if first_call else getattr(self, "_minibatch_state", None)
        if state is None or (state.solver, state.backend) != (self.solver, backend.name):
            # First call, a loaded or unpickled model, or a fit by another solver or on
            # another backend (its moments live there): fresh update-rule state.
            state = self._new_minibatch_state(check_random_state(self.random_state))
        else:
            # Work on a copy, so that a failure leaves the committed state untouched.
            state = copy.deepcopy(state)
        train = self._objective(backend, X, y_idx, sw, len(classes))
        params0 = train.init_params() if first_call else self._backend_params(backend)
        result = self._run_solver(train, params0, None, state, stop_early=False, max_iter=1)
        self._store(backend, result, classes)
        self.n_iter_ = (0 if first_call else self.n_iter_) + result.n_iter
        self.loss_curve_ = ([] if first_call else self.loss_curve_) + list(result.loss_curve)
        return self

    def _training_data(self, X, y, sample_weight, dtype, reset):
        """``(X, y, sample_weight)`` checked: X in memory, or the features of a source to stream."""
        if _streams(X):
            return self._open_training_source(X, y, sample_weight, dtype, reset)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X, y = self._validate_training_data(X, y, dtype, reset)
        return X, y, sample_weight

    def _validate_training_data(self, X, y, dtype, reset):
        """X and y checked as scikit-learn checks them; X stays on the GPU if it is there."""
        if not is_device_array(X):
            return validate_data(
                self, X, y, dtype=dtype, order="C", accept_sparse="csr", ensure_min_samples=1, reset=reset
            )
        X = self._validate_device_X(X, dtype, reset)
        y = np.asarray(to_host(y))
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got shape {y.shape}")
        return X, y

    def _validate_device_X(self, X, dtype, reset):
        """Checks of a CuPy X, on the device: only a few scalars cross to the host."""
        backend = get_backend(self.backend)
        if backend.name != "cuda":
            raise ValueError(
                f"X is a GPU array ({type(X).__name__}); use backend='cuda' or pass a NumPy array"
            )
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got an array of shape {X.shape} instead")
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"X of shape {X.shape} is empty; need at least one sample and one feature")
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
        X = backend.asarray(X, dtype)
        # In slices of about 64 MB: isfinite allocates a byte per element.
        step = max(1, (64 << 20) // X.shape[1])
        if not all(bool(backend.xp.isfinite(X[i : i + step]).all()) for i in range(0, X.shape[0], step)):
            raise ValueError("Input X contains NaN or infinity.")
        if reset:
            self.n_features_in_ = X.shape[1]
            self.__dict__.pop("feature_names_in_", None)
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but SoftmaxClassifier is expecting {self.n_features_in_} features as input."
            )
        return X

    def _combined_weight(self, sample_weight, classes, y_idx, n_samples, dtype):
        sw = check_sample_weight(to_host(sample_weight), n_samples, np.float64)
        if self.class_weight is not None:
            per_class = self._per_class_weight(
                classes, lambda: np.bincount(y_idx, weights=sw, minlength=len(classes))
            )
            sw = sw * per_class[y_idx]
            if not sw.any():
                raise ValueError("sample_weight times class_weight sums to zero; no sample carries weight")
        return sw.astype(dtype)

    def _per_class_weight(self, classes, weighted_counts):
        """``class_weight`` as one checked weight per class, in ``classes`` order.

        ``weighted_counts()`` returns the sample weight summed per class; it is called
        (a pass over the labels) only for "balanced".
        """
        if self.class_weight == "balanced":
            # scikit-learn >= 1.7's "balanced": class counts weighted by sample_weight,
            # so an integer weight k still equals k repeated rows.
            counts = weighted_counts()
            return np.divide(counts.sum(), len(classes) * counts, out=np.ones(len(classes)), where=counts > 0)
        unknown = set(self.class_weight) - set(classes.tolist())
        if unknown:
            raise ValueError(f"class_weight names labels {sorted(map(str, unknown))} that are not in y")
        for label, weight in self.class_weight.items():
            if not (isinstance(weight, numbers.Real) and np.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"class_weight[{label!r}] = {weight!r}; class weights must be finite and non-negative"
                )
        return np.array([float(self.class_weight.get(c, 1.0)) for c in classes.tolist()])

    def _objectives(self, backend, X, y_idx, sw, n_classes, rng):
        """Training objective, and a validation objective with early stopping."""
        if not self.early_stopping:
            return self._objective(backend, X, y_idx, sw, n_classes), None
        counts = np.bincount(y_idx, minlength=n_classes)
        stratify = y_idx if counts.min() >= 2 else None
        train_rows, val_rows = train_test_split(
            np.arange(len(y_idx)), test_size=self.validation_fraction, random_state=rng, stratify=stratify
        )
        train = self._objective(backend, X, y_idx, sw, n_classes, rows=np.sort(train_rows))
        validation = self._objective(backend, X, y_idx, sw, n_classes, rows=np.sort(val_rows))
        validation.verbose = 0  # its passes are short and per epoch: no bar of their own
        return train, validation

    def _objective(self, backend, X, y_idx, sw, n_classes, rows=None):
        """The objective over ``X`` (or its ``rows``): in-memory X on the backend, sources streamed."""
        if isinstance(X, SourceFeatures):
            features = X if rows is None else SourceFeatures(X.source.subset(rows), X.dtype)
        else:
            features = backend.resident(X if rows is None else X[rows])
        if rows is not None:
            y_idx, sw = y_idx[rows], sw[rows]
        return SoftmaxObjective(
            backend,
            features,
            backend.asarray(y_idx),
            backend.asarray(sw),
            n_classes,
            float(self.alpha),
            bool(self.fit_intercept),
            verbose=int(self.verbose),
        )

    def _open_training_source(self, X, y, sample_weight, dtype, reset):
        """A source's features (to stream), labels and weights, checked like in-memory data."""
        source = open_source(X, y, sample_weight)
        labels, weights = source.targets()
        if labels is None:
            raise DataSourceError(
                f"{source.name}: holds no labels; name the label dataset or column (label=...) "
                "or pass y for .npy and array sources",
                source.name,
            )
        self._check_source_columns(source, reset)
        if reset:
            self.n_features_in_ = source.n_features
            if source.feature_names is not None:
                self.feature_names_in_ = np.asarray(source.feature_names, dtype=object)
            else:
                self.__dict__.pop("feature_names_in_", None)
        return SourceFeatures(source, dtype), labels, weights

    def _check_source_columns(self, source, reset):
        """A source's columns against the fitted ones: their count, and their names when both have names."""
        if reset:
            return
        if source.n_features != self.n_features_in_:
            raise ValueError(
                f"{source.name}: has {source.n_features} features, but SoftmaxClassifier is expecting "
                f"{self.n_features_in_} features as input."
            )
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and source.feature_names is not None:
            names = np.asarray(source.feature_names, dtype=object)
            if not np.array_equal(names, fitted):
                column = int(np.flatnonzero(names != fitted)[0])
                raise ValueError(
                    f"{source.name}: column {column} is {names[column]!r} but the model was fitted with "
                    f"{fitted[column]!r} there; the feature names must match those seen in fit, in order"
                )

    def _new_minibatch_state(self, rng):
        if self.solver == "sgd":
            update = UPDATE_RULES["sgd"](momentum=self.momentum, nesterov=self.nesterov)
        else:
            update = UPDATE_RULES["adam"](beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return MinibatchState(
            solver=self.solver, backend=get_backend(self.backend).name, update=update, rng=rng
        )

    def _minibatch_config(self):
        return MinibatchConfig(
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            learning_rate_init=self.learning_rate_init,
            power_t=self.power_t,
            n_iter_no_change=self.n_iter_no_change,
            shuffle=self.shuffle,
            schedule_epochs=self.max_iter,
        )

    def _run_solver(self, train, params0, validation, state, *, stop_early, max_iter=None, **solver_options):
        solver = get_solver(self.solver)
        config = self._minibatch_config()
        result = solver(
            train,
            params0,
            max_iter=max_iter or self.max_iter,
            tol=self.tol,
            verbose=self.verbose,
            config=config,
            state=state,
            validation=validation,
            stop_early=stop_early,
            **solver_options,
        )
        if stop_early:
            self._warn_if_unconverged(result.converged, result.message, stacklevel=5)
        return result

    def _warn_if_unconverged(self, converged, message, stacklevel):
        """A ConvergenceWarning, pointing ``stacklevel`` frames up (at the caller of fit)."""
        if not converged:
            warnings.warn(
                f"SoftmaxClassifier(solver={self.solver!r}) did not converge in max_iter={self.max_iter}: "
                f"{message}. Increase max_iter or loosen tol.",
                ConvergenceWarning,
                stacklevel=stacklevel,
            )

    def _store(self, backend, result, classes):
        W, b = (backend.to_host(p) for p in result.params)
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            raise FloatingPointError("the fit produced non-finite parameters; lower learning_rate_init")
        self.classes_ = classes
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = b.copy()
        self._minibatch_state = result.state

    def _training_backend(self):
        """The backend of a fit; with ``verbose``, says why "auto" chose the CPU."""
        backend = get_backend(self.backend)
        if self.verbose and self.backend == "auto" and backend.name == "cpu":
            print(f"fastsoftmax: backend='auto' uses the CPU: {auto_cpu_reason()}", file=sys.stderr)
        return backend

    def _fitted_params_if_warm(self):
        if not (self.warm_start and hasattr(self, "coef_")):
            return None
        backend = get_backend(self.backend)
        dtype = check_dtype(self.dtype)
        W = backend.asarray(self.coef_.T, dtype)
        b = backend.asarray(self.intercept_, dtype)
        return W, b, self.classes_

    def _backend_params(self, backend):
        return backend.asarray(self.coef_.T, self.coef_.dtype), backend.asarray(self.intercept_)

    # -- prediction -----------------------------------------------------------------
    def _check_predict_input(self, X):
        check_is_fitted(self, "coef_")
        if is_device_array(X):
            return self._validate_device_X(X, self.coef_.dtype.type, reset=False)
        return validate_data(
            self, X, dtype=self.coef_.dtype.type, order="C", accept_sparse="csr", reset=False
        )

    def _map_row_chunks(self, X, compute):
        """``compute(backend, X_chunk, W, b)`` over row chunks sized by the backend, on the host.

        The CPU backend takes all rows at once; the CUDA backend takes as many as
        device memory allows (halving them after an out-of-memory error), so
        predictions never need the whole logits matrix on the device.  A data source
        is read chunk by chunk.
        """
        backend = get_backend(self.backend)
        if _streams(X):
            check_is_fitted(self, "coef_")
            source = open_source(X)
            self._check_source_columns(source, reset=False)
            X = SourceFeatures(source, self.coef_.dtype)
        else:
            X = self._check_predict_input(X)
        W, b = self._backend_params(backend)
        return map_row_chunks(backend, X, len(self.classes_), lambda X_piece: compute(backend, X_piece, W, b))

    def decision_function(self, X):
        """Logits ``X @ coef_.T + intercept_``.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            For two classes, the margin of the second class over the first, as
            scikit-learn's binary classifiers return it.
        """
        Z = self._map_row_chunks(X, lambda backend, X, W, b: backend.logits(X, W, b))
        return Z[:, 1] - Z[:, 0] if len(self.classes_) == 2 else Z

    def predict_proba(self, X):
        """Class probabilities, of shape (n_samples, n_classes), in ``classes_`` order."""
        return self._map_row_chunks(X, lambda backend, X, W, b: backend.softmax(X, W, b))

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed without underflow."""
        return self._map_row_chunks(X, lambda backend, X, W, b: backend.softmax(X, W, b, log=True))

    def predict(self, X):
        """Most probable class label for each row of ``X``."""
        # argmax on the backend: only one index per row crosses to the host.
        best = self._map_row_chunks(X, lambda backend, X, W, b: backend.logits(X, W, b).argmax(axis=1))
        return self.classes_[best]

    def __getstate__(self):
        # The minibatch state may hold GPU arrays; a pickle must load without CuPy.
        # partial_fit after unpickling starts fresh moments, as after load().
        state = super().__getstate__()
        state.pop("_minibatch_state", None)
        return state

    # -- persistence ----------------------------------------------------------------
    def save(self, path):
        """Write the fitted model to a portable ``.npz`` file (no pickle inside).

        See :func:`fastsoftmax.persistence.save_model`.
        """
        from .persistence import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`, validating every field.

        See :func:`fastsoftmax.persistence.load_model`.
        """
        from .persistence import load_model

        return load_model(path, cls)
