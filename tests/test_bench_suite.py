"""The benchmark suite's machinery (``python -m bench``, ``fastsoftmax bench``) on tiny sizes.

In scope: the flop, byte and floor model; a whole CPU suite run on tiny workloads writes
results.json (machine, command, ceilings, every row), report.txt and the three sweep
plots, reports a peer that is not installed as skipped, and gives every timed row its
rates, floor ratio and speed-up; failures are collected as problems and skipped peers are
not; both command lines parse and refuse bad input.
Out of scope: whether the numbers are fast (timings are never asserted), and the GPU
suite's measurements (``tests/test_bench_gpu_scripts.py`` covers what runs without a GPU).
PyTorch is kept out: ``import torch`` fails in every test here.
"""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from bench import suite as bench_suite
from bench.workloads import Workload, add_rates, add_speedups, failure, parse
from fastsoftmax.cli import main as cli_main

TINY = bench_suite.Suite(
    name="tiny",
    platform="cpu",
    summary="a test's worth",
    workloads=("3000x16x5",),
    repeats=2,
    sweep_base=(1500, 16, 4),
    sweeps={"N": (500, 1500), "D": (8, 16), "C": (3, 6)},
    sweep_repeats=1,
    fit="600x8x3",
    fit_alpha=1e-2,
    fit_max_iter=100,
    fit_repeats=1,
    ceilings={"gemm_n": 128, "read_bytes": 1 << 22},
)


@pytest.fixture(autouse=True)
def no_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)


def test_model_numbers_for_w1():
    w1 = Workload("W1", 1_281_167, 768, 1000)
    assert w1.flops == 3_935_745_024_000
    assert w1.x_bytes == 3_935_745_024
    # GEMM-bound at 50 TFLOP/s and 3 TB/s: 3.936e12 / 50e12 s, against 1.3 ms to read X.
    assert w1.floor_s(50e12, 3e12) == pytest.approx(0.07871490048, rel=1e-12)
    # With a GEMM 100 times faster, reading X once sets the floor.
    assert w1.floor_s(5e15, 3e12) == pytest.approx(3_935_745_024 / 3e12, rel=1e-12)


def test_rates_and_speedups():
    rows = [
        {**parse("1000x10x4").fields(), "implementation": "fastsoftmax", "median_s": 0.5},
        {**parse("1000x10x4").fields(), "implementation": "numpy", "median_s": 2.0},
        {**parse("1000x10x4").fields(), "implementation": "torch", "skipped": "not installed"},
    ]
    for row in rows[:2]:
        add_rates(row, floor_s=0.25)
    add_speedups(rows)
    assert rows[0]["rows_per_s"] == 2000 and rows[0]["gb_per_s"] == 40_000 / 0.5 / 1e9
    assert rows[0]["tflops"] == 4 * 1000 * 10 * 4 / 0.5 / 1e12
    assert rows[0]["ratio_to_floor"] == 2.0 and rows[1]["ratio_to_floor"] == 8.0
    assert rows[0]["fastsoftmax_speedup"] == 1.0 and rows[1]["fastsoftmax_speedup"] == 4.0
    assert "fastsoftmax_speedup" not in rows[2]
    assert failure(rows[2]) == "skipped: not installed" and failure(rows[0]) is None


@pytest.mark.parametrize("spec", ["1000x10", "axbxc", "0x10x4", "10x10x1"])
def test_bad_workload_specs_are_refused(spec):
    with pytest.raises(ValueError, match=repr(spec)):
        parse(spec)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    directory = tmp_path_factory.mktemp("tiny")
    patch = pytest.MonkeyPatch()
    patch.setitem(sys.modules, "torch", None)
    try:
        payload = bench_suite.run_suite(TINY, str(directory), command="python -m bench tiny")
    finally:
        patch.undo()
    return directory, payload


