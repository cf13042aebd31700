"""Test helpers: launching real MPI jobs, and the kernels' instruction sets.

MPI tests are scripts under tests/mpi/ run by `mpirun -n N python SCRIPT ARGS`;
each launch runs many cases (a launch costs about a second) and prints one line
per failure. A hung job is killed after its timeout, and every wait inside it
has a COLLEX_TIMEOUT far below that, so a hang shows up as an error message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "mpi"


def kernel_isas() -> list:
    """The instruction sets the kernels are built for, as test parameters; those
    this CPU cannot run are skipped with a reason, so that a run shows what it
    did not check instead of quietly testing less."""
    from collex import _core

    before = _core.kernel_isa()
    params = []
    for isa in ("generic", "avx2", "avx512"):
        skip = pytest.mark.skipif(not _core._use_kernel_isa(isa), reason=f"this CPU cannot run {isa} kernels")
        params.append(pytest.param(isa, marks=skip))
    _core._use_kernel_isa(before)
    return params


def mpirun_path() -> str:
    here = Path(sys.executable).parent / "mpirun"
    found = str(here) if here.exists() else shutil.which("mpirun")
    if not found:
        pytest.fail("mpirun not found: install collex (it brings the mpich wheel) in this environment")
    return found


def run_mpi(
    n: int,
    script: str,
    *args: str,
    timeout: float = 240,
    env: dict | None = None,
    expect_rc: int | None = 0,
    module: bool = False,
    launcher_args: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Runs `mpirun -n n python tests/mpi/script args...` (with module=True, script
    and args go to python as they are, e.g. "-m", "collex.bench"); fails the test
    on an exit code other than expect_rc (None: any) or on timeout, showing the output."""
    full_env = dict(os.environ)
    full_env.setdefault("COLLEX_TIMEOUT", "60")
    full_env.update(env or {})
    target = [script] if module else [str(SCRIPTS / script)]
    cmd = [mpirun_path(), *(launcher_args or []), "-n", str(n), sys.executable, *target, *args]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    if expect_rc is not None and proc.returncode != expect_rc:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode} (expected {expect_rc})\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc
