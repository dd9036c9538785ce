"""A description of the machine and software, stored with every result file."""

import datetime
import os
import platform
import sys
from importlib import metadata


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(module):
    """Dict of CPU, cores, Python, library versions, BLAS, relevant env vars and the command.

    ``module`` is the benchmark's module name (``bench.cpu_pass``), which with the
    arguments of this process makes the command that reproduces the result.
    """
    versions = {}
    for dist in ("fastsoftmax", "numpy", "numba", "scipy", "scikit-learn", "torch", "threadpoolctl"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        from threadpoolctl import threadpool_info

        blas = [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for lib in threadpool_info()
        ]
    except ImportError:
        blas = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", module, *sys.argv[1:]]),
        "cpu": _cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "blas": blas,
        "env": {
            k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_", "FASTSOFTMAX"))
        },
    }
