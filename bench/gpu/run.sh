#!/usr/bin/env bash
# Every GPU test and GPU benchmark in one command, for a GPU machine lent for
# minutes (README.md, "CUDA arrays"): builds collex with nvcc there, runs
# tests/test_cuda.py (every collective on CuPy arrays at 1-4 ranks sharing the
# GPU, by each all-reduce way), the CUDA bench at 2 and 4 ranks with the
# stream-ordered kernels beside the default way (again under MPS, if its daemon
# starts there; at 2 ranks with device flags instead of turns too; at 2 ranks the
# send/recv ring, staged and device to device, too), and the digits example on CuPy. Into $OUT (the device tool's
# folder; /tmp/collex-gpu elsewhere), at most 8 files: run.log (everything
# below), build.log, tests.log and the bench's JSON.
# Fetch the MPI wheels it needs first, here: bash bench/gpu/wheels.sh; carry .whl.
# SANITIZE=memcheck or racecheck runs the 2-rank lanes tests under compute-sanitizer instead.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/collex-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# A virtual environment over the machine's own packages (CuPy, PyTorch), with
# the MPI wheels carried in .whl/ (that machine cannot fetch them).
python3 -m venv --system-site-packages /tmp/collex-venv || exit 1
. /tmp/collex-venv/bin/activate
if ls .whl/*.whl >/dev/null 2>&1; then
  python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1
fi
# Built in place (the tests import this tree), for Hopper only (H100/H200: a third of the nvcc time).
python -m pip install -q --no-build-isolation --no-deps -e . -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
  >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at $(($(date +%s) - start)) s"
if [ -n "${SANITIZE:-}" ]; then
  timeout 280 mpirun -n 2 compute-sanitizer --tool "$SANITIZE" --error-exitcode 9 \
    env COLLEX_CUDA_IPC=lanes python tests/mpi/cuda_arrays.py >"$OUT/tests.log" 2>&1
  echo "compute-sanitizer $SANITIZE: exit $?"; tail -20 "$OUT/tests.log"
  exit 0
fi
timeout 240 python -m pytest -q -rs tests/test_cuda.py tests/test_ipc_lanes.py >"$OUT/tests.log" 2>&1
echo "tests: exit $? at $(($(date +%s) - start)) s: $(tail -1 "$OUT/tests.log")"
bench() {  # bench <label> <ranks> [--p2p: the send/recv ring too]
  local limit=60
  [ -n "${3:-}" ] && limit=90
  timeout "$limit" mpirun -n "$2" python -m collex.bench.cuda -b 8 -e 256M -f 16 ${3:-} \
    --json "$OUT/bench-$1-$2.json"
  echo "bench $1 at $2 ranks: exit $? at $(($(date +%s) - start)) s"
}
bench plain 2 --p2p
bench plain 4
# Without MPS the ranks take turns (IPC events); the device flags beside them, to compare.
COLLEX_CUDA_ORDER=flags bench flags 2
# Under MPS the ranks' kernels sharing the GPU run at the same time (if the daemon starts here).
if timeout 10 nvidia-cuda-mps-control -d; then
  sleep 1
  bench mps 2 --p2p
  bench mps 4
  echo quit | timeout 10 nvidia-cuda-mps-control
else
  echo "MPS: the daemon did not start"
fi
timeout 40 mpirun -n 2 python examples/digits_mlp.py --xp cupy --steps 300 2>&1 | tail -3
echo "all done at $(($(date +%s) - start)) s"
