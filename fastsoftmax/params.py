"""One table of the estimator's hyper-parameters and their valid values."""

import numbers

import numpy as np

from .backends import BACKEND_NAMES
from .solvers import SOLVERS
from .solvers.minibatch import SCHEDULES
from .validation import check_dtype


def _real(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
            return False
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return False
        return hi is None or (v < hi or (not hi_open and v == hi))

    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return (
        check,
        f"a real number in {left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}",
    )


def _int(lo):
    return (
        lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo,
        f"an integer >= {lo}",
    )


def _options(*options):
    return lambda v: isinstance(v, str) and v in options, f"one of {options}"


def _bool():
    return lambda v: isinstance(v, (bool, np.bool_)), "True or False"


def _dtype(v):
    try:
        check_dtype(v)
    except ValueError:
        return False
    return True


def _class_weight(v):
    return v is None or v == "balanced" or isinstance(v, dict)


def _random_state(v):
    return v is None or isinstance(v, (numbers.Integral, np.random.RandomState)) and not isinstance(v, bool)


PARAMETER_CHECKS = {
    "alpha": _real(0),
    "fit_intercept": _bool(),
    "solver": _options(*SOLVERS),
    "max_iter": _int(1),
    "tol": _real(0),
    "batch_size": _int(1),
    "learning_rate": _options(*SCHEDULES),
    "learning_rate_init": _real(0, lo_open=True),
    "power_t": _real(0),
    "momentum": _real(0, 1, hi_open=True),
    "nesterov": _bool(),
    "beta_1": _real(0, 1, hi_open=True),
    "beta_2": _real(0, 1, hi_open=True),
    "epsilon": _real(0, lo_open=True),
    "class_weight": (_class_weight, "None, 'balanced' or a dict from label to weight"),
    "backend": (
        lambda v: v in BACKEND_NAMES or hasattr(v, "loss_grad_accumulate_"),
        f"one of {BACKEND_NAMES}",
    ),
    "dtype": (_dtype, "'float32' or 'float64'"),
    "random_state": (_random_state, "None, an integer or a numpy RandomState"),
    "verbose": _int(0),
    "early_stopping": _bool(),
    "validation_fraction": _real(0, 1, lo_open=True, hi_open=True),
    "n_iter_no_change": _int(1),
    "shuffle": _bool(),
    "warm_start": _bool(),
}


def validate_params(params):
    """Raise ValueError naming the first hyper-parameter whose value is not valid."""
    for name, (check, expected) in PARAMETER_CHECKS.items():
        value = params[name]
        if not check(value):
            raise ValueError(
                f"SoftmaxClassifier parameter {name}={value!r} is not valid; expected {expected}"
            )
