"""pytest-benchmark: one loss-and-gradient pass, fastsoftmax and its peers on the same data.

Run with ``python -m pytest bench/bench_objective.py --benchmark-only`` (not part of
the default test run).  ``bench.cpu_pass`` prints the same comparison with ceilings
and floor ratios; this file feeds pytest-benchmark's storage and comparison tools.
"""

import numpy as np
import pytest

from bench import peers
from bench.cpu_pass import reference_grad

WORKLOADS = [(200_000, 256, 20), (50_000, 256, 1000)]


@pytest.fixture(scope="module", params=WORKLOADS, ids=lambda w: "x".join(map(str, w)))
def problem(request):
    return peers.make_problem(*request.param)


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_loss_grad_pass(benchmark, problem, name):
    why_not = peers.available(name)
    if why_not:
        pytest.skip(why_not)
    fn = peers.PEERS[name](*problem)
    _, dW = fn()
    ref = reference_grad(*problem)
    # float32 GEMMs over N rows: 1e-3 relative is far above their rounding error.
    assert np.abs(np.asarray(dW) - ref).max() <= 1e-3 * np.abs(ref).max()
    n, d = problem[0].shape
    benchmark.extra_info.update(n_samples=n, n_features=d, n_classes=problem[2].shape[1])
    benchmark(fn)
