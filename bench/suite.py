"""``python -m bench SUITE`` (or ``fastsoftmax bench SUITE``): run a named benchmark suite.

A suite runs, in one process and on the same data for every implementation:

1. the machine's ceilings (``bench.ceilings`` on the CPU: SGEMM rate and read bandwidth;
   ``bench.gpu_ceilings`` on the GPU: GEMM rate, device copy, read and pinned host-to-device
   bandwidth);
2. ``passes``: one full-batch loss-and-gradient pass per workload and implementation,
   checked against a float64 reference, then timed (median and spread over the repeats),
   with rows/s, GB/s (bytes of X), TFLOP/s, the floor and fastsoftmax's speed-up over each
   peer (``bench.cpu_pass``, ``bench.gpu_pass``; the floor is ``bench.workloads``'s);
3. ``sweeps``: the same pass as N, D and C grow one at a time from a base workload, drawn
   as PNG plots when matplotlib is installed (``bench.plots``);
4. ``accuracy``: time-to-accuracy of a full fit, the wall time until the objective is within
   1e-6 relative of scikit-learn's optimum, with held-out accuracy (``bench.accuracy``);
5. ``kernel`` (gpu suite): the fused softmax-gradient kernel alone against the copy
   bandwidth;
6. ``determinism`` (gpu suite): one pass with ``CudaBackend(deterministic=True)``, the
   default, against ``deterministic=False``, on a workload sized so that their chunks
   differ (``bench.gpu_determinism``): both times and their ratio.

Everything goes to one folder: ``results.json`` (the machine description, the exact
command, the ceilings and every row; rewritten after each stage, so a run stopped early
keeps what it measured), ``report.txt`` (the printed tables) and the plots.  A peer that
cannot run here (not installed, no GPU) is a row that says "skipped" and why.
"""

import argparse
import datetime
import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field

from . import machine, plots, report
from .workloads import BYTE_MODEL, FLOP_MODEL, Workload, failure, parse

STAGES = ("passes", "sweeps", "accuracy", "kernel", "determinism")
GPU_STAGES = ("kernel", "determinism")


@dataclass(frozen=True)
class Suite:
    """What one named suite runs, and how big.

    Attributes
    ----------
    name : str
    platform : {"cpu", "gpu"}
    summary : str
        One line for ``--help`` and the report.
    workloads : tuple of str
        ``NxDxC`` specs (or, on the GPU, names of ``bench.gpu_pass.WORKLOADS``) of the pass table.
    repeats : int
        Timed passes per implementation in the pass table (and the kernel and determinism stages).
    sweep_base : tuple of int
        (N, D, C) held fixed while one of them is swept.
    sweeps : dict of str to tuple of int
        Values of "N", "D" and "C" to sweep.
    sweep_repeats : int
        Timed passes per implementation at each sweep point.
    fit : str
        ``NxDxC`` of the time-to-accuracy fit (training rows; a quarter more are held out).
    fit_alpha, fit_max_iter, fit_repeats : float, int, int
        Its penalty, the largest iteration cap searched, and the timed fits at the cap found.
    ceilings : dict
        Keyword arguments of the platform's ``measure()``.
    kernel_rows : int
        Rows of logits in the kernel stage (GPU only).
    sweep_peers : tuple of str or None
        Implementations in the sweeps; None for all.  The gpu suite leaves out
        ``torch.compile``, which compiles afresh for every shape (tens of seconds each).
    """

    name: str
    platform: str
    summary: str
    workloads: tuple
    repeats: int
    sweep_base: tuple
    sweeps: dict
    sweep_repeats: int
    fit: str
    fit_alpha: float
    fit_max_iter: int
    fit_repeats: int
    ceilings: dict = field(default_factory=dict)
    kernel_rows: int = 0
    sweep_peers: tuple = None


