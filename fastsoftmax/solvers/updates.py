"""Parameter update rules of the minibatch solvers.

Each rule updates the parameter arrays in place from a gradient and a learning rate,
with backend array arithmetic only, and keeps its state (velocity, moments) between
calls so that ``partial_fit`` can continue where it stopped, and hands that state to
checkpoints (``state_dict``) and takes it back on resume (``load_state_dict``).
"""


class Sgd:
    """Stochastic gradient descent with (Nesterov) momentum.

    ``v <- mu v - lr g``; then ``p <- p + v`` (classical) or ``p <- p + mu v - lr g``
    (Nesterov, in the reformulation of Sutskever et al., 2013).

    Parameters
    ----------
    momentum : float in [0, 1)
    nesterov : bool
    """

    def __init__(self, momentum=0.9, nesterov=True):
        self.momentum = momentum
        self.nesterov = nesterov
        self.velocity = None

    def step_(self, params, grads, lr):
        if self.momentum == 0:
            for p, g in zip(params, grads):
                p -= lr * g
            return
        if self.velocity is None:
            self.velocity = [0 * p for p in params]
        mu = self.momentum
        for p, g, v in zip(params, grads, self.velocity):
            v *= mu
            v -= lr * g
            if self.nesterov:
                p += mu * v - lr * g
            else:
                p += v

    def state_dict(self):
        """The velocity, as checkpoint entries (none before the first step)."""
        if self.velocity is None:
            return {"sgd_has_velocity": False}
        return {"sgd_has_velocity": True, "velocity_W": self.velocity[0], "velocity_b": self.velocity[1]}

    def load_state_dict(self, state, asarray):
        """Restore what :meth:`state_dict` saved; ``asarray`` moves arrays to the backend."""
        if state["sgd_has_velocity"]:
            self.velocity = [asarray(state["velocity_W"]), asarray(state["velocity_b"])]


class Adam:
    """Adam (Kingma and Ba, 2015) with bias correction folded into the step size.

    Parameters
    ----------
    beta_1, beta_2 : float in [0, 1)
    epsilon : float > 0
    """

    def __init__(self, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0
        self.moments = None

    def step_(self, params, grads, lr):
        if self.moments is None:
            self.moments = [(0 * p, 0 * p) for p in params]
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        lr_t = lr * (1 - b2**self.t) ** 0.5 / (1 - b1**self.t)
        for p, g, (m, v) in zip(params, grads, self.moments):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= lr_t * m / (v**0.5 + self.epsilon)

    def state_dict(self):
        """The step count and moments, as checkpoint entries."""
        state = {"adam_t": self.t}
        if self.moments is not None:
            (m_W, v_W), (m_b, v_b) = self.moments
            state.update(adam_m_W=m_W, adam_v_W=v_W, adam_m_b=m_b, adam_v_b=v_b)
        return state

    def load_state_dict(self, state, asarray):
        """Restore what :meth:`state_dict` saved; ``asarray`` moves arrays to the backend."""
        self.t = int(state["adam_t"])
        if self.t:  # the moments exist from the first step on
            self.moments = [
                (asarray(state["adam_m_W"]), asarray(state["adam_v_W"])),
                (asarray(state["adam_m_b"]), asarray(state["adam_v_b"])),
            ]


UPDATE_RULES = {"sgd": Sgd, "adam": Adam}
