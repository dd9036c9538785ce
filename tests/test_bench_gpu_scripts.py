"""The GPU benchmark scripts (``bench/gpu_ceilings.py``, ``gpu_peers.py``, ``gpu_pass.py``,
``gpu_stream.py``, ``gpu_sanitize.py``), on the CPU.

In scope: the modules import, and ``--help`` works, without CuPy or PyTorch; the flop, byte
and floor arithmetic gives the numbers documented for W1; ``main()`` without CuPy stops
with a message naming CuPy; the textbook softmax gradient and the plain CuPy peer are right
(run with NumPy in CuPy's place); the report copes with every kind of failed row;
``gpu_stream``'s passes, rates and report on tiny data, on the CPU backend and on the CUDA
backend in Numba's simulator (where "streamed" and "resident" are the same NumPy arrays);
``gpu_sanitize``'s reference.
Out of scope: anything measured on a device, which only ``python -m bench.gpu_pass`` and
``python -m bench.gpu_stream`` on a GPU machine can do.  PyTorch is never imported: CuPy and PyTorch are blocked in
``sys.modules`` whenever a test touches the scripts, so an import of either at module level
fails the test instead of loading it.
"""

import contextlib
import doctest
import importlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fastsoftmax.backends import cuda_simulated, get_backend
from tests.reference import make_problem, max_rel_err, reference_log_softmax, reference_loss_grad, rtol_for

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCKED = ("cupy", "torch")
BLOCK = f"import sys; sys.modules.update(dict.fromkeys({BLOCKED!r})); "
W1 = (1_281_167, 768, 1000)


@pytest.fixture
def blocked(monkeypatch):
    """Make ``import cupy`` and ``import torch`` raise ImportError for the test's duration."""
    for name in BLOCKED:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def gpu_pass(blocked):
    return importlib.import_module("bench.gpu_pass")


@pytest.fixture
def gpu_peers(blocked):
    return importlib.import_module("bench.gpu_peers")


