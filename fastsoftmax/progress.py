"""Progress bars for solvers: tqdm when verbose, a no-op otherwise."""

from tqdm.auto import tqdm


class Progress:
    """A bar over iterations or epochs that shows the current loss.

    Parameters
    ----------
    total : int
        Iteration budget.
    desc : str
    enabled : bool
        False makes every method a no-op (verbose=0).
    """

    def __init__(self, total, desc, enabled):
        self._bar = tqdm(total=total, desc=desc, unit="it", leave=True) if enabled else None

    def step(self, loss, **extra):
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.6g}", **extra, refresh=False)
            self._bar.update(1)

    def close(self):
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
