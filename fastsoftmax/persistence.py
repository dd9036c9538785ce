"""Saving and loading fitted models as portable ``.npz`` files, without pickle.

The file holds the arrays ``coef``, ``intercept`` and ``classes`` and a JSON
document ``metadata`` (format version, library version, class label kind,
hyper-parameters, fitted attributes).  Loading never unpickles, checks each array's
header against the bytes in the file before reading it (:mod:`fastsoftmax.npyformat`),
and checks every field's presence, dtype, shape and finiteness before building the
estimator, so a file from elsewhere can neither run code nor produce a half-valid model.
"""

import json
import math

import numpy as np

from .npyformat import load_npz

FORMAT = "fastsoftmax-model"
FORMAT_VERSION = 1
_REQUIRED = ("coef", "intercept", "classes", "metadata")
# Label kind stored in the metadata -> the dtype kinds its classes array may have.
_CLASS_KINDS = {"int": "iu", "float": "f", "bool": "b", "str": "U"}


class ModelFileError(ValueError):
    """A model file is missing, unreadable or not a valid fastsoftmax model."""


def _label_kind(classes):
    if classes.dtype.kind in "iu":
        return "int"
    if classes.dtype.kind == "f":
        return "float"
    if classes.dtype.kind == "b":
        return "bool"
    if classes.dtype.kind == "U" or all(isinstance(c, str) for c in classes):
        return "str"
    raise TypeError(
        f"class labels of type {type(classes[0]).__name__} cannot be stored without pickle; "
        "save the model with pickle instead, or use int or str labels"
    )


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def params_as_json(model):
    """The estimator's hyper-parameters as JSON values.

    A backend object becomes "auto" and a RandomState None (neither can be written);
    a class_weight dict becomes a list of ``[label, weight]`` pairs.
    """
    params = {k: _jsonable(v) for k, v in model.get_params(deep=False).items()}
    params["dtype"] = np.dtype(params["dtype"]).name
    if not isinstance(params["backend"], str):
        params["backend"] = "auto"
    if not (params["random_state"] is None or isinstance(params["random_state"], int)):
        params["random_state"] = None
    if params["class_weight"] is not None and params["class_weight"] != "balanced":
        params["class_weight"] = [[_jsonable(k), float(v)] for k, v in params["class_weight"].items()]
    return params


def save_model(model, path):
    """Write a fitted :class:`SoftmaxClassifier` to ``path`` (a ``.npz`` file).

    Parameters
    ----------
    model : SoftmaxClassifier
        A fitted estimator.
    path : str or os.PathLike
        Destination; NumPy appends ``.npz`` if missing.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        For an unfitted model.
    TypeError
        For labels or hyper-parameters that JSON and plain arrays cannot hold.
    """
    from sklearn.utils.validation import check_is_fitted

    from . import __version__

    check_is_fitted(model, "coef_")
    kind = _label_kind(model.classes_)
    params = params_as_json(model)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastsoftmax_version": __version__,
        "class_kind": kind,
        "classes_object": model.classes_.dtype == object,
        "params": params,
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": getattr(model, "feature_names_in_", np.array([])).tolist() or None,
        "n_iter": int(model.n_iter_),
        "loss_curve": [float(v) for v in model.loss_curve_],
    }
    try:
        text = json.dumps(metadata)
    except TypeError as exc:
        raise TypeError(f"model hyper-parameters cannot be written as JSON: {exc}") from None
    np.savez(
        path,
        coef=model.coef_,
        intercept=model.intercept_,
        # Only object-dtype strings need converting; numeric and bool labels keep their dtype.
        classes=model.classes_.astype(str) if kind == "str" else model.classes_,
        metadata=np.array(text),
    )


