"""How many cases each fuzz target ran in this session, for the line ``conftest`` prints at the end."""

from collections import Counter

CASES = Counter()
REFUSED = Counter()


def count(target, n=1):
    """Record ``n`` more cases run against ``target`` (a short name such as "model file")."""
    CASES[target] += n


def refused(target, n=1):
    """Record that ``n`` of the cases of ``target`` ended in the documented error."""
    REFUSED[target] += n


def summary():
    """``"fuzz cases run: model file 300 (280 refused), ..."``, or None when no fuzz test ran."""
    if not CASES:
        return None
    return "fuzz cases run: " + ", ".join(f"{t} {n} ({REFUSED[t]} refused)" for t, n in CASES.items())
