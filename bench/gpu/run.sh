#!/usr/bin/env bash
# Every GPU test and GPU benchmark in one command, for a GPU machine lent for
# minutes (README.md, "CUDA arrays"): builds collex with nvcc there, runs
# tests/test_cuda.py (every collective on CuPy arrays at 1-4 ranks sharing the
# GPU, by each all-reduce way), the CUDA bench at 2 and 4 ranks with the
# stream-ordered kernels beside the default way, and the digits example on
# CuPy; logs go to $OUT (the device tool's folder; /tmp/collex-gpu elsewhere).
# Fetch the MPI wheels it needs first, here: bash bench/gpu/wheels.sh; carry .whl.
# SANITIZE=memcheck or racecheck runs the 2-rank lanes tests under compute-sanitizer instead.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/collex-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
# A virtual environment over the machine's own packages (CuPy, PyTorch), with
# the MPI wheels carried in .whl/ (that machine cannot fetch them).
python3 -m venv --system-site-packages /tmp/collex-venv || exit 1
. /tmp/collex-venv/bin/activate
if ls .whl/*.whl >/dev/null 2>&1; then
  python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1
fi
nvidia-smi >"$OUT/gpu.txt" 2>&1
start=$(date +%s)
# Built in place (the tests import this tree), for Hopper only (H100/H200: a third of the nvcc time).
python -m pip install -q --no-build-isolation --no-deps -e . -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built in $(($(date +%s) - start)) s"
if [ -n "${SANITIZE:-}" ]; then
  timeout 280 mpirun -n 2 compute-sanitizer --tool "$SANITIZE" --error-exitcode 9 \
    env COLLEX_CUDA_IPC=lanes python tests/mpi/cuda_arrays.py >"$OUT/sanitize-$SANITIZE.log" 2>&1
  echo "compute-sanitizer $SANITIZE: exit $?"; tail -5 "$OUT/sanitize-$SANITIZE.log"
  exit 0
fi
timeout 240 python -m pytest -q tests/test_cuda.py tests/test_ipc_lanes.py >"$OUT/tests.log" 2>&1
echo "tests: exit $? ($(tail -1 "$OUT/tests.log"))"
for n in 2 4; do
  timeout 60 mpirun -n $n python -m collex.bench.cuda -b 8 -e 256M -f 16 --json "$OUT/bench-$n.json" >"$OUT/bench-$n.txt" 2>&1
  echo "bench at $n ranks: exit $?"; cat "$OUT/bench-$n.txt"
done
timeout 40 mpirun -n 2 python examples/digits_mlp.py --xp cupy --steps 300 >"$OUT/digits.txt" 2>&1
echo "digits on CuPy: exit $? ($(tail -1 "$OUT/digits.txt"))"
echo "all in $(($(date +%s) - start)) s"