def _finite_number(value):
    """Whether a JSON value is a number that a float holds finitely (10**400 is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _fail(path, problem):
    raise ModelFileError(f"{path} is not a valid fastsoftmax model: {problem}")


def load_model(path, cls=None):
    """Read a model written by :func:`save_model`.

    Parameters
    ----------
    path : str or os.PathLike
    cls : type, optional
        Estimator class to build (default :class:`SoftmaxClassifier`).

    Returns
    -------
    SoftmaxClassifier

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ModelFileError
        When the file is not a complete, consistent fastsoftmax model.
    """
    if cls is None:
        from .estimator import SoftmaxClassifier as cls
    try:
        arrays, _ = load_npz(path, _REQUIRED)
    except ValueError as exc:
        _fail(path, f"cannot be read as .npz ({exc})")
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        _fail(path, f"missing entries {missing}")
    try:
        metadata = json.loads(str(arrays["metadata"]))
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:  # RecursionError: deep nesting
        _fail(path, f"metadata is not JSON ({type(exc).__name__}: {exc})")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        _fail(path, "metadata does not name the fastsoftmax-model format")
    if metadata.get("format_version") != FORMAT_VERSION:
        _fail(path, f"format_version {metadata.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    if coef.dtype not in (np.float32, np.float64) or coef.ndim != 2:
        _fail(path, f"coef must be a 2-D float32/float64 array, got {coef.dtype} of shape {coef.shape}")
    n_classes, n_features = coef.shape
    if n_features < 1:
        _fail(path, f"coef has shape {coef.shape}: a model needs at least one feature")
    if intercept.dtype != coef.dtype or intercept.shape != (n_classes,):
        _fail(
            path,
            f"intercept must be {coef.dtype} of shape ({n_classes},), got {intercept.dtype} {intercept.shape}",
        )
    if classes.ndim != 1 or classes.shape[0] != n_classes or n_classes < 2:
        _fail(path, f"classes must have {n_classes} >= 2 entries, got shape {classes.shape}")
    kind = metadata.get("class_kind")
    if not isinstance(kind, str) or kind not in _CLASS_KINDS or classes.dtype.kind not in _CLASS_KINDS[kind]:
        _fail(path, f"classes dtype {classes.dtype} does not match class_kind {kind!r}")
    if not np.array_equal(np.unique(classes), classes):
        _fail(path, "classes must be sorted and unique, as fit stores them")
    if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
        _fail(path, "coef or intercept holds NaN or inf")
    if metadata.get("n_features_in") != n_features:
        _fail(
            path,
            f"n_features_in {metadata.get('n_features_in')!r} does not match coef's {n_features} columns",
        )
    params = metadata.get("params")
    if not isinstance(params, dict):
        _fail(path, "params missing from metadata")
    class_weight = params.get("class_weight")
    if isinstance(class_weight, list):
        if not all(
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], (str, int, float))  # a label JSON can hold: hashable
            and _finite_number(pair[1])
            and pair[1] >= 0
            for pair in class_weight
        ):
            _fail(path, "class_weight must be a list of [label, non-negative weight] pairs")
        params["class_weight"] = {label: weight for label, weight in class_weight}
    n_iter = metadata.get("n_iter")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        _fail(path, f"n_iter must be a non-negative integer, got {n_iter!r}")
    loss_curve = metadata.get("loss_curve")
    if not (isinstance(loss_curve, list) and all(_finite_number(v) for v in loss_curve)):
        _fail(path, "loss_curve must be a list of finite numbers")
    model = cls()
    unknown = set(params) - set(model.get_params(deep=False))
    if unknown:
        _fail(path, f"unknown hyper-parameters {sorted(unknown)}")
    try:
        model.set_params(**params)
        from .params import validate_params

        validate_params(model.get_params(deep=False))
    except (ValueError, TypeError) as exc:
        _fail(path, f"invalid hyper-parameters ({exc})")
    if np.dtype(model.dtype) != coef.dtype:
        _fail(path, f"params say dtype {model.dtype!r} but coef is {coef.dtype}")
    model.classes_ = classes.astype(object) if metadata.get("classes_object") else classes
    model.coef_ = np.ascontiguousarray(coef)
    model.intercept_ = intercept
    model.n_features_in_ = n_features
    names = metadata.get("feature_names_in")
    if names is not None:
        if not (
            isinstance(names, list) and len(names) == n_features and all(isinstance(n, str) for n in names)
        ):
            _fail(path, "feature_names_in must be a list of n_features strings")
        model.feature_names_in_ = np.asarray(names, dtype=object)
    model.n_iter_ = n_iter
    model.loss_curve_ = [float(v) for v in loss_curve]
    model._minibatch_state = None
    return model
