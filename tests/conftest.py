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


def _mapped_files() -> set:
    """Every file some process of this machine that we may inspect has mapped."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        for line in text.splitlines():
            fields = line.split(None, 5)  # address, perms, offset, device, inode, path
            if len(fields) == 6:
                mapped.add(fields[5])
    return mapped


@pytest.fixture(scope="session", autouse=True)
def remove_mpich_segments_of_killed_jobs():
    """Several tests kill ranks on purpose, and MPICH then leaves its node's shared
    memory segment (/dev/shm/mpich_shm_*, a few MiB each) behind: about 60 MiB a
    run. At the end of the session, the segments of this user that appeared during
    it and that no process maps any more are removed, so that repeated runs do not
    fill /dev/shm. (collex's own segments are the tests' business: they assert
    that none is left.)"""
    shm = Path("/dev/shm")
    before = set(shm.glob("mpich_shm_*"))
    yield
    mapped = _mapped_files()
    for path in set(shm.glob("mpich_shm_*")) - before:
        try:
            if path.stat().st_uid == os.getuid() and str(path) not in mapped:
                path.unlink()
        except OSError:
            pass  # gone already, or not ours
