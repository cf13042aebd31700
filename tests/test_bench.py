"""The bench suite: its arithmetic alone, its correctness check catching a planted
wrong result, and a tiny sweep under mpirun writing valid JSON and CSV.
No timing is asserted anywhere."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from collex.bench import data, model, summarize
from conftest import run_mpi


def test_sizes_parse_and_sweep():
    assert [model.parse_size(s) for s in ("8", "1K", "64M", "2G", "3kb")] == [
        8,
        1024,
        64 << 20,
        2 << 30,
        3072,
    ]
    with pytest.raises(ValueError, match="size"):
        model.parse_size("lots")
    assert model.sweep(8, 1024, 4) == [8, 32, 128, 512, 1024]
    assert model.sweep(8, 8, 2) == [8]
    with pytest.raises(ValueError):
        model.sweep(16, 8, 2)
    assert model.format_size(64 << 20) == "64M" and model.format_size(1000) == "1000"


def test_counts_split_evenly_where_blocks_are_needed():
    assert model.count_for("allreduce", 8, 4, 3) == 2
    assert model.count_for("allgather", 40, 4, 3) == 9  # 10 elements, cut to a multiple of 3
    assert model.count_for("reduce_scatter", 4, 4, 5) == 5  # at least one element per rank


@pytest.mark.parametrize("ranks", [2, 3, 4, 8])
def test_bus_bandwidth_factors_match_nccl_tests(ranks):
    p = ranks
    assert model.bus_factor("allreduce", p) == pytest.approx(2 * (p - 1) / p)
    assert model.bus_factor("allgather", p) == pytest.approx((p - 1) / p)
    assert model.bus_factor("reduce_scatter", p) == pytest.approx((p - 1) / p)
    assert model.bus_factor("broadcast", p) == model.bus_factor("reduce", p) == 1
    # 1 GB all-reduced in one second on 4 ranks: algbw 1 GB/s, busbw 1.5 GB/s.
    assert model.busbw("allreduce", 10**9, 1.0, 4) == pytest.approx(1.5)
    assert model.algbw(10**9, 0.5) == pytest.approx(2.0)


def test_memory_traffic_model():
    s = 1 << 20
    # Two ranks: reduce half of both inputs (read S, write S/2), fetch the other half (S/2 + S/2).
    assert model.memory_traffic("allreduce", s, 2) == pytest.approx(2.5 * s)
    # Reduce: each rank's block of every input (S) into the root's result (S/p).
    assert model.memory_traffic("reduce", s, 4) == pytest.approx(s * 5 / 4)
    assert model.memory_traffic("broadcast", s, 5) == pytest.approx(1.6 * s)
    assert model.memory_traffic("allgather", s, 3) == 2 * s
    assert model.memory_traffic("reduce_scatter", s, 4) == pytest.approx(1.25 * s)
    assert model.memory_traffic("allreduce", s, 1) == 2 * s
    assert model.limit_seconds("allreduce", s, 2, 2.5 * s) == pytest.approx(1.0)


def test_expected_results_and_wrong_counts():
    dt = np.dtype(np.float32)
    want = data.expected("allreduce", 6, dt, 3, 0, "sum", 0)
    got = sum(data.rank_input("allreduce", 6, dt, r, "sum") for r in range(3))
    assert data.count_wrong(got, want, "sum") == 0
    got[2] += 1
    assert data.count_wrong(got, want, "sum") == 1
    rs = data.expected("reduce_scatter", 6, dt, 3, 1, "max", 0)
    assert rs.shape == (2,)
    ag = data.expected("allgather", 6, dt, 3, 2, "sum", 0)
    assert ag.tolist() == [0, 1, 1, 2, 2, 3]
    assert data.count_wrong(np.ones(3), np.ones(4), "sum") == 4


def test_tiny_sweep_writes_valid_json_and_csv(tmp_path):
    js, cs = tmp_path / "out.json", tmp_path / "out.csv"
    proc = run_mpi_module(2, ["-b", "8", "-e", "4K", "-f", "8", "-d", "float32,bfloat16", "-o", "sum,max",
                              "-a", "ring,tree", "-i", "both", "-w", "1", "-R", "2", "-n", "2",
                              "--json", str(js), "--csv", str(cs)])  # fmt: skip
    doc = json.loads(js.read_text())
    rows = doc["rows"]
    assert doc["meta"]["ranks"] == 2 and "mpi4py" in doc["meta"]["peers"]
    colls = {r["collective"] for r in rows}
    assert colls == {"allreduce", "broadcast", "reduce", "allgather", "reduce_scatter"}
    for r in rows:
        assert r["collex"]["wrong"] == 0, r
        assert r["collex"]["time_us"] > 0 and r["limit"]["time_us"] > 0
        mpi = r["peers"]["mpi4py"]
        # MPI has no bfloat16 reductions: shown as n/a, never as a number.
        if r["dtype"] == "bfloat16" and r["collective"] in ("allreduce", "reduce", "reduce_scatter"):
            assert mpi is None and r["speedup"]["mpi4py"] is None
        else:
            assert mpi["wrong"] == 0 and r["speedup"]["mpi4py"] > 0
    with open(cs) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    # One table on rank 0 only: each header printed once.
    assert proc.stdout.count("# allreduce  float32  op=sum  algo=ring  out-of-place") == 1


def test_symmetric_buffers_sweep(tmp_path):
    js = tmp_path / "sym.json"
    args = ["-b", "1K", "-e", "1M", "-f", "32", "-c", "allreduce,reduce_scatter", "-S", "-w", "1", "-R", "1"]
    proc = run_mpi_module(2, [*args, "-n", "2", "--peers", "mpi4py", "--json", str(js)])
    rows = json.loads(js.read_text())["rows"]
    assert rows and all(r["symmetric"] and r["collex"]["wrong"] == 0 for r in rows)
    assert "symmetric buffers" in proc.stdout


def test_breakdown_counts_the_memory_traffic_of_the_limit(tmp_path):
    """--breakdown's parts, counted inside the core, move exactly the least
    traffic per rank that the limit prices (symmetric buffers: no copies through
    the kernel); ordinary arrays kept off shared pages go through the kernel."""
    js = tmp_path / "parts.json"
    common = ["-b", "16M", "-e", "16M", "-w", "1", "-R", "1", "-n", "3", "--peers", "", "--breakdown"]
    proc = run_mpi_module(2, [*common, "-S", "--json", str(js)])
    rows = json.loads(js.read_text())["rows"]
    assert {r["collective"] for r in rows} == set(model.COLLECTIVES)
    for r in rows:
        assert r["collex"]["wrong"] == 0
        for b in r["collex"]["breakdown"]:
            parts = b["parts"]
            moved = sum(p["bytes"] for p in parts.values())
            assert moved == model.memory_traffic(r["collective"], r["bytes"], 2), (r["collective"], parts)
            assert parts["kernel copy"]["bytes"] == 0
            reduces = r["collective"] in ("allreduce", "reduce", "reduce_scatter")
            assert (parts["reduce"]["bytes"] > 0) == reduces, (r["collective"], parts)
            assert sum(p["us"] for p in parts.values()) <= b["wall_us"] * 1.01
    assert "rank 1:" in proc.stdout and "memory limit priced at" in proc.stdout

    js = tmp_path / "ordinary.json"
    run_mpi(2, "-m", "collex.bench", *common, "-c", "allreduce", "--json", str(js), timeout=180, module=True,
            env={"COLLEX_SHARE_PAGES": "0"})  # fmt: skip
    for b in json.loads(js.read_text())["rows"][0]["collex"]["breakdown"]:
        assert b["parts"]["kernel copy"]["bytes"] > 0 and b["parts"]["reduce"]["bytes"] > 0


def test_planted_wrong_result_is_reported(tmp_path):
    js = tmp_path / "out.json"
    args = ["-b", "64", "-e", "64", "-c", "allreduce,allgather", "-w", "1", "-R", "1", "-n", "1"]
    args += ["--peers", "", "--no-limit", "--plant-wrong", "--json", str(js)]
    proc = run_mpi_module(2, args, expect_rc=1)
    rows = json.loads(js.read_text())["rows"]
    assert all(r["collex"]["wrong"] == 1 for r in rows), rows
    assert "wrong elements" in proc.stderr


def run_mpi_module(n, args, expect_rc=0):
    return run_mpi(n, "-m", "collex.bench", *args, timeout=180, expect_rc=expect_rc, module=True)


def test_summary_takes_medians_over_runs():
    def doc(t, speedup, wrong=0):
        row = {"collective": "allreduce", "dtype": "float32", "op": "sum", "algo": "auto", "inplace": False,
               "bytes": 1024, "collex": {"time_us": t, "busbw": 1024 / t / 1e3, "wrong": wrong},
               "speedup": {"mpi4py": speedup}, "limit": {"fraction": 0.5}}  # fmt: skip
        return {"meta": {"peers": ["mpi4py"], "ranks": 2}, "rows": [row]}

    table = summarize.summarize([doc(10.0, 1.0), doc(30.0, 3.0), doc(20.0, 2.0, wrong=1)])
    last = table.splitlines()[-1]
    assert last.startswith("| allreduce | 1K | 20.0 |") and "| 2.00 |" in last and last.endswith("| 50 | 1 |")


def test_gradient_shape_files_match_the_published_models():
    from collex.bench.training import load_shapes

    for name, tensors, total in (("resnet50", 161, 25_557_032), ("bert_base", 199, 109_482_240)):
        shapes = load_shapes(name)
        assert len(shapes) == tensors and sum(int(np.prod(s)) for s in shapes) == total


def test_training_scenarios_run_and_check_every_variant(tmp_path):
    js = tmp_path / "t.json"
    args = ["--sets", "resnet50", "-R", "1", "--work", "1", "--json", str(js)]
    run_mpi(2, "-m", "collex.bench.training", *args, timeout=240, module=True)
    (row,) = json.loads(js.read_text())["results"]
    assert row["gradients"] == 161 and row["ranks"] == 2
    assert set(row["seconds"]) == set(row["wrong"]) and "reducer" in row["seconds"]
    assert all(w == 0 for w in row["wrong"].values()), row["wrong"]
    assert set(row["overlap"]) == {"compute_s", "exchange_s", "together_s", "hidden"}


def test_memory_draw_script_times_every_array():
    script = Path(__file__).resolve().parent.parent / "bench" / "memory_draw.py"
    for extra in ([], ["--huge-pages"]):
        out = subprocess.run(
            [sys.executable, str(script), "--arrays", "3", "--mib", "1", "--turns", "2", *extra],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert [line.split(":")[0] for line in out.splitlines()[:3]] == ["array 0", "array 1", "array 2"]
        assert re.fullmatch(r"slowest / fastest: \d+\.\d\d", out.splitlines()[-1])


def test_bucket_cost_script_times_every_way_and_checks_the_average():
    script = Path(__file__).resolve().parent.parent / "bench" / "bucket_cost.py"
    out = run_mpi(3, str(script), "--turns", "1", module=True, timeout=120).stdout
    ways = [line.split()[0] for line in out.splitlines() if "/ flat" in line]
    assert ways == ["flat", "6", "buckets", "buckets,", "reducer"], out
    assert "resnet50: 6 buckets, 97.5 MiB, 3 ranks" in out and out.splitlines()[-1] == "wrong: 0", out


@pytest.mark.parametrize("ranks", [2, 3])
def test_parallel_bench_runs_small_and_checks_its_results(ranks, tmp_path):
    pytest.importorskip("threadpoolctl", reason="the bench sets BLAS threads with threadpoolctl")
    out = tmp_path / "parallel.json"
    args = ["-R", "1", "--iters", "50", "--d-model", "48", "--hidden", "96", "--tokens", "2x6",
            "--pipe-width", "16", "--pipe-micro", "3", "--pipe-m", "4,6", "--zero-params", "4000",
            "--json", str(out)]  # fmt: skip
    proc = run_mpi(ranks, "-m", "collex.bench.parallel", *args, module=True, timeout=120)
    assert "results right" in proc.stdout, proc.stdout
    numbers = json.loads(out.read_text())
    assert numbers["mlp_results_ok"] and set(numbers["p2p_8B_us"]) == {"collex", "mpi4py"}
    assert numbers["pipeline_results_ok"] and numbers["zero_results_ok"]
    assert {r["schedule"] for r in numbers["pipeline"]} == {"gpipe", "1f1b", "interleaved", "zb1p"}
    assert [r["state_bytes"] for r in numbers["zero"]][1] < numbers["zero"][0]["state_bytes"]


RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def _expand(pattern):
    """Brace ({a,b}, {1..6}) and glob (*) expansion of a path named in the docs."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    choices = [str(i) for i in range(int(span[1]), int(span[2]) + 1)] if span else body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for choice in choices for p in _expand(head + choice + tail)]


