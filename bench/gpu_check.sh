#!/usr/bin/env bash
# The checks that need a GPU, in one script for a lent GPU machine.
#
# Usage, from the repository root, with OUT naming a folder for every log and result:
#
#     OUT=/tmp/gpu_out bash bench/gpu_check.sh                  # tests sanitize stream
#     OUT=/tmp/gpu_out bash bench/gpu_check.sh stream           # only what a rerun needs
#     OUT=/tmp/gpu_out bash bench/gpu_check.sh tests sanitize stream suite
#     OUT=/tmp/gpu_out bash bench/gpu_check.sh determinism      # the cost of deterministic=True
#
# Always: installs the project (no dependencies: the machine has no package index, and
# numpy, numba, numba-cuda, cupy, scipy, scikit-learn, pytest and pytest-timeout are
# there) and records the GPU and library versions.  Then the steps asked for, each under a
# time limit, each run even when an earlier one failed:
#
#     tests     python3 -m pytest -m "cuda or gpu" (every CUDA test on the device)
#                                                                -> OUT/pytest_gpu.log
#     sanitize  compute-sanitizer memcheck and racecheck over
#               python3 -m bench.gpu_sanitize                    -> OUT/sanitize_*.log
#               (CUDA API errors are not reported: the driver bindings probe for
#               entry points that the driver lacks, and each probe reads as an error)
#     stream    python3 -m bench.gpu_stream                      -> OUT/gpu_stream.{json,log}
#     suite     python3 -m bench gpu (heavy; not by default) -> OUT/gpu_suite/ and OUT/gpu_suite.log
#     determinism
#               python3 -m bench gpu --only determinism (the ceilings, then one pass with
#               deterministic=True and False; not by default)
#                                             -> OUT/gpu_determinism/ and OUT/gpu_determinism.log
#
# On an H100 the sanitize step took 15 s and the stream step 40 s; the tests step takes
# what the GPU tests take; the suite and determinism steps have not been timed on a GPU yet.  Every step
# stops at its time limit.  A lent machine stops a command at 10 minutes: run the suite
# step alone (install 60 s + suite 480 s), and the other steps in a separate command.
# A suite stopped at its limit keeps what it measured in OUT/gpu_suite/results.json.  A summary of the exit codes ends
# the output and OUT/summary.txt; the script's own exit code is 0 only when every step
# passed.

set -o pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder for logs and results}"
mkdir -p "$OUT"

# Seconds per step, at most (override from the environment).
: "${INSTALL_TIMEOUT:=60}" "${TESTS_TIMEOUT:=180}" "${SANITIZE_TIMEOUT:=75}" "${STREAM_TIMEOUT:=180}"
: "${SUITE_TIMEOUT:=480}" "${DETERMINISM_TIMEOUT:=240}"

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests sanitize stream)
for step in "${steps[@]}"; do
    case "$step" in
        tests | sanitize | stream | suite | determinism) ;;
        *) echo "unknown step '$step'; expected any of: tests sanitize stream suite determinism" >&2; exit 2 ;;
    esac
done

names=()
codes=()
# run NAME LOG TIMEOUT COMMAND...: the command's output to the screen and LOG, its exit
# code recorded (124: it ran out of time).
run() {
    local name=$1 log=$2 limit=$3
    shift 3
    echo "=== $name: $* (limit ${limit}s)"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
    local code=$?
    echo "=== $name: exit $code after $((SECONDS - start))s"
    names+=("$name")
    codes+=("$code")
}

run install "$OUT/install.log" "$INSTALL_TIMEOUT" python3 -m pip install --no-deps --no-build-isolation -e .

{
    nvidia-smi
    python3 - <<'EOF'
import platform
from importlib import metadata

print("python", platform.python_version())
for dist in ("numpy", "scipy", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "torch", "fastsoftmax"):
    try:
        print(dist, metadata.version(dist))
    except metadata.PackageNotFoundError:
        print(dist, "not installed")
EOF
    command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null
} 2>&1 | tee "$OUT/machine.txt"

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)

# numba-cuda 0.30 registers an overload of np.row_stack, which NumPy 2.5 removed (it was
# np.vstack under another name): with both, no CUDA kernel compiles.  Until numba-cuda
# drops it, every Python of this script gets the alias back, from a sitecustomize on
# PYTHONPATH that only this script sets.
if ! python3 -c "import numpy; numpy.row_stack" 2>/dev/null; then
    compat=$(mktemp -d)
    printf 'import numpy\n\nnumpy.row_stack = numpy.vstack\n' >"$compat/sitecustomize.py"
    export PYTHONPATH="$compat${PYTHONPATH:+:$PYTHONPATH}"
    echo "=== NumPy $(python3 -c 'import numpy; print(numpy.__version__)') has no row_stack:" \
        "aliased to vstack for numba-cuda" | tee -a "$OUT/machine.txt"
fi

for step in "${steps[@]}"; do
    case "$step" in
        tests)
            run tests "$OUT/pytest_gpu.log" "$TESTS_TIMEOUT" \
                python3 -m pytest -m "cuda or gpu" -q -p no:cacheprovider --timeout 150 \
                --junitxml "$OUT/pytest_gpu.xml" tests
            ;;
        sanitize)
            if [ -z "$sanitizer" ]; then
                echo "=== sanitize: compute-sanitizer not found on PATH or under /usr/local/cuda*/bin"
                names+=(sanitize)
                codes+=(127)
                continue
            fi
            for tool in memcheck racecheck; do
                run "sanitize-$tool" "$OUT/sanitize_$tool.log" "$SANITIZE_TIMEOUT" \
                    "$sanitizer" --tool "$tool" --report-api-errors no --error-exitcode 1 \
                    python3 -m bench.gpu_sanitize
            done
            ;;
        stream)
            run stream "$OUT/gpu_stream.log" "$STREAM_TIMEOUT" \
                python3 -m bench.gpu_stream --output "$OUT/gpu_stream.json"
            ;;
        suite)
            run suite "$OUT/gpu_suite.log" "$SUITE_TIMEOUT" \
                python3 -m bench gpu --output "$OUT/gpu_suite"
            ;;
        determinism)
            run determinism "$OUT/gpu_determinism.log" "$DETERMINISM_TIMEOUT" \
                python3 -m bench gpu --only determinism --output "$OUT/gpu_determinism"
            ;;
    esac
done

{
    echo "=== summary (exit codes; 124: out of time)"
    for i in "${!names[@]}"; do
        printf '%-20s %s\n' "${names[$i]}" "${codes[$i]}"
    done
} | tee "$OUT/summary.txt"
status=0
for code in "${codes[@]}"; do
    [ "$code" -eq 0 ] || status=1
done
exit $status
