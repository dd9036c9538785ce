"""The GPU benchmark scripts (``bench/gpu_ceilings.py``, ``gpu_peers.py``, ``gpu_pass.py``,
``gpu_stream.py``, ``gpu_sanitize.py``, ``gpu_determinism.py``, and ``python -m bench gpu``), on the CPU.

In scope: the modules import, and ``--help`` works, without CuPy or PyTorch; the named
workloads and the kernel's byte count; the gpu suite without CuPy stops with a message
naming CuPy; the textbook softmax gradient and the plain CuPy peer are right (run with
NumPy in CuPy's place);
``gpu_stream``'s passes, rates and report on tiny data, on the CPU backend and on the CUDA
backend in Numba's simulator (where "streamed" and "resident" are the same NumPy arrays);
``gpu_sanitize``'s reference; ``gpu_determinism``'s checks, timing and report on tiny data
in Numba's simulator, and its workload size.
Out of scope: anything measured on a device, which only ``python -m bench gpu`` and
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

from bench.workloads import Workload
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
        "import bench.gpu_ceilings, bench.gpu_peers, bench.gpu_pass, bench.gpu_stream, bench.gpu_sanitize, "
        "bench.gpu_determinism, "
        "bench.accuracy, bench.fitters, bench.suite, bench.plots; "
        "print('imported')"
    )
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout


def test_gpu_suite_help_works_without_cupy_or_torch():
    done = run_blocked(
        "import runpy; sys.argv = ['bench', 'gpu', '--help']; "
        "runpy.run_module('bench', run_name='__main__', alter_sys=True)"
    )
    assert done.returncode == 0, done.stderr
    for text in ("--workloads", "--repeats", "--output", "--only", "gpu:"):
        assert text in done.stdout


def test_gpu_stream_help_works_without_cupy_or_torch():
    done = run_blocked(
        "import runpy; sys.argv = ['bench.gpu_stream', '--help']; "
        "runpy.run_module('bench.gpu_stream', run_name='__main__', alter_sys=True)"
    )
    assert done.returncode == 0, done.stderr
    for text in ("--dataset-gib", "--pool-limit-gib", "--features", "--classes", "--repeats", "--output"):
        assert text in done.stdout


def test_gpu_suite_without_cupy_exits_naming_cupy():
    done = run_blocked(
        "import runpy; sys.argv = ['bench', 'gpu', '--workloads', 'W2']; "
        "runpy.run_module('bench', run_name='__main__', alter_sys=True)"
    )
    assert done.returncode == 2
    assert "python -m bench: error: the gpu suite needs CuPy" in done.stderr
    assert "Traceback" not in done.stderr


def test_require_gpu_without_cupy_names_cupy(gpu_pass):
    with pytest.raises(SystemExit, match="needs CuPy.*pip install cupy-cuda13x"):
        gpu_pass.require_gpu()


def test_bad_workload_is_refused_before_anything_runs(blocked, capsys):
    from bench import suite

    assert suite.main(["gpu", "--workloads", "W9"]) == 2
    err = capsys.readouterr().err
    assert "error: workload 'W9': expected N x D x C like 200000x256x20 or one of W1, W2, W3" in err


def test_named_workloads_and_kernel_bytes(gpu_pass):
    from bench.workloads import parse

    assert parse("W1", gpu_pass.WORKLOADS) == Workload("W1", *W1)
    assert parse("W3", gpu_pass.WORKLOADS) == Workload("W3", 1_000_000, 1024, 10_000)
    n, d, c = W1
    assert gpu_pass.kernel_bytes(262_144, c) == 262_144 * (2 * 4 * c + 8 + 4 + 4)


def test_documented_examples_hold(gpu_pass):
    results = doctest.testmod(gpu_pass)
    assert results.attempted >= 1
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
def test_textbook_softmax_grad(blocked, dtype):
    from bench import peers

    X, y, W, b = make_problem(300, 7, 33, dtype, seed=0, peaked=True)
    Z = X @ W + b
    log_p = reference_log_softmax(Z)
    row_loss = peers.textbook_softmax_grad_(np, Z, y)
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


# -- bench.gpu_determinism ------------------------------------------------------------------------
@pytest.fixture
def gpu_determinism(blocked):
    return importlib.import_module("bench.gpu_determinism")


def test_determinism_workload_is_two_and_a_half_deterministic_chunks(gpu_determinism):
    results = doctest.testmod(gpu_determinism)
    assert results.attempted >= 1 and results.failed == 0
    assert gpu_determinism.workload_rows(1024) == 2560


@pytest.mark.cuda
@pytest.mark.skipif(
    not cuda_simulated(), reason="the simulator's smoke test; on a GPU, python -m bench gpu runs it"
)
def test_determinism_stage_on_tiny_data(gpu_determinism, monkeypatch):
    """Both modes on 8 rows, 4 a chunk when deterministic and 8 by free memory: checks, times, report."""
    from fastsoftmax.backends import cuda

    per_row = 3 * 4 + 8  # float32 logits and the row loss
    monkeypatch.setattr(cuda, "SIMULATED_TOTAL_BYTES", 5 * 4 * per_row)  # 0.5 * 0.4 of it: 4 rows
    monkeypatch.setattr(cuda, "SIMULATED_FREE_BYTES", 2 * 8 * per_row)  # 0.5 of it: 8 rows
    backends = {"deterministic": cuda.CudaBackend(), "free_memory": cuda.CudaBackend(deterministic=False)}
    X, y, W, b = make_problem(8, 5, 3, np.float32, seed=6)
    time_runs = importlib.import_module("bench.cpu_pass").time_runs  # host timing: the simulator's
    result = gpu_determinism.measure(backends, (X, y, W, b), 1, time_runs)
    assert result["deterministic"]["chunk_rows"] == 4 and result["deterministic"]["chunks"] == 2
    assert result["free_memory"]["chunk_rows"] == 8 and result["free_memory"]["chunks"] == 1
    assert result["bit_identical"] and "check_failed" not in result
    assert result["max_rel_err"] <= rtol_for(np.float32, 8) and result["loss_rel_err"] <= rtol_for(
        np.float32, 8
    )
    assert result["ratio"] == result["deterministic"]["median_s"] / result["free_memory"]["median_s"]
    lines = gpu_determinism.report_lines(result)
    assert lines[1].startswith("  deterministic=True ") and lines[1].endswith("2 chunks of 4 rows")
    assert lines[2].startswith("  deterministic=False") and lines[2].endswith("1 chunks of 8 rows")
    assert "bit-identical on a second pass: True" in lines[3]


def test_determinism_report_says_why_nothing_was_timed(gpu_determinism):
    result = {"n_samples": 10, "n_features": 2, "n_classes": 3, "check_failed": "deterministic=True gave ..."}
    assert gpu_determinism.report_lines(result) == [
        "deterministic=True against deterministic=False, one pass over 10 x 2 x 3: FAILED: "
        "check failed: deterministic=True gave ..."
    ]