def _named_files(pattern):
    return {f for p in _expand(pattern) for f in RESULTS.glob(p)}


def test_every_result_file_is_indexed_and_every_quoted_path_exists():
    index = (RESULTS / "README.md").read_text()
    indexed = set()
    for pattern in re.findall(r"`((?:latest|history)/[^`]+)`", index):
        named = _named_files(pattern)
        assert named, f"bench/results/README.md names {pattern}, which matches no file"
        indexed |= named
    for name in re.findall(r"`((?!latest|history)[\w.{},-]+)`", index):
        # a bare file name in the same row as its folder (e.g. `training-2ranks.png`)
        indexed |= {f for p in _expand(name) for f in RESULTS.rglob(p)}
    on_disk = {f for f in RESULTS.rglob("*") if f.is_file() and f.name != "README.md"}
    assert sorted(map(str, on_disk - indexed)) == []
    bench_readme = (RESULTS.parent / "README.md").read_text()
    for pattern in re.findall(r"results/((?:latest|history)/(?:[^\s`)|,;{}]|\{[^}]*\})+)", bench_readme):
        pattern = pattern.rstrip(".")
        # a set named without its extension (`…-run{1,2,3}`) stands for all its files
        named = _named_files(pattern) or _named_files(pattern + ".*")
        assert named, f"bench/README.md quotes results/{pattern}: no such file"
