"""The model-parallel examples, run small: they must follow one-process training
on the global batch step by step (the scripts exit 1 otherwise)."""

from pathlib import Path

import pytest
from conftest import run_mpi

EXAMPLES = Path(__file__).parent.parent / "examples"

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn (pip install '.[test]')")


@pytest.mark.parametrize("ranks,dp", [(2, 1), (4, 2)])
def test_digits_tensor_parallel_follows_one_process(ranks, dp):
    proc = run_mpi(ranks, str(EXAMPLES / "digits_tp.py"), "--steps", "40", "--dp", str(dp), "--check", "1e-4",
                   module=True, timeout=240)  # fmt: skip
    assert f"dp {dp} x tp {ranks // dp}" in proc.stdout, proc.stdout
    assert "parameters identical on every rank: True" in proc.stdout, proc.stdout


@pytest.mark.parametrize("grid,zero", [("1x2x2", "0"), ("2x2x1", "2")])
def test_gpt_in_three_dimensions_follows_one_process(grid, zero):
    args = ["--grids", grid, "--steps", "8", "--zero", zero, "--check", "1e-4", "--generate", "20"]
    proc = run_mpi(4, str(EXAMPLES / "gpt" / "train.py"), *args, module=True, timeout=240)
    dp, pp, tp = grid.split("x")
    assert f"dp {dp} x pp {pp} x tp {tp}" in proc.stdout and "text written by the model" in proc.stdout, (
        proc.stdout
    )
