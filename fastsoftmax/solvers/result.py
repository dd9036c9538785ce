"""What every solver returns."""

from dataclasses import dataclass, field


@dataclass
class SolverResult:
    """Outcome of a solver run.

    Attributes
    ----------
    params : tuple (W, b) of backend arrays
    n_iter : int
        Iterations (L-BFGS) or epochs (minibatch solvers) run.
    converged : bool
        Whether the stopping rule fired before ``max_iter``.
    loss_curve : list of float
        Objective after each iteration or epoch.
    message : str
        Why the solver stopped.
    state : object
        Solver state needed to continue (minibatch solvers), else None.
    """

    params: tuple
    n_iter: int
    converged: bool
    loss_curve: list = field(default_factory=list)
    message: str = ""
    state: object = None
    validation_loss_curve: list = field(default_factory=list)
