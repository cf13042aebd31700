#!/usr/bin/env bash
# Fetches, on the machine with network, the wheels the GPU machine lacks (it has
# Python 3.12, CuPy, PyTorch, pybind11, scikit-build-core, hypothesis, but no MPI
# and nothing to fetch with) into .whl/, which git ignores and `run`'s carry takes:
#   bash bench/gpu/wheels.sh    # then device run with carry [".whl"]: bash bench/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
for spec in mpich==5.0.2 mpi4py==4.1.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
ls -l .whl