SUITES = {
    "quick": Suite(
        name="quick",
        platform="cpu",
        summary="a laptop CPU in under two minutes",
        workloads=("100000x128x20", "20000x128x1000"),
        repeats=7,
        sweep_base=(50_000, 128, 20),
        sweeps={
            "N": (5_000, 20_000, 100_000, 400_000),
            "D": (16, 64, 256, 1024),
            "C": (2, 10, 100, 1000),
        },
        sweep_repeats=5,
        fit="50000x128x10",
        fit_alpha=1e-3,
        fit_max_iter=300,
        fit_repeats=3,
        ceilings={"read_bytes": 1 << 28},
    ),
    "cpu": Suite(
        name="cpu",
        platform="cpu",
        summary="the CPU at full size, C up to 10,000 (5 minutes on 2 cores)",
        workloads=("200000x256x20", "200000x256x1000", "20000x256x10000", "1000000x64x2"),
        repeats=7,
        sweep_base=(200_000, 256, 20),
        sweeps={
            "N": (10_000, 30_000, 100_000, 300_000, 1_000_000),
            "D": (16, 64, 256, 1024),
            "C": (2, 10, 100, 1000),
        },
        sweep_repeats=5,
        fit="200000x256x20",
        fit_alpha=1e-4,
        fit_max_iter=500,
        fit_repeats=3,
    ),
    "gpu": Suite(
        name="gpu",
        platform="gpu",
        summary="one CUDA GPU: W1, W2, sweeps up to 10M rows and 10,000 classes (not yet timed on a GPU)",
        workloads=("W1", "W2"),
        repeats=10,
        sweep_base=(500_000, 256, 100),
        sweeps={
            "N": (10_000, 100_000, 1_000_000, 10_000_000),
            "D": (64, 256, 1024, 4096),
            "C": (10, 100, 1000, 10_000),
        },
        sweep_repeats=5,
        fit="100000x256x100",
        fit_alpha=1e-4,
        fit_max_iter=500,
        fit_repeats=3,
        kernel_rows=262_144,  # a 1.05 GB chunk of W1's logits: 20 times an H100's L2
        sweep_peers=("fastsoftmax", "torch", "cupy"),
    ),
}


# -- the two platforms ------------------------------------------------------------------------
def _platform(name):
    """The platform's pieces: requirement check, ceilings, pass runner, peers, fitters, floor."""
    if name == "cpu":
        from . import ceilings, cpu_pass, peers

        return {
            "require": lambda: None,
            "ceilings": ceilings.measure,
            "run_pass": cpu_pass.run_workload,
            "peers": list(peers.PEERS),
            "fitters": ["fastsoftmax", "fastsoftmax float64", "sklearn", "torch", "numpy+scipy"],
            "reference": "fastsoftmax",
            "named": {},
            "floor": f"max({FLOP_MODEL} / gemm_best, {BYTE_MODEL} / read_bandwidth)",
        }
    from . import gpu_ceilings, gpu_pass, gpu_peers

    return {
        "require": gpu_pass.require_gpu,
        "ceilings": gpu_ceilings.measure,
        "run_pass": gpu_pass.run_workload,
        "peers": list(gpu_peers.PEERS),
        # fastsoftmax's CPU backend is left to the cpu suite: on the CPU it takes longer
        # than every GPU stage together.
        "fitters": ["fastsoftmax cuda", "torch cuda", "sklearn"],
        "reference": "fastsoftmax cuda",
        "named": gpu_pass.WORKLOADS,
        "floor": (
            f"max({FLOP_MODEL} / gemm_fp32_best, {BYTE_MODEL} / hbm_bandwidth), hbm_bandwidth = "
            "max(copy bandwidth counted as bytes read + written, read-only bandwidth)"
        ),
    }


def environment_warnings(platform):
    """Settings of this process that would make the numbers unrepresentative."""
    found = []
    if platform == "cpu" and "OPENBLAS_CORETYPE" in os.environ:
        found.append(
            f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set: it pins OpenBLAS's kernels to that "
            "core type, which can slow NumPy's, scikit-learn's and fastsoftmax's GEMMs several times on a "
            "newer CPU; rerun under `env -u OPENBLAS_CORETYPE` unless that is what you mean to measure"
        )
    return found


# -- running ----------------------------------------------------------------------------------
class _Recorder:
    """Prints lines and keeps them for ``report.txt``; writes the JSON payload on demand."""

    def __init__(self, directory, payload):
        self.directory = directory
        self.payload = payload
        self.lines = []
        os.makedirs(directory, exist_ok=True)

    def print(self, *lines):
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def save(self):
        with open(os.path.join(self.directory, "results.json"), "w") as f:
            json.dump(self.payload, f, indent=2, default=_json_default)
            f.write("\n")
        with open(os.path.join(self.directory, "report.txt"), "w") as f:
            f.write("\n".join(self.lines) + "\n")


def _json_default(value):
    # NumPy scalars that slipped into a row (np.float64 is a float; np.int64 and np.bool_ are not)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _sweep_workloads(suite, axis):
    n, d, c = suite.sweep_base
    index = "NDC".index(axis)
    for value in suite.sweeps[axis]:
        dims = [n, d, c]
        dims[index] = value
        yield Workload(f"{axis}={value}", *dims)


