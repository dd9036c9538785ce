"""Solvers: functions from an objective and starting parameters to a fitted result.

Each solver is looked up by name in :data:`SOLVERS` and returns a
:class:`SolverResult`.  Solvers see parameters only as a pair ``(W, b)`` of backend
arrays and the objective only through ``loss_grad(params, rows=None)``.
"""

from .lbfgs import lbfgs
from .minibatch import MinibatchConfig, minibatch
from .result import SolverResult
from .updates import UPDATE_RULES, Adam, Sgd

SOLVERS = {"lbfgs": lbfgs, "sgd": minibatch, "adam": minibatch}


def get_solver(name):
    """Return the solver function registered under ``name``."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"solver={name!r} is not known; expected one of {sorted(SOLVERS)}") from None


__all__ = [
    "SOLVERS",
    "UPDATE_RULES",
    "Adam",
    "MinibatchConfig",
    "Sgd",
    "SolverResult",
    "get_solver",
    "lbfgs",
    "minibatch",
]