def test_suite_writes_results_report_and_plots(tiny_run):
    directory, payload = tiny_run
    on_disk = json.loads((directory / "results.json").read_text())
    assert on_disk["suite"] == "tiny" and on_disk["problems"] == []
    machine = on_disk["machine"]
    assert machine["command"] == "python -m bench tiny"
    for key in ("cpu", "cpus_usable", "gpu", "versions", "date", "blas", "git_commit", "memory_bytes"):
        assert key in machine
    assert machine["versions"]["numpy"] and machine["versions"]["fastsoftmax"]
    assert on_disk["ceilings"]["gemm_best"] > 0 and on_disk["ceilings"]["read_bandwidth"] > 0
    assert sorted(on_disk["plots"]) == ["sweep_C.png", "sweep_D.png", "sweep_N.png"]
    for name in on_disk["plots"]:
        assert (directory / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (directory / "report.txt").read_text()
    assert "skipped: torch not installed" in report
    assert "target rel gap 1e-06" in report


def test_every_pass_row_is_timed_or_says_why_not(tiny_run):
    _, payload = tiny_run
    rows = payload["passes"] + [r for axis in "NDC" for r in payload["sweeps"][axis]]
    assert len(payload["passes"]) == 4
    assert [len(payload["sweeps"][axis]) for axis in "NDC"] == [8, 8, 8]
    for row in rows:
        if row["implementation"] == "torch":
            assert row["skipped"].startswith("torch not installed")
            continue
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["ratio_to_floor"] == pytest.approx(row["median_s"] / row["floor_s"])
        assert row["rows_per_s"] > 0 and row["gb_per_s"] > 0 and row["tflops"] > 0
        assert row["max_rel_err"] <= 1e-3
        assert row["fastsoftmax_speedup"] > 0
    widths = [r["n_features"] for r in payload["sweeps"]["D"]]
    assert widths == [8, 8, 8, 8, 16, 16, 16, 16]


def test_time_to_accuracy_rows(tiny_run):
    _, payload = tiny_run
    result = payload["accuracy"]
    rows = {r["implementation"]: r for r in result["rows"]}
    assert rows["torch"]["skipped"]
    for name in ("fastsoftmax", "fastsoftmax float64", "sklearn", "numpy+scipy"):
        assert rows[name]["reached"], rows[name]
        assert rows[name]["rel_gap"] <= 1e-6
        assert 0.3 < rows[name]["test_accuracy"] <= 1
    assert rows["fastsoftmax"]["fastsoftmax_speedup"] == 1.0


def test_a_fit_that_misses_the_target_is_reported_not_fatal(tmp_path):
    suite = replace(TINY, fit_max_iter=1, fit_repeats=1)
    payload = bench_suite.run_suite(suite, str(tmp_path), command="test", stages=("accuracy",))
    rows = {r["implementation"]: r for r in payload["accuracy"]["rows"]}
    assert rows["fastsoftmax"]["reached"] is False and rows["fastsoftmax"]["fastsoftmax_speedup"] is None
    assert "accuracy 600x8x3 fastsoftmax: did not reach the target" in payload["problems"]
    report = (tmp_path / "report.txt").read_text()
    assert "fastsoftmax" in report and "PROBLEMS:" in report


def test_failures_become_problems_but_skipped_peers_do_not():
    payload = {"problems": []}
    rows = [
        {"workload": "w", "implementation": "fastsoftmax", "median_s": 1.0},
        {"workload": "w", "implementation": "torch", "skipped": "not installed"},
        {"workload": "w", "implementation": "cupy", "out_of_memory": "40 GB"},
        {"workload": "w", "implementation": "numpy", "check_failed": "dW max rel err 1e-2"},
        {"workload": "w", "implementation": "sklearn", "error": "RuntimeError: boom"},
    ]
    bench_suite._collect_problems(payload, rows, "passes")
    assert payload["problems"] == [
        "passes w numpy: check failed: dW max rel err 1e-2",
        "passes w sklearn: error: RuntimeError: boom",
    ]
    bench_suite._collect_problems(
        payload, [{"workload": "w", "implementation": "fastsoftmax", "skipped": "x"}], "p"
    )
    assert payload["problems"][-1] == "p w fastsoftmax: skipped: x"


def test_openblas_coretype_is_warned_about(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "OPENBLAS_CORETYPE=Haswell" in bench_suite.environment_warnings("cpu")[0]
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert bench_suite.environment_warnings("cpu") == []


def test_default_directory_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = bench_suite.default_directory("quick")
    assert first.startswith("fastsoftmax-bench/quick_")
    (tmp_path / first).mkdir(parents=True)
    assert bench_suite.default_directory("quick") != first
    (tmp_path / "bench" / "results").mkdir(parents=True)
    assert bench_suite.default_directory("cpu").startswith("bench/results/cpu_")


def test_suites_are_well_formed():
    for suite in bench_suite.SUITES.values():
        named = bench_suite._platform(suite.platform)["named"]
        for spec in (*suite.workloads, suite.fit):
            parse(spec, named)
        assert set(suite.sweeps) == {"N", "D", "C"} and len(suite.sweep_base) == 3
        peers = bench_suite._platform(suite.platform)["peers"]
        assert (
            set(suite.sweep_peers or peers) <= set(peers) and (suite.sweep_peers or peers)[0] == "fastsoftmax"
        )
    assert replace(TINY, repeats=3).repeats == 3


def test_fastsoftmax_bench_help(capsys):
    assert cli_main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("quick", "cpu", "gpu", "--output", "--only", "under two minutes"):
        assert text in out
    assert cli_main(["bench", "nosuch"]) == 2
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err
    assert cli_main(["bench", "quick", "--workloads", "10x10"]) == 2
    assert "fastsoftmax bench: error: workload '10x10': expected N x D x C" in capsys.readouterr().err
    assert cli_main(["bench", "quick", "--only", "kernel"]) == 2
    assert "the kernel stage runs in the gpu suite only" in capsys.readouterr().err
    assert cli_main(["bench", "quick", "--only", "kernel", "determinism"]) == 2
    assert "the kernel and determinism stages run in the gpu suite only" in capsys.readouterr().err
    assert cli_main(["bench", "quick", "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err


def test_python_m_bench_help():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m bench" in done.stdout