def run_suite(suite, directory, command, stages=STAGES, draw_plots=True):
    """Run ``suite``'s stages; write ``results.json``, ``report.txt`` and plots to ``directory``.

    Parameters
    ----------
    suite : Suite
    directory : str
    command : str
        The exact command line, stored in the results.
    stages : iterable of str
        Any of ``STAGES``; those of ``GPU_STAGES`` run on the GPU only.
    draw_plots : bool
        Draw the sweep plots (skipped, with the reason in the results, without matplotlib).

    Returns
    -------
    payload : dict
        What ``results.json`` holds.  ``payload["problems"]`` lists every failure that is
        not a finding about a peer (a skipped or out-of-memory peer is a finding; fastsoftmax
        failing, or any implementation disagreeing with the reference, is a problem).
    """
    platform = _platform(suite.platform)
    platform["require"]()
    from . import accuracy

    payload = {
        "suite": suite.name,
        "machine": machine.describe(command),
        "settings": {
            "suite": dict(vars(suite)),
            "stages": list(stages),
            "dtype": "float32",
            "flop_model": FLOP_MODEL,
            "byte_model": BYTE_MODEL,
            "floor": platform["floor"],
        },
        "warnings": environment_warnings(suite.platform),
        "problems": [],
    }
    out = _Recorder(directory, payload)
    out.print(f"fastsoftmax benchmark suite '{suite.name}': {suite.summary}")
    out.print(f"machine: {payload['machine']['cpu']}, {payload['machine']['cpus_usable']} CPUs usable")
    for warning in payload["warnings"]:
        out.print(f"WARNING: {warning}")

    report.log("measuring ceilings")
    ceiling = platform["ceilings"](**suite.ceilings)
    payload["ceilings"] = ceiling
    if suite.platform == "gpu":
        payload["gpu"] = machine.describe_gpu()
        out.print(
            f"device: {payload['gpu']['name']}, driver {payload['machine']['gpu'].get('driver_version')}"
        )
    out.print(report.ceilings_line(suite.platform, ceiling))
    out.save()

    if "passes" in stages:
        payload["passes"] = rows = []
        for spec in suite.workloads:
            report.log(f"passes: {spec}")
            rows.extend(
                platform["run_pass"](
                    parse(spec, platform["named"]), platform["peers"], suite.repeats, ceiling
                )
            )
            out.save()
        out.print("", f"one loss-and-gradient pass (median of {suite.repeats}):", *report.pass_table(rows))
        _collect_problems(payload, rows, "passes")

    if "sweeps" in stages:
        payload["sweeps"] = sweeps = {}
        for axis in suite.sweeps:
            sweeps[axis] = rows = []
            for workload in _sweep_workloads(suite, axis):
                report.log(f"sweep {axis}: {workload.label}")
                names = list(suite.sweep_peers or platform["peers"])
                rows.extend(platform["run_pass"](workload, names, suite.sweep_repeats, ceiling))
                out.save()
            n, d, c = suite.sweep_base
            out.print("", f"sweep over {axis} from N x D x C = {n} x {d} x {c}:", *report.pass_table(rows))
            _collect_problems(payload, rows, f"sweep {axis}")
        why_not = plots.matplotlib_missing() if draw_plots else "not asked for (--no-plots)"
        if why_not:
            payload["plots"] = {"skipped": why_not}
            out.print(f"plots skipped: {why_not}")
        else:
            title = f"fastsoftmax bench {suite.name}: {payload.get('gpu', {}).get('name') or payload['machine']['cpu']}"
            paths = plots.sweep_plots(sweeps, directory, title)
            payload["plots"] = [os.path.basename(p) for p in paths]
            out.print(*(f"wrote {p}" for p in paths))
        out.save()

    if "accuracy" in stages:
        report.log(f"time to accuracy: {suite.fit}")
        result = accuracy.run_time_to_accuracy(
            suite.fit,
            platform["fitters"],
            suite.fit_alpha,
            suite.fit_max_iter,
            suite.fit_repeats,
            log=report.log,
            speedup_over=platform["reference"],
        )
        payload["accuracy"] = result
        out.print("", *accuracy.format_table(result).splitlines())
        _collect_problems(payload, result["rows"], "accuracy", reference=platform["reference"])
        out.save()

    if "kernel" in stages and suite.platform == "gpu":
        from . import gpu_pass

        report.log(f"kernel: {suite.kernel_rows} rows")
        n_classes = gpu_pass.WORKLOADS["W1"][2]
        try:
            kernel = gpu_pass.run_kernel(suite.kernel_rows, n_classes, suite.repeats, ceiling)
        except Exception as exc:  # noqa: BLE001 (reported like any other failure; the results so far are kept)
            traceback.print_exc()
            kernel = {
                "rows": suite.kernel_rows,
                "n_classes": n_classes,
                "error": f"{type(exc).__name__}: {exc}",
            }
        payload["kernel"] = kernel
        out.print("", report.kernel_line(kernel))
        why = failure(kernel)
        if why:
            payload["problems"].append(f"kernel: {why}")
        out.save()

    if "determinism" in stages and suite.platform == "gpu":
        from . import gpu_determinism

        report.log("determinism: deterministic=True against False")
        try:
            determinism = gpu_determinism.run(suite.repeats)
        except Exception as exc:  # noqa: BLE001 (reported like any other failure; the results so far are kept)
            traceback.print_exc()
            determinism = {"error": f"{type(exc).__name__}: {exc}"}
        payload["determinism"] = determinism
        out.print("", *gpu_determinism.report_lines(determinism))
        why = failure(determinism)
        if why:
            payload["problems"].append(f"determinism: {why}")
        out.save()

    if payload["problems"]:
        out.print("", "PROBLEMS:", *(f"  {p}" for p in payload["problems"]))
    out.print("", f"wrote {os.path.join(directory, 'results.json')} and report.txt")
    out.save()
    return payload


