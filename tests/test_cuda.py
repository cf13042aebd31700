"""CUDA arrays. The module test runs wherever the CUDA module was built (CI builds
it: nvcc is there, a GPU is not); the rest needs a GPU and CuPy and skips, saying
why, without them. README.md names the one command that runs them on a GPU."""

import importlib.util
import subprocess
import sys

import pytest
from conftest import run_mpi


def cuda_module():
    try:
        from collex import _cuda
    except ImportError:
        pytest.skip("this build has no CUDA module (no CUDA toolkit was found when it was built)")
    return _cuda


def gpu_count() -> int:
    # Asked in a child process: the first CUDA call in pytest's own process would
    # tie it to the device before the MPI ranks start.
    code = "from collex import _cuda; print(_cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip() or 0)


def need_gpu_and_cupy():
    cuda_module()
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed")
    if gpu_count() == 0:
        pytest.skip("no CUDA device is visible")


def test_cuda_module_loads_without_a_gpu_and_says_why_it_cannot_copy():
    m = cuda_module()
    assert isinstance(m.has_kernels, bool)
    n = m.device_count()  # no driver or no device: 0, not an exception
    assert n >= 0
    if n == 0:
        with pytest.raises(RuntimeError, match="cudaHostAlloc: cuda"):
            m.PinnedBuffer(4096)
    else:
        b = m.PinnedBuffer(4096)
        assert b.bytes == 4096 and b.address != 0
        assert m.pointer_device(b.address) == -1  # pinned host memory is not device memory


def test_cuda_available_says_whether_a_gpu_is_usable_and_never_raises():
    code = "import collex; print(collex.cuda_available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        from collex import _cuda  # noqa: F401
    except ImportError:
        assert out.stdout.strip() == "False"
        return
    assert out.stdout.strip() == str(gpu_count() > 0)


# All-reduce of CUDA arrays on one node reads peers' device memory (CUDA IPC);
# COLLEX_CUDA_IPC=0 sends it through host staging like the other collectives,
# COLLEX_CUDA_IPC=lanes through the stream-ordered kernels (cuda/lanes.py).
# "2x2-lanes": two pretend nodes of two ranks (COLLEX_NODE_SIZE), all-reduce on
# the lanes inside each and through the host between them (cuda/across_nodes.py).
# Ranks sharing the GPU without MPS take turns ordered by IPC events
# (cuda/turns.py); "flags" makes them spin on device flags all the same.
@pytest.mark.parametrize(
    "ranks, ipc, node_size, order",
    [(1, "1", 0, ""), (2, "1", 0, ""), (3, "1", 0, ""), (2, "0", 0, ""), (2, "lanes", 0, ""),
     (3, "lanes", 0, ""), (4, "lanes", 0, ""), (4, "lanes", 2, ""), (2, "lanes", 0, "flags")],
    ids=["1", "2-ipc", "3-ipc", "2-staged", "2-lanes", "3-lanes", "4-lanes", "2x2-lanes", "2-lanes-flags"],
)  # fmt: skip
def test_collectives_and_training_on_cupy_arrays(ranks, ipc, node_size, order):
    need_gpu_and_cupy()
    env = {"OPENBLAS_NUM_THREADS": "1", "COLLEX_CUDA_IPC": ipc}
    if node_size:
        env["COLLEX_NODE_SIZE"] = str(node_size)
    if order:
        env["COLLEX_CUDA_ORDER"] = order
    proc = run_mpi(ranks, "cuda_arrays.py", env=env, timeout=300)
    assert " 0 failed" in proc.stdout


def test_cuda_bench_runs_and_checks_its_results():
    need_gpu_and_cupy()
    proc = run_mpi(2, "-m", "collex.bench.cuda", "-e", "1M", "-f", "64", module=True, timeout=300)
    assert "WRONG" not in proc.stdout + proc.stderr
    assert " 1M " in proc.stdout, proc.stdout