def run_blocked(code):
    """Run Python code in a fresh interpreter at the repository root, CuPy and PyTorch blocked."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_modules_import_without_cupy_or_torch():
    done = run_blocked(
        "import bench.gpu_ceilings, bench.gpu_peers, bench.gpu_pass, bench.gpu_stream, bench.gpu_sanitize; "
        "print('imported')"
    )
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout


def test_help_works_without_cupy_or_torch():
    done = run_blocked(
        "import runpy; sys.argv = ['bench.gpu_pass', '--help']; "
        "runpy.run_module('bench.gpu_pass', run_name='__main__', alter_sys=True)"
    )
    assert done.returncode == 0, done.stderr
    for text in ("--workloads", "--repeats", "--output", "--plots", "W1 = 1281167x768x1000"):
        assert text in done.stdout


def test_gpu_stream_help_works_without_cupy_or_torch():
    done = run_blocked(
        "import runpy; sys.argv = ['bench.gpu_stream', '--help']; "
        "runpy.run_module('bench.gpu_stream', run_name='__main__', alter_sys=True)"
    )
    assert done.returncode == 0, done.stderr
    for text in ("--dataset-gib", "--pool-limit-gib", "--features", "--classes", "--repeats", "--output"):
        assert text in done.stdout


def test_command_line_without_cupy_exits_naming_cupy():
    done = run_blocked(
        "import runpy; sys.argv = ['bench.gpu_pass', '--workloads', 'W2']; "
        "runpy.run_module('bench.gpu_pass', run_name='__main__', alter_sys=True)"
    )
    assert done.returncode == 1
    assert "bench.gpu_pass needs CuPy" in done.stderr
    assert "Traceback" not in done.stderr


def test_main_without_cupy_exits_naming_cupy(gpu_pass):
    with pytest.raises(SystemExit, match="needs CuPy.*pip install cupy-cuda13x"):
        gpu_pass.main(["--workloads", "W1", "--no-fit"])


def test_bad_workload_is_a_usage_error(gpu_pass, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_pass.main(["--workloads", "W9"])
    assert exit_.value.code == 2
    assert "'W9' is neither one of ['W1', 'W2', 'W3'] nor an NxDxC spec" in capsys.readouterr().err


def test_workloads(gpu_pass):
    assert gpu_pass.parse_workload("W1") == ("W1", *W1)
    assert gpu_pass.parse_workload("W2") == ("W2", 10_000_000, 128, 10)
    assert gpu_pass.parse_workload("W3") == ("W3", 1_000_000, 1024, 10_000)
    assert gpu_pass.parse_workload("1000x16x3") == ("1000x16x3", 1000, 16, 3)
    with pytest.raises(ValueError, match="C >= 2"):
        gpu_pass.parse_workload("1000x16x1")


def test_model_numbers_for_w1(gpu_pass):
    n, d, c = W1
    assert gpu_pass.pass_flops(n, d, c) == 3_935_745_024_000
    assert gpu_pass.x_bytes(n, d) == 3_935_745_024
    # X once, plus 5,124,668,000 bytes of logits written and read.
    assert gpu_pass.pass_bytes(n, d, c) == 3_935_745_024 + 2 * 5_124_668_000
    # GEMM-bound at 50 TFLOP/s and 3 TB/s: 3.936e12 / 50e12 s, against 3.94e9 / 3e12 = 1.3 ms for X.
    assert gpu_pass.floor_seconds(n, d, c, 50e12, 3e12) == pytest.approx(0.07871490048, rel=1e-12)
    # With a GEMM 100 times faster, reading X once sets the floor.
    assert gpu_pass.floor_seconds(n, d, c, 5e15, 3e12) == pytest.approx(3_935_745_024 / 3e12, rel=1e-12)
    assert gpu_pass.kernel_bytes(262_144, c) == 262_144 * (2 * 4 * c + 8 + 4 + 4)


def test_documented_examples_hold(gpu_pass):
    results = doctest.testmod(gpu_pass)
    assert results.attempted >= 7
    assert results.failed == 0


def test_oom_messages_give_the_bytes_asked_for(gpu_pass):
    cupy_message = "Out of memory allocating 40,000,000,512 bytes (allocated so far: 4,096,000,000 bytes)."
    torch_message = "CUDA out of memory. Tried to allocate 37.25 GiB. GPU 0 has a total capacity of 79.19 GiB"
    assert gpu_pass.oom_tried_bytes(cupy_message) == 40_000_000_512
    assert gpu_pass.oom_tried_bytes(torch_message) == round(37.25 * 2**30)
    assert gpu_pass.oom_tried_bytes("an unrelated error") is None


def test_summary_and_error_measure(gpu_pass):
    assert gpu_pass.summarize([3.0, 1.0, 2.0, 10.0]) == {"median_s": 2.5, "min_s": 1.0, "max_s": 10.0}
    ref = np.array([[1.0, -4.0], [2.0, 0.5]])
    assert gpu_pass.max_rel_err(ref + [[0.0, 0.004], [0.0, 0.0]], ref) == pytest.approx(1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_textbook_softmax_grad(gpu_peers, dtype):
    X, y, W, b = make_problem(300, 7, 33, dtype, seed=0, peaked=True)
    Z = X @ W + b
    log_p = reference_log_softmax(Z)
    row_loss = gpu_peers.textbook_softmax_grad_(np, Z, y)
    G_ref = np.exp(log_p)
    G_ref[np.arange(len(y)), y] -= 1
    rtol = rtol_for(dtype, 33)
    assert max_rel_err(Z, G_ref) <= rtol
    assert max_rel_err(row_loss, -log_p[np.arange(len(y)), y]) <= rtol


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_plain_cupy_peer_with_numpy_in_its_place(gpu_peers, monkeypatch, dtype):
    monkeypatch.setitem(sys.modules, "cupy", np)  # make_cupy uses only what NumPy shares with CuPy
    X, y, W, b = make_problem(500, 9, 33, dtype, seed=1)
    loss, dW = gpu_peers.make_cupy(X, y, W, b)()
    ref_loss, ref_dW, _ = reference_loss_grad(X, y, W, b)
    rtol = rtol_for(dtype, 500 + 9 + 33)
    assert max_rel_err(dW, ref_dW) <= rtol
    assert abs(float(loss) - ref_loss) <= rtol * abs(ref_loss)


def test_fastsoftmax_peer_wiring_on_the_cpu_backend(gpu_peers):
    X, y, W, b = make_problem(400, 9, 5, np.float64, seed=2)
    loss, dW = gpu_peers.make_fastsoftmax(X, y, W, b, backend="cpu")()
    ref_loss, ref_dW, _ = reference_loss_grad(X, y, W, b)
    assert max_rel_err(dW, ref_dW) <= rtol_for(np.float64, 400 + 9 + 5)
    assert loss == pytest.approx(ref_loss, rel=1e-12)


def failed_rows():
    base = {"n_samples": 10, "n_features": 2, "n_classes": 3}
    measured = {
        **base,
        "workload": "W1",
        "implementation": "fastsoftmax",
        "median_s": 0.08,
        "min_s": 0.079,
        "max_s": 0.081,
        "tflops": 49.2,
        "gb_per_s": 177.0,
        "floor_s": 0.0787,
        "ratio_to_floor": 1.016,
        "fastsoftmax_speedup": 1.0,
        "peak_device_bytes": 3e9,
        "first_call_s": 2.5,
    }
    oom = {"out_of_memory": "CUDA out of memory.", "tried_bytes": 4e10}
    return [
        measured,
        {**base, "workload": "W1", "implementation": "torch", **oom},
        {**base, "workload": "W1", "implementation": "torch.compile", "error": "RuntimeError: boom"},
        {**base, "workload": "W1", "implementation": "cupy", "check_failed": "disagrees with fastsoftmax"},
        {**base, "workload": "W3", "implementation": "cupy", "skipped": "fastsoftmax has no checked result"},
    ]


def test_table_reports_every_kind_of_row(gpu_pass, capsys):
    rows = failed_rows()
    gpu_pass.print_table(rows)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + len(rows)
    assert "80.00" in out[1] and "1.02" in out[1]
    assert "out of memory: CUDA out of memory. (tried 40.00 GB)" in out[2]
    assert "error: RuntimeError: boom" in out[3]
    assert "check failed: disagrees with fastsoftmax" in out[4]
    assert "skipped: fastsoftmax has no checked result" in out[5]
    assert [gpu_pass.failure(r) is None for r in rows] == [True, False, False, False, False]


def test_plots_are_drawn_with_failed_rows(gpu_pass, tmp_path):
    pytest.importorskip("matplotlib")
    paths = gpu_pass.write_plots(failed_rows(), tmp_path / "plots")
    assert [pathlib.Path(p).name for p in paths] == ["gpu_pass_time.png", "gpu_pass_floor_ratio.png"]
    for path in paths:
        assert pathlib.Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- bench.gpu_stream and bench.gpu_sanitize --------------------------------------------------
@pytest.fixture
def gpu_stream(blocked):
    return importlib.import_module("bench.gpu_stream")


def test_gpu_stream_main_without_cupy_exits_naming_cupy(gpu_stream):
    with pytest.raises(SystemExit, match="bench.gpu_stream needs CuPy.*pip install cupy-cuda13x"):
        gpu_stream.main(["--dataset-gib", "0.01", "--pool-limit-gib", "0.001"])


def test_gpu_stream_refuses_a_limit_that_streams_nothing(gpu_stream, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_stream.main(["--dataset-gib", "1", "--pool-limit-gib", "2"])
    assert exit_.value.code == 2
    assert "--pool-limit-gib must be positive and below --dataset-gib" in capsys.readouterr().err


def test_gpu_stream_host_dataset_and_workload(gpu_stream):
    X_flat = gpu_stream.host_dataset(4 * 1000, seed=3, n_threads=3)
    assert X_flat.dtype == np.float32 and X_flat.size == 1000
    assert -1 <= X_flat.min() and X_flat.max() < 1 and np.unique(X_flat).size > 990
    X, y, W, b = gpu_stream.make_workload(X_flat, 7, 4, seed=3)
    assert X.shape == (142, 7) and np.shares_memory(X, X_flat)
    assert y.shape == (142,) and set(np.unique(y)) <= {0, 1, 2, 3}
    assert W.shape == (7, 4) and b.shape == (4,) and W.dtype == b.dtype == np.float32


@pytest.mark.parametrize(
    "backend_name",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                # CuPy is blocked here; on a GPU, bench.gpu_stream runs for real instead.
                pytest.mark.skipif(not cuda_simulated(), reason="the simulator's smoke test"),
            ],
        ),
    ],
)
def test_gpu_stream_passes_on_tiny_data(gpu_stream, backend_name, capsys):
    """The whole measurement on 8 rows (one simulator block): the three passes, the check, the table."""
    backend = get_backend(backend_name)
    X, y, W, b = gpu_stream.make_workload(gpu_stream.host_dataset(4 * 8 * 5, seed=4), 5, 3, seed=4)
    measured = gpu_stream.measure_workload(
        backend,
        X,
        y,
        W,
        b,
        1,
        cap=contextlib.nullcontext,
        to_device=backend.resident,
        is_pinned=lambda a: False,
    )
    for run in ("streamed", "staged", "resident"):
        assert len(measured[run]["times_s"]) == 1 and measured[run]["median_s"] > 0
        assert measured[run]["pieces"] == 1 and measured[run]["on_host"] and not measured[run]["pinned"]
    for run in ("streamed", "staged"):
        assert measured[run]["loss_rel_err"] == measured[run]["dW_max_rel_err"] == 0
    row = gpu_stream.workload_row(measured, 8, 5, 3, pool_limit=100, pinned_bandwidth=1e9)
    # Every run had X in host memory: right for the CPU and the simulator, a failure on a GPU.
    assert row["check_failed"] == "resident: X was on the host without the pool limit"
    gpu_stream.print_table([row])
    assert row["check_failed"] in capsys.readouterr().out.splitlines()[1]


def measured_run(median_s, on_host, pinned=False, errors=(1e-7, 2e-6, 0.0)):
    run = {"median_s": median_s, "min_s": median_s, "max_s": median_s, "pieces": 64}
    run.update(on_host=on_host, pinned=pinned)
    run.update(zip(("loss_rel_err", "dW_max_rel_err", "db_max_rel_err"), errors))
    return run


def test_gpu_stream_rates_and_verdicts(gpu_stream, capsys):
    n, d = 2**21, 1024  # 8 GiB of float32
    good = {
        "streamed": measured_run(0.2, True, pinned=True),
        "staged": measured_run(0.4, True),
        "resident": measured_run(0.01, False),
    }
    row = gpu_stream.workload_row(good, n, d, 20, 2 * 2**30, pinned_bandwidth=50e9)
    assert row["copy_s"] == pytest.approx(2**33 / 50e9)
    assert row["streamed"]["effective_h2d_gb_per_s"] == pytest.approx(2**33 / 0.2 / 1e9)
    assert row["streamed"]["ratio_to_pinned"] == pytest.approx(2**33 / 0.2 / 50e9)  # 0.86
    assert row["staged"]["ratio_to_pinned"] == pytest.approx(2**33 / 0.4 / 50e9)  # 0.43
    assert row["copy_bound"] and row["meets_target"] and "check_failed" not in row
    assert row["streamed"]["overlap"] == pytest.approx(row["copy_s"] / 0.2)
    slow_compute = {**good, "resident": measured_run(0.3, False), "streamed": measured_run(0.33, True)}
    row2 = gpu_stream.workload_row(slow_compute, n, d, 1000, 2 * 2**30, pinned_bandwidth=50e9)
    assert not row2["copy_bound"] and row2["streamed"]["overlap"] == pytest.approx(0.3 / 0.33)
    bad = {
        **good,
        "streamed": measured_run(0.2, False),
        "staged": measured_run(0.4, True, errors=(0, 0.5, 0)),
    }
    row3 = gpu_stream.workload_row(bad, n, d, 20, 2 * 2**30, pinned_bandwidth=50e9)
    assert row3["check_failed"] == (
        "streamed: X was on the device under the pool limit, so nothing streamed; "
        "staged: result differs from the resident one by 5.00e-01 (tolerance 0.001)"
    )
    gpu_stream.print_table([row, row2])
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith("ok; copy-bound, meets target 0.80")
    assert out[2].endswith("ok; compute-bound, X not page-locked")


def test_gpu_sanitize_reference(blocked):
    gpu_sanitize = importlib.import_module("bench.gpu_sanitize")
    X, y, W, b = make_problem(40, 6, 33, np.float32, seed=5, peaked=True)
    Z = X @ W
    scale = np.full(40, 1 / 40)
    row_loss, G, P, log_P = gpu_sanitize.reference(Z, b, y, scale)
    ref_loss, _, _ = reference_loss_grad(np.eye(40), y, Z.astype(np.float64), b)
    assert row_loss.sum() == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(log_P, reference_log_softmax(Z.astype(np.float64) + b), rtol=1e-12)
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(G.sum(axis=1), 0, atol=1e-15)