def _collect_problems(payload, rows, stage, reference="fastsoftmax"):
    """Add to ``payload["problems"]`` every row that is not a finding about a peer.

    A peer skipped or out of memory is a finding; an error, a failed check, or anything
    short of a measurement (or of the target, in time to accuracy) for ``reference`` is a problem.
    """
    for r in rows:
        why = failure(r)
        if why is None and r["implementation"] == reference and r.get("reached") is False:
            why = "did not reach the target"
        if why is None or why.startswith(("skipped", "out of memory")) and r["implementation"] != reference:
            continue
        payload["problems"].append(f"{stage} {r['workload']} {r['implementation']}: {why}")


# -- the command line ---------------------------------------------------------------------------
def default_directory(suite_name):
    """``bench/results/<suite>_<date>`` in a checkout, else ``fastsoftmax-bench/<suite>_<date>``."""
    today = datetime.date.today().isoformat()
    root = (
        os.path.join("bench", "results")
        if os.path.isdir(os.path.join("bench", "results"))
        else "fastsoftmax-bench"
    )
    path = os.path.join(root, f"{suite_name}_{today}")
    if os.path.exists(path):  # never overwrite an earlier run (a committed result, say)
        path += time.strftime("_%H%M%S")
    return path


def build_parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a benchmark suite: fastsoftmax against its peers, ceilings, floors, "
        "time-to-accuracy and scaling sweeps.",
        epilog="Suites: " + "; ".join(f"{s.name}: {s.summary}" for s in SUITES.values()),
    )
    parser.add_argument("suite", choices=list(SUITES), help="which suite to run")
    parser.add_argument("--output", metavar="DIR", help="folder for results.json, report.txt and plots")
    parser.add_argument(
        "--only", nargs="+", choices=STAGES, default=list(STAGES), help="run only these stages"
    )
    parser.add_argument("--repeats", type=int, help="timed passes per implementation (default: the suite's)")
    parser.add_argument("--workloads", nargs="+", help="NxDxC specs of the pass table (default: the suite's)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the sweep plots")
    return parser


def main(argv=None, prog="python -m bench"):
    """Run the command.

    Returns
    -------
    int
        0; 1 when a problem was found (they are printed); 2 for a usage error or a machine
        that cannot run the suite (the reason is printed).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        suite = _configured(args)
        directory = args.output or default_directory(suite.name)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise SystemExit(f"--output {directory!r} is a file, not a folder")
        command = shlex.join([prog, *argv])
        payload = run_suite(suite, directory, command, stages=args.only, draw_plots=not args.no_plots)
    except SystemExit as exc:  # a bad option value, or no GPU for the gpu suite
        if isinstance(exc.code, str):
            print(f"{prog}: error: {exc.code}", file=sys.stderr)
            return 2
        raise
    return 1 if payload["problems"] else 0


def _configured(args):
    """The named suite with the command line's overrides; SystemExit naming a bad value."""
    suite = SUITES[args.suite]
    if suite.platform == "cpu" and set(args.only) <= set(GPU_STAGES):
        verb = "stage runs" if len(args.only) == 1 else "stages run"
        raise SystemExit(
            f"the {' and '.join(args.only)} {verb} in the gpu suite only; suite {suite.name!r} has nothing to run"
        )
    overrides = {}
    if args.repeats is not None:
        if args.repeats < 1:
            raise SystemExit("--repeats must be at least 1")
        overrides.update(repeats=args.repeats, sweep_repeats=args.repeats)
    if args.workloads:
        for spec in args.workloads:
            try:
                parse(spec, _platform(suite.platform)["named"])
            except ValueError as exc:
                raise SystemExit(str(exc)) from None
        overrides["workloads"] = tuple(args.workloads)
    return Suite(**{**vars(suite), **overrides}) if overrides else suite
