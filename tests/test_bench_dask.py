"""``python -m bench.dask_scaling`` on tiny sizes: it runs, checks itself, and writes its files.

In scope: the reduction tree's shape as the benchmark counts it against the graph
``DaskObjective`` builds; a whole run on two LocalClusters (1 and 2 single-threaded
workers) writes results.json (machine, command, both in-memory and both Dask passes,
computed and measured bytes, the scaling model) and report.txt.
Out of scope: whether the numbers are fast (timings are never asserted).
"""

import json

import numpy as np
import pytest

pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from bench import dask_scaling  # noqa: E402
from fastsoftmax.dask import DaskObjective  # noqa: E402


@pytest.mark.parametrize("partitions, depth", [(1, 0), (2, 1), (8, 1), (9, 2), (20, 2), (64, 2), (65, 3)])
def test_tree_shape_counts_the_objectives_adds(partitions, depth):
    X, y, sw = dask_scaling.make_problem(partitions, 3, 2, partitions)
    graph = DaskObjective(X, y, sw, 2, 0.0, True, np.float32).graph(dask_scaling.make_params(3, 2))
    adds = sum(str(key).startswith("_add-") for key in graph.dask)
    assert dask_scaling.tree_shape(partitions) == (adds, depth)


def test_a_tiny_run_writes_its_results(tmp_path):
    argv = ["--rows", "2000", "--features", "8", "--classes", "3", "--partitions", "4", "--repeats", "1"]
    assert dask_scaling.main([*argv, "--output", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["machine"]["command"].endswith(
        "-m bench.dask_scaling " + " ".join(argv) + f" --output {tmp_path}"
    )
    assert "git_commit" in payload["machine"] and payload["problems"] == []
    assert [r["threads"] for r in payload["in_memory"]] == [1, 2]
    runs = {r["workers"]: r for r in payload["dask"]}
    assert sorted(runs) == [1, 2]
    for workers, run in runs.items():
        assert run["partitions"] == 4 and run["tree"] == {"adds": 1, "depth": 1, "tasks": 6}
        assert [t["fastsoftmax"] for t in run["worker_threads"]] == [1] * workers
        assert max(run["check"].values()) < 1e-3
        assert run["min_s"] <= run["median_s"] <= run["max_s"]
        computed = run["volume_computed"]
        assert computed["edges"] == 5 and computed["broadcast_bytes"] == workers * computed["params_bytes"]
        # (loss, dW, db, weight): 8 x 3 + 3 float32 values and their pickle's framing
        assert 4 * 27 < computed["partial_bytes"] < 4 * 27 + 400
        # Each pass sends one result, the root's partial sums, towards the client.
        to_client = run["volume_measured"]["per_pass"]["worker->client (via the scheduler)"]
        assert to_client["transfers"] == 1 and to_client["partial sums"] > 0
        assert [t["partitions"] for t in run["tiny_passes"]] == [1, 2, 4, 8, 16]
    assert "worker->worker" not in runs[1]["volume_measured"]["per_pass"]
    assert set(payload["summary"]) == {"speedup", "efficiency"}
    model = payload["model"]
    assert model["assumed_bandwidth_bytes_per_s"] == 10e9
    assert {(r["target"], r["features"], r["classes"]) for r in model["rows"]} >= {
        ("64 CPU workers", 8, 3),
        ("8 GPUs", 256, 20),
    }
    assert all(r["compute_s"] > 0 for r in model["rows"] if r["target"] == "64 CPU workers")
    report = (tmp_path / "report.txt").read_text()
    assert "speed-up of 2 workers over 1" in report and "ASSUMED network bandwidth of 10 GB/s" in report
