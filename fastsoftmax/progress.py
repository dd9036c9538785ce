"""Progress bars for solvers and long passes: tqdm when verbose, a no-op otherwise."""

import time

from tqdm.auto import tqdm


class _Bar:
    """A tqdm bar, or nothing when disabled; closed on leaving a ``with`` block."""

    _bar = None

    def close(self):
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Progress(_Bar):
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


class PassProgress(_Bar):
    """A bar over the rows of one pass, showing rows/s and bytes/s.

    Parameters
    ----------
    n_rows : int
    bytes_per_row : float
        Bytes read per row (features as stored), for the bytes/s figure.
    enabled : bool
    """

    def __init__(self, n_rows, bytes_per_row, enabled):
        self._bytes_per_row = bytes_per_row
        self._done = 0
        self._started = time.perf_counter()
        self._bar = (
            tqdm(total=n_rows, desc="pass", unit="rows", unit_scale=True, leave=False) if enabled else None
        )

    def update(self, rows):
        if self._bar is None:
            return
        self._done += rows
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rate = self._done * self._bytes_per_row / elapsed
        self._bar.set_postfix_str(f"{format_bytes(rate)}/s", refresh=False)
        self._bar.update(rows)


def format_bytes(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"
